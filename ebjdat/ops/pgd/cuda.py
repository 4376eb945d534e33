"""pgd_step and pgd_init through ebjdat._C (csrc/pgd.cpp: pgd_step, pgd_init on CUDA
memory, pgd_step_host, pgd_init_host on CPU memory; conventions in ebjdat/ops/cuda.py).
Signatures and math: pgd/spec.py."""
from __future__ import annotations

import functools

import torch

from torch import get_num_threads

from .. import cuda
from ..cuda import DTYPE_CODE, batch, layout_args

_C = None   # ebjdat._C once loaded: the host call reads a global, no function call


def _extension():
    global _C
    _C = cuda.extension()
    return _C


def pgd_step(x, grad, x_orig, alpha, eps, norm, lo, hi, layout=None):
    """One PGD step (linf: sign step; l2: normalised step), projected onto the eps-ball."""
    l2 = norm == "l2"   # the batch matters to l2 alone (per-sample norms)
    args = (x.data_ptr(), grad.data_ptr(), x_orig.data_ptr(), x.numel(), grad.numel(), x_orig.numel(),
            batch(x) if l2 else 1, DTYPE_CODE[x.dtype], DTYPE_CODE[grad.dtype], alpha, eps is not None,
            0.0 if eps is None else eps, l2, lo, hi)
    if x.is_cpu:
        (_C or _extension()).pgd_step_host(*args, get_num_threads())
    else:
        _launch("pgd_step", x, args, l2)


def pgd_init(x, x_orig, state, eps, norm, lo, hi, layout=None):
    """Random start around x_orig (uniform box for linf, scaled normal for l2), clamped."""
    l2 = norm == "l2"
    args = (x.data_ptr(), x_orig.data_ptr(), state.data_ptr(), x.numel(), x_orig.numel(), state.numel(),
            batch(x) if l2 else 1, DTYPE_CODE[x.dtype], eps, l2, lo, hi, *layout_args(layout))
    if x.is_cpu:
        (_C or _extension()).pgd_init_host(*args, get_num_threads())
    else:
        _launch("pgd_init", x, args, l2)


def _launch(name: str, x: torch.Tensor, args: tuple, l2: bool) -> None:
    """Launch ``_C.<name>`` with the l2 plan's scratch appended to ``args`` (a few large
    samples sum their chunks there; 0, 0 when not needed)."""
    scratch = _l2_scratch(x) if l2 else None
    cuda.launch(name, x, (*args, 0 if scratch is None else scratch.data_ptr(),
                          0 if scratch is None else scratch.numel()))


def _l2_scratch(x: torch.Tensor) -> torch.Tensor | None:
    """The chunk sums of the device l2 step (3 per chunk, x's compute type; the l2 start
    uses one per chunk of the same plan), or None when each sample is one chunk. From
    torch's caching allocator, so CUDA graphs capture it."""
    count = _scratch_count(x.numel(), batch(x), DTYPE_CODE[x.dtype])
    if not count:
        return None
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.empty(count, dtype=dtype, device=x.device)


@functools.lru_cache(maxsize=256)
def _scratch_count(n: int, samples: int, dtype_code: int) -> int:
    return cuda.extension().pgd_l2_scratch(n, samples, dtype_code)
