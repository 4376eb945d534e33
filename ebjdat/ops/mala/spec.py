"""mala_propose's and mala_accept's specification (the ``torch`` backend; conventions in
ebjdat/ops/spec.py)."""
from __future__ import annotations

import math

import torch

from .. import philox
from ..spec import compute_dtype, per_sample, scalar


def mala_propose(x_prop, x, grad, state, step_size, layout=None):
    """x_prop <- x + step_size * grad + sqrt(2 step_size) * z: sgld_step's arithmetic (no
    clip, no clamp) with noise_std = sqrt(2 step_size), computed in double, then rounded.

    The inputs' autograd state is ignored: a grad (or any other input) that requires grad,
    e.g. from ``torch.func.grad`` or ``create_graph=True``, is read as a constant (detached),
    so the update never records autograd history into the target, as on every backend."""
    c = compute_dtype(x_prop)
    x, grad = x.detach(), grad.detach()
    v = x.to(c) + scalar(step_size, c) * grad.to(c)
    v = v + scalar(math.sqrt(2.0 * step_size), c) * philox.normal(state, x.shape).to(c)
    philox.advance_(state, philox.counters_for(x.numel()))
    x_prop.copy_(v)


def mala_accept(x, x_prop, energy, energy_prop, log_q_fwd, log_q_rev, accepted, state, layout=None):
    """accepted[b] = log(u_b) < (energy - energy_prop) + (log_q_rev - log_q_fwd), the
    difference in the per-sample compute dtype, the comparison in fp64; accepted rows of x
    take x_prop's.

    The inputs' autograd state is ignored: a grad (or any other input) that requires grad,
    e.g. from ``torch.func.grad`` or ``create_graph=True``, is read as a constant (detached),
    so the update never records autograd history into the target, as on every backend."""
    b = x.shape[0]
    x_prop, energy, energy_prop = x_prop.detach(), energy.detach(), energy_prop.detach()
    log_q_fwd, log_q_rev = log_q_fwd.detach(), log_q_rev.detach()
    p = compute_dtype(energy)
    a = (energy.to(p) - energy_prop.to(p)) + (log_q_rev.to(p) - log_q_fwd.to(p))
    take = torch.log(philox.uniforms(state, b).double()) < a.double()
    philox.advance_(state, philox.counters_for(b))
    accepted.copy_(take)
    x.copy_(torch.where(per_sample(take, x), x_prop, x))
