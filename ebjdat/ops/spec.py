"""The ``torch`` backend's conventions: every op's specification (its family's ``spec.py``:
``sgld/spec.py``, ``pgd/spec.py``, ``mala/spec.py``) is readable eager torch built on these.

All arithmetic happens in fp32 (fp64 when x is fp64) with one rounding to x's dtype at
the end; python scalars are first rounded to that compute dtype, as the kernels do. Runs
on any device and any strides (the noise is indexed by logical position). A backend
function takes the op's schema arguments (registry.py) with ``layout`` for backend:
``grad_clip``, ``lo`` and ``hi`` are +-inf when unset; ``eps`` is None for no projection;
``state`` is a generator's int64 ``[seed, offset, done]`` tensor (None when no noise is
drawn); ``layout`` tells the GPU backends how memory maps to logical order (unused here).
"""
from __future__ import annotations

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def scalar(v: float, dtype: torch.dtype) -> float:
    """v rounded to the compute dtype, so that scalar math matches the kernels'."""
    return float(torch.tensor(v, dtype=dtype))


def clamp(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    # torch.clamp keeps NaN; with lo=-inf, hi=inf it is the identity
    return v.clamp(scalar(lo, v.dtype), scalar(hi, v.dtype))


def norms(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norms over all but dim 0, shaped to broadcast: (B, 1, ..., 1)."""
    b = v.shape[0]
    n = torch.linalg.vector_norm(v.reshape(b, -1), dim=1)
    return n.reshape((b,) + (1,) * (v.dim() - 1))


def per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped to broadcast over x's samples: (B, 1, ..., 1)."""
    return v.reshape((x.shape[0],) + (1,) * (x.dim() - 1))
