"""The ``torch`` backend: the specification of every op, in readable eager torch.

All arithmetic happens in fp32 (fp64 when x is fp64) with one rounding to x's dtype at
the end; python scalars are first rounded to that compute dtype, as the kernels do.
Runs on any device and any strides (the noise is indexed by logical position).
Signature shared by every backend (arguments already checked by ``ebjdat.ops``):

* ``sgld_step(x, grad, state, step_size, noise_std, grad_clip, lo, hi, layout)``
* ``pgd_step(x, grad, x_orig, alpha, eps, norm, lo, hi, layout)``
* ``pgd_init(x, x_orig, state, eps, norm, lo, hi, layout)``

``grad_clip``, ``lo`` and ``hi`` are +-inf when unset; ``eps`` is None for no projection;
``state`` is a generator's int64 ``[seed, offset, done]`` tensor (None when no noise is
drawn); ``layout`` tells the GPU backends how memory maps to logical order (unused here).
"""
from __future__ import annotations

import torch

from . import philox

ANY_LAYOUT = True  # indexes noise logically, so any strides run as they are


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _scalar(v: float, dtype: torch.dtype) -> float:
    """v rounded to the compute dtype, so that scalar math matches the kernels'."""
    return float(torch.tensor(v, dtype=dtype))


def _clamp(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    # torch.clamp keeps NaN; with lo=-inf, hi=inf it is the identity
    return v.clamp(_scalar(lo, v.dtype), _scalar(hi, v.dtype))


def _norms(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norms over all but dim 0, shaped to broadcast: (B, 1, ..., 1)."""
    b = v.shape[0]
    n = torch.linalg.vector_norm(v.reshape(b, -1), dim=1)
    return n.reshape((b,) + (1,) * (v.dim() - 1))


def sgld_step(x, grad, state, step_size, noise_std, grad_clip, lo, hi, layout=None):
    """x <- clamp(x + step_size * clamp(grad, -grad_clip, grad_clip) + noise_std * z, lo, hi)."""
    c = compute_dtype(x)
    g = grad.to(c)
    if grad_clip != float("inf"):
        g = g.clamp(-_scalar(grad_clip, c), _scalar(grad_clip, c))
    v = x.to(c) + _scalar(step_size, c) * g
    if noise_std > 0:
        v = v + _scalar(noise_std, c) * philox.normal(state, x.shape).to(c)
        state[1] += philox.counters_for(x.numel())
    x.copy_(_clamp(v, lo, hi))


def pgd_step(x, grad, x_orig, alpha, eps, norm, lo, hi, layout=None):
    """One PGD ascent step along grad, projected onto the eps-ball around x_orig, clamped.

    linf: v = x + alpha * sign(grad); v = x_orig + clamp(v - x_orig, -eps, eps).
    l2 (per sample): v = x + alpha * grad / (||grad|| + 1e-10); d = v - x_orig;
    v = x_orig + d * (1 if ||d|| <= eps else eps / ||d||).  Then v = clamp(v, lo, hi).
    """
    c = compute_dtype(x)
    g = grad.to(c)
    xo = x_orig.to(c)
    if norm == "linf":
        v = x.to(c) + _scalar(alpha, c) * torch.sign(g)
        if eps is not None:
            v = xo + (v - xo).clamp(-_scalar(eps, c), _scalar(eps, c))
    else:
        v = x.to(c) + _scalar(alpha, c) * (g / (_norms(g) + _scalar(1e-10, c)))
        if eps is not None:
            d = v - xo
            dn = _norms(d)
            e = _scalar(eps, c)
            v = xo + d * torch.where(dn <= e, torch.ones_like(dn), e / dn)
    x.copy_(_clamp(v, lo, hi))


def pgd_init(x, x_orig, state, eps, norm, lo, hi, layout=None):
    """Random start around x_orig, clamped to [lo, hi].

    linf: x = x_orig + eps * (2 u - 1), u the elements' uniforms (philox.py).
    l2 (torchattacks' PGDL2 convention): z = N(0, I) per sample from the elements' normals,
    radius u the sample's radius (philox.radii); x = x_orig + z * (u / ||z|| * eps).
    """
    c = compute_dtype(x)
    n = x.numel()
    e = _scalar(eps, c)
    if norm == "linf":
        u = philox.uniforms(state, n).reshape(x.shape).to(c)
        v = x_orig.to(c) + e * (u * 2.0 - 1.0)
        state[1] += philox.counters_for(n)
    else:
        z = philox.normal(state, x.shape).to(c)
        b = x.shape[0]
        radius = philox.radii(state, n, b).to(c)
        scale = (radius.reshape((b,) + (1,) * (x.dim() - 1)) / _norms(z)) * e
        v = x_orig.to(c) + z * scale
        state[1] += philox.counters_for(n) + b
    x.copy_(_clamp(v, lo, hi))
