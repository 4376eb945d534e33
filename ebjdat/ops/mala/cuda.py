"""mala_propose and mala_accept through ebjdat._C (csrc/mala.cpp: mala_propose,
mala_accept on CUDA memory, mala_propose_host, mala_accept_host on CPU memory; conventions
in ebjdat/ops/cuda.py). Every tensor's element count and dtype go along: the entries check
them before touching memory. Signatures and math: mala/spec.py."""
from __future__ import annotations

from torch import get_num_threads

from .. import cuda
from ..cuda import DTYPE_CODE, NO_LAYOUT, layout_args

_C = None   # ebjdat._C once loaded: the host call reads a global, no function call


def _extension():
    global _C
    _C = cuda.extension()
    return _C


def mala_propose(x_prop, x, grad, state, step_size, layout=None):
    """x_prop <- x + step_size * grad + sqrt(2 step_size) * z."""
    c, h, w = NO_LAYOUT if layout is None else layout_args(layout)
    args = (x_prop.data_ptr(), x.data_ptr(), grad.data_ptr(), state.data_ptr(), x_prop.numel(), x.numel(),
            grad.numel(), state.numel(), DTYPE_CODE[x_prop.dtype], DTYPE_CODE[x.dtype], DTYPE_CODE[grad.dtype],
            step_size, c, h, w)
    if x_prop.is_cpu:
        (_C or _extension()).mala_propose_host(*args, get_num_threads())
    else:
        cuda.launch("mala_propose", x_prop, args)


def mala_accept(x, x_prop, energy, energy_prop, log_q_fwd, log_q_rev, accepted, state, layout=None):
    """The per-sample Metropolis decisions; accepted rows of x from x_prop."""
    samples = (energy, energy_prop, log_q_fwd, log_q_rev)
    args = (x.data_ptr(), x_prop.data_ptr(), *(t.data_ptr() for t in samples), accepted.data_ptr(),
            state.data_ptr(), x.numel(), x_prop.numel(), x.shape[0], *(t.numel() for t in samples),
            accepted.numel(), state.numel(), DTYPE_CODE[x.dtype], DTYPE_CODE[x_prop.dtype],
            *(DTYPE_CODE[t.dtype] for t in samples))
    if x.is_cpu:
        (_C or _extension()).mala_accept_host(*args)
    else:
        cuda.launch("mala_accept", x, args)
