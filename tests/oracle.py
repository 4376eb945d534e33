"""float64 evaluations of the ops' formulas (docs/ops.md, ebjdat/ops/spec.py): the
independent check of every backend.

Scalars are rounded to the op's compute dtype first (fp32 unless x is fp64), as the
specification says; everything else is evaluated in float64.
"""
import torch

from ebjdat.ops import philox


def _s(v, like):
    ct = torch.float64 if like.dtype == torch.float64 else torch.float32
    return float(torch.tensor(v, dtype=ct))


def _clamp(v, lo, hi, like):
    return v.clamp(_s(lo, like), _s(hi, like))


def _norm(v):
    b = v.shape[0]
    return v.reshape(b, -1).pow(2).sum(1).sqrt().reshape((b,) + (1,) * (v.dim() - 1))


def noise(seed, offset, shape):
    """The Philox normals a call at (seed, offset) draws, in float64."""
    state = torch.tensor([seed, offset, 0], dtype=torch.int64)
    return philox.normal(state, torch.Size(shape)).double()


def sgld(x, g, *, step_size, noise_std=0.0, grad_clip=None, clamp=None, z=None):
    v = g.double()
    if grad_clip is not None:
        v = v.clamp(-_s(grad_clip, x), _s(grad_clip, x))
    v = x.double() + _s(step_size, x) * v
    if noise_std:
        v = v + _s(noise_std, x) * z
    if clamp is not None:
        v = _clamp(v, *clamp, x)
    return v


def pgd_step(x, g, xo, *, alpha, eps, norm, clamp):
    x64, g64, xo64 = x.double(), g.double(), xo.double()
    if norm == "linf":
        v = x64 + _s(alpha, x) * torch.sign(g64)
        if eps is not None:
            v = xo64 + (v - xo64).clamp(-_s(eps, x), _s(eps, x))
    else:
        v = x64 + _s(alpha, x) * g64 / (_norm(g64) + _s(1e-10, x))
        if eps is not None:
            d = v - xo64
            dn = _norm(d)
            v = xo64 + d * torch.where(dn <= _s(eps, x), torch.ones_like(dn), _s(eps, x) / dn)
    return _clamp(v, *clamp, x) if clamp is not None else v


def pgd_init(xo, *, eps, norm, clamp, seed, offset):
    state = torch.tensor([seed, offset, 0], dtype=torch.int64)
    n, e = xo.numel(), _s(eps, xo)
    if norm == "linf":
        v = xo.double() + e * (philox.uniforms(state, n).double().reshape(xo.shape) * 2 - 1)
    else:
        z = philox.normals(state, n).double().reshape(xo.shape)
        b = xo.shape[0]
        r = philox.radii(state, n, b).double().reshape((b,) + (1,) * (xo.dim() - 1))
        v = xo.double() + z * (r / _norm(z) * e)
    return _clamp(v, *clamp, xo) if clamp is not None else v
