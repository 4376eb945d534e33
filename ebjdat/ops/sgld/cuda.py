"""sgld_step through ebjdat._C (csrc/sgld.cpp: sgld_step on CUDA memory, sgld_step_host
on CPU memory; conventions in ebjdat/ops/cuda.py). Signature and math: sgld/spec.py."""
from __future__ import annotations

from torch import get_num_threads

from .. import cuda
from ..cuda import DTYPE_CODE, NO_LAYOUT, layout_args

_C = None   # ebjdat._C once loaded: the host call reads a global, no function call


def _extension():
    global _C
    _C = cuda.extension()
    return _C


# The scalars arrive as Python floats (ops.checks returns floats; the dispatcher passes
# floats): the fastcall entries read them as doubles (csrc/fastcall.h).
def sgld_step(x, grad, state, step_size, noise_std, grad_clip, lo, hi, layout=None):
    """x <- clamp(x + step_size * clamp(grad, -grad_clip, grad_clip) + noise_std * z, lo, hi)."""
    c, h, w = NO_LAYOUT if layout is None else layout_args(layout)   # no call on the common path
    noisy = noise_std > 0
    args = (x.data_ptr(), grad.data_ptr(), state.data_ptr() if noisy else 0, x.numel(), grad.numel(),
            state.numel() if noisy else 0, DTYPE_CODE[x.dtype], DTYPE_CODE[grad.dtype], step_size, noise_std,
            grad_clip, lo, hi, c, h, w)
    if x.is_cpu:   # the host loop: the cpu backend (and the cuda backend given CPU tensors)
        (_C or _extension()).sgld_step_host(*args, get_num_threads())
    else:
        cuda.launch("sgld_step", x, args)
