"""pgd_step's and pgd_init's specification (the ``torch`` backend; conventions in
ebjdat/ops/spec.py)."""
from __future__ import annotations

import torch

from .. import philox
from ..spec import clamp, compute_dtype, norms, scalar


def pgd_step(x, grad, x_orig, alpha, eps, norm, lo, hi, layout=None):
    """One PGD ascent step along grad, projected onto the eps-ball around x_orig, clamped.

    linf: v = x + alpha * sign(grad); v = x_orig + clamp(v - x_orig, -eps, eps).
    l2 (per sample): v = x + alpha * grad / (||grad|| + 1e-10); d = v - x_orig;
    v = x_orig + d * (1 if ||d|| <= eps else eps / ||d||).  Then v = clamp(v, lo, hi).

    The inputs' autograd state is ignored: a grad (or any other input) that requires grad,
    e.g. from ``torch.func.grad`` or ``create_graph=True``, is read as a constant (detached),
    so the update never records autograd history into the target, as on every backend."""
    c = compute_dtype(x)
    g = grad.detach().to(c)
    xo = x_orig.detach().to(c)
    if norm == "linf":
        v = x.to(c) + scalar(alpha, c) * torch.sign(g)
        if eps is not None:
            v = xo + (v - xo).clamp(-scalar(eps, c), scalar(eps, c))
    else:
        v = x.to(c) + scalar(alpha, c) * (g / (norms(g) + scalar(1e-10, c)))
        if eps is not None:
            d = v - xo
            dn = norms(d)
            e = scalar(eps, c)
            v = xo + d * torch.where(dn <= e, torch.ones_like(dn), e / dn)
    x.copy_(clamp(v, lo, hi))


def pgd_init(x, x_orig, state, eps, norm, lo, hi, layout=None):
    """Random start around x_orig, clamped to [lo, hi].

    linf: x = x_orig + eps * (2 u - 1), u the elements' uniforms (philox.py).
    l2 (torchattacks' PGDL2 convention): z = N(0, I) per sample from the elements' normals,
    radius u the sample's radius (philox.radii); x = x_orig + z * (u / ||z|| * eps).

    The inputs' autograd state is ignored: a grad (or any other input) that requires grad,
    e.g. from ``torch.func.grad`` or ``create_graph=True``, is read as a constant (detached),
    so the update never records autograd history into the target, as on every backend."""
    c = compute_dtype(x)
    x_orig = x_orig.detach()
    n = x.numel()
    e = scalar(eps, c)
    if norm == "linf":
        u = philox.uniforms(state, n).reshape(x.shape).to(c)
        v = x_orig.to(c) + e * (u * 2.0 - 1.0)
        philox.advance_(state, philox.counters_for(n))
    else:
        z = philox.normal(state, x.shape).to(c)
        b = x.shape[0]
        radius = philox.radii(state, n, b).to(c)
        scale = (radius.reshape((b,) + (1,) * (x.dim() - 1)) / norms(z)) * e
        v = x_orig.to(c) + z * scale
        philox.advance_(state, philox.counters_for(n) + b)
    x.copy_(clamp(v, lo, hi))
