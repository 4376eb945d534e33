"""mala_propose_ and mala_accept_: the two halves of a Metropolis-adjusted Langevin (MALA)
step around the caller's energy evaluations (spec.py, triton.py, cuda.py; csrc/mala.cpp,
kernels/mala.cu and .cuh). ebjdat.sampling.MALA runs them as a sampler.

A MALA step for an energy E (target density p proportional to exp(-E)), step h:
``x' = x - h dE/dx(x) + sqrt(2h) z`` (mala_propose_); then, with
``log q(b | a) = -||b - a + h dE/dx(a)||^2 / (4h)``, x' is accepted with probability
``min(1, p(x') q(x | x') / (p(x) q(x' | x)))`` (mala_accept_).
"""
from __future__ import annotations

import math

import torch

from ..registry import BenchCase, Generator, Like, Mask, Op, PerSample, Real, Target, Variant

PROPOSE_DOC = """The Langevin proposal of a MALA step: ``x_prop <- x + step_size * grad + sqrt(2 * step_size) * z``.

x_prop: (*) float tensor, written (its values are not read; it may be x itself). x: (*)
x_prop's dtype, the chains' states. grad: (*) any float dtype, the drift: for an energy E
(target density proportional to exp(-E)), ``grad = -dE/dx`` at x. ``z ~ N(0, I)`` from
``generator`` (the device's default one when None): sgld_step_'s Philox normals, so this
equals ``x_prop.copy_(x)`` then ``sgld_step_(x_prop, grad, step_size=step_size,
noise_std=sqrt(2 * step_size))``, bit for bit; the generator advances by
``ceil(x.numel() / 4)`` counters. The proposal's log density, per sample and up to a
constant, is ``log q(x_prop | x) = -||x_prop - x - step_size * grad||^2 / (4 * step_size)``.
Computed in fp32 (fp64 for fp64 x), rounded once to x_prop's dtype. Returns x_prop.
"""

ACCEPT_DOC = """The Metropolis-Hastings accept/reject of a MALA step, in place: per sample b,
``x[b] <- x_prop[b]`` where ``log(u_b) < a_b`` with
``a_b = (energy[b] - energy_prop[b]) + (log_q_rev[b] - log_q_fwd[b])``, the log of
``p(x') q(x | x') / (p(x) q(x' | x))`` for the target ``p`` proportional to ``exp(-E)``.

x, x_prop: (B, *) one float dtype: the chains' states and their proposals. energy,
energy_prop: (B,) E(x) and E(x_prop); log_q_fwd: (B,) log q(x_prop | x); log_q_rev: (B,)
log q(x | x_prop) (constants common to both may be left out); the four share one float
dtype, any. accepted: (B,) bool, written: whether sample b took its proposal
(``accepted.float().mean()`` is the step's acceptance rate). ``u_b ~ U(0, 1)`` is the
Philox uniform of element b of a call of B elements (ops/philox.py) from ``generator``
(the device's default one when None), which advances by ``ceil(B / 4)`` counters. a_b is
computed in fp32 (fp64 for fp64 per-sample tensors) and compared with log(u_b) in fp64; a
NaN a_b rejects. Accepted rows are copied exactly, rejected ones left untouched. Returns x.
"""


def plain_propose(x_prop, x, grad, *, step_size):
    x_prop.copy_(x).add_(grad, alpha=step_size).add_(torch.randn_like(x), alpha=math.sqrt(2 * step_size))


def plain_accept(x, x_prop, energy, energy_prop, log_q_fwd, log_q_rev, accepted):
    take = torch.rand_like(energy).log_() < (energy - energy_prop) + (log_q_rev - log_q_fwd)
    accepted.copy_(take)
    x.copy_(torch.where(take.view(-1, *[1] * (x.dim() - 1)), x_prop, x))


OPS = (
    Op("mala_propose", package=__name__, doc=PROPOSE_DOC,
       args=(Target("x_prop", reads=False), Like("x", same_dtype=True, fill="uniform"), Like("grad"),
             Real("step_size"), Generator()),
       bench=(BenchCase("mala_propose", dict(step_size=0.01), plain_propose),),
       variants=(Variant("mala_propose", dict(step_size=0.01), layouts=True),),
       cuda_flags=((2, "channels_last", ""),)),
    Op("mala_accept", package=__name__, doc=ACCEPT_DOC, per_sample=True,
       args=(Target("x", reads=False), Like("x_prop", same_dtype=True, fill="uniform"), PerSample("energy"),
             PerSample("energy_prop"), PerSample("log_q_fwd"), PerSample("log_q_rev"), Mask("accepted"),
             Generator()),
       bench=(BenchCase("mala_accept", {}, plain_accept),),
       variants=(Variant("mala_accept", {}, per_sample=True),)),
)
