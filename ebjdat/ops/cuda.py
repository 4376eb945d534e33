"""The ``cuda`` backend: the extension ``ebjdat._C`` (built from csrc/ and kernels/; its op
entries are CPython fastcall functions, csrc/fastcall.h).

Same three functions, signatures and results as ``spec.py``. Tensors cross into C++
as data pointers, element counts and dtype codes, so the extension never links torch.
``library.py`` hands over dense tensors sharing one layout: contiguous (``layout is
None``) or channels_last 4-D (``layout == (C, H, W)``); the kernels update memory in
order and index the Philox counters by logical (row-major NCHW) position.

* CUDA tensors: kernels launched on x's device's current stream; nothing synchronises
  and the only allocation (the l2 chunk sums) comes from torch's caching allocator, so
  the ops are safe in CUDA-graph capture. The generator state ``[seed, offset, done]``
  is read and advanced on the device.
* CPU tensors: the ``*_host`` entry points run the same element functions and Philox
  stream in a C++ loop, which is how the CUDA arithmetic is tested without a GPU.

Exactness (checked in tests): sgld without noise, pgd linf and pgd_init linf equal the
reference bit for bit; noise within ``philox.NOISE_ATOL``; l2 within float rounding of the
reduction order.
"""
from __future__ import annotations

import functools
import importlib

import torch

ANY_LAYOUT = False  # dense contiguous / channels_last only; library.py copies the rest

_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_BUILD_HINT = ("install the CUDA toolkit so that `nvcc` is on PATH (or set CUDA_HOME), "
               "then rebuild ebjdat from its checkout with `pip install -e .`")

_ext = None
_error: str | None = None
_loaded = False


def _load():
    """Import ebjdat._C once; remember why it failed."""
    global _ext, _error, _loaded
    if not _loaded:
        _loaded = True
        try:
            _ext = importlib.import_module("ebjdat._C")
        except ImportError as e:
            _error = f"the extension ebjdat._C is not built or does not load ({e}); {_BUILD_HINT}"
    return _ext


def load_error() -> str | None:
    """None when ``ebjdat._C`` imports, else what is wrong and how to build it."""
    _load()
    return _error


def has_device_code() -> bool:
    """True when ``ebjdat._C`` imports and carries the CUDA kernels."""
    ext = _load()
    return ext is not None and bool(ext.has_device_code())


def _ext_or_raise():
    ext = _load()
    if ext is None:
        raise RuntimeError(f"the cuda backend is not available: {_error}")
    return ext


def _launch(name: str, x: torch.Tensor, args: tuple) -> None:
    """Launch ``_C.<name>`` on x's CUDA device, on that device's current stream: the raw
    ``cudaStream_t`` from ``torch._C._cuda_getCurrentRawStream``, as torch.compile's
    generated code takes it (``torch.cuda.current_stream`` builds a Python Stream object
    on every call)."""
    if not x.is_cuda:
        raise RuntimeError(f"the cuda backend does not run on {x.device.type} tensors")
    ext = _ext or _ext_or_raise()
    if not ext.has_device_code():
        raise RuntimeError("ebjdat._C was built without device code; " + _BUILD_HINT)
    index = x.get_device()
    getattr(ext, name)(*args, index, torch._C._cuda_getCurrentRawStream(index))


_NO_LAYOUT = (0, 0, 0)   # the (C, H, W) arguments of contiguous memory


def _layout_args(layout) -> tuple[int, int, int]:
    """The (C, H, W) arguments of a layout: _NO_LAYOUT for contiguous memory (None)."""
    return _NO_LAYOUT if layout is None else tuple(int(v) for v in layout)


def _batch(x: torch.Tensor) -> int:
    return x.shape[0] if x.dim() > 0 else 1


# The scalars arrive as Python floats (ops.checks returns floats; the dispatcher passes
# floats): the fastcall entries read them as doubles (csrc/fastcall.h).
def sgld_step(x, grad, state, step_size, noise_std, grad_clip, lo, hi, layout=None):
    """x <- clamp(x + step_size * clamp(grad, -grad_clip, grad_clip) + noise_std * z, lo, hi)."""
    c, h, w = _NO_LAYOUT if layout is None else _layout_args(layout)   # no call on the common path
    args = (x.data_ptr(), grad.data_ptr(), state.data_ptr() if noise_std > 0 else 0, x.numel(),
            _DTYPE_CODE[x.dtype], _DTYPE_CODE[grad.dtype], step_size, noise_std, grad_clip, lo, hi, c, h, w)
    if x.is_cpu:   # the host loop (how the CUDA arithmetic is tested without a GPU)
        (_ext or _ext_or_raise()).sgld_step_host(*args)
    else:
        _launch("sgld_step", x, args)


def pgd_step(x, grad, x_orig, alpha, eps, norm, lo, hi, layout=None):
    """One PGD step (linf: sign step; l2: normalised step), projected onto the eps-ball."""
    l2 = norm == "l2"   # the batch matters to l2 alone (per-sample norms)
    args = (x.data_ptr(), grad.data_ptr(), x_orig.data_ptr(), x.numel(), _batch(x) if l2 else 1,
            _DTYPE_CODE[x.dtype], _DTYPE_CODE[grad.dtype], alpha, eps is not None,
            0.0 if eps is None else eps, l2, lo, hi)
    if x.is_cpu:
        (_ext or _ext_or_raise()).pgd_step_host(*args)
    else:
        _launch_pgd("pgd_step", x, args, l2)


def _launch_pgd(name: str, x: torch.Tensor, args: tuple, l2: bool) -> None:
    """Launch ``_C.<name>`` with the l2 plan's scratch appended to ``args`` (a few large
    samples sum their chunks there; 0, 0 when not needed)."""
    scratch = _l2_scratch(x) if l2 else None
    _launch(name, x, (*args, 0 if scratch is None else scratch.data_ptr(),
                      0 if scratch is None else scratch.numel()))


def _l2_scratch(x: torch.Tensor) -> torch.Tensor | None:
    """The chunk sums of the device l2 step (3 per chunk, x's compute type; the l2 start
    uses one per chunk of the same plan), or None when each sample is one chunk. From
    torch's caching allocator, so CUDA graphs capture it."""
    count = _scratch_count(x.numel(), _batch(x), _DTYPE_CODE[x.dtype])
    if not count:
        return None
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.empty(count, dtype=dtype, device=x.device)


@functools.lru_cache(maxsize=256)
def _scratch_count(n: int, batch: int, dtype_code: int) -> int:
    return _ext_or_raise().pgd_l2_scratch(n, batch, dtype_code)


def pgd_init(x, x_orig, state, eps, norm, lo, hi, layout=None):
    """Random start around x_orig (uniform box for linf, scaled normal for l2), clamped."""
    l2 = norm == "l2"
    args = (x.data_ptr(), x_orig.data_ptr(), state.data_ptr(), x.numel(), _batch(x) if l2 else 1,
            _DTYPE_CODE[x.dtype], eps, l2, lo, hi, *_layout_args(layout))
    if x.is_cpu:
        (_ext or _ext_or_raise()).pgd_init_host(*args)
    else:
        _launch_pgd("pgd_init", x, args, l2)
