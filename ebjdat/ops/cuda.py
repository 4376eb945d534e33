"""The ``cuda`` and ``cpu`` backends: the extension ``ebjdat._C`` (built from csrc/ and kernels/; its op
entries are CPython fastcall functions, csrc/fastcall.h). This module loads it and holds
what every op family's ``cuda.py`` shares; those launch their op's entries.

Same functions, signatures and results as the families' ``spec.py``. Tensors cross into
C++ as data pointers, element counts and dtype codes, so the extension never links torch.
``library.py`` hands over dense tensors sharing one layout: contiguous (``layout is
None``) or channels_last 4-D (``layout == (C, H, W)``); the kernels update memory in
order and index the Philox counters by logical (row-major NCHW) position.

* CUDA tensors: kernels launched on x's device's current stream; nothing synchronises
  and the only allocation (the l2 chunk sums) comes from torch's caching allocator, so
  the ops are safe in CUDA-graph capture. The generator state ``[seed, offset, done]``
  is read and advanced on the device.
* CPU tensors (the ``cpu`` backend, and ``cuda`` given CPU tensors): the ``*_host`` entry
  points run the same element functions and Philox stream in C++ loops, vectorised (the
  normals a block of counters at a time, csrc/cpu_noise.cpp, in a copy for this CPU's
  instruction set chosen at load time) and split over ``torch.get_num_threads()`` threads
  of the extension's own pool (csrc/cpu_threads.cpp) from 2**16 elements on; the results
  do not depend on the thread count. They need only a C++ compiler to build.

Exactness (checked in tests): sgld without noise, pgd linf, pgd_init linf and mala_accept
equal the specification bit for bit; noise within ``philox.NOISE_ATOL``; l2 within float
rounding of the reduction order.
"""
from __future__ import annotations

import importlib

import torch

DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_BUILD_HINT = ("rebuild ebjdat from its checkout with `pip install -e .`, with a C++ compiler "
               "(g++ or clang++) and cmake for the cpu backend, and the CUDA toolkit's nvcc on PATH "
               "(or CUDA_HOME) for the cuda backend's kernels")

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


def cpu_simd_level() -> str:
    """The vector instructions the host loops use on this CPU ("avx512", "avx2" or
    "baseline"), chosen when ebjdat._C loads; "" when it does not load."""
    ext = _load()
    return ext.cpu_simd_level() if ext is not None else ""


def has_device_code() -> bool:
    """True when ``ebjdat._C`` imports and carries the CUDA kernels."""
    ext = _load()
    return ext is not None and bool(ext.has_device_code())


def extension():
    """The module ebjdat._C; RuntimeError saying why when it does not load."""
    ext = _ext or _load()
    if ext is None:
        raise RuntimeError(f"the cuda backend is not available: {_error}")
    return ext


def launch(name: str, x: torch.Tensor, args: tuple) -> None:
    """Launch ``_C.<name>`` on x's CUDA device, on that device's current stream: the raw
    ``cudaStream_t`` from ``torch._C._cuda_getCurrentRawStream``, as torch.compile's
    generated code takes it (``torch.cuda.current_stream`` builds a Python Stream object
    on every call)."""
    if not x.is_cuda:
        raise RuntimeError(f"the cuda backend does not run on {x.device.type} tensors")
    ext = _ext or extension()
    if not ext.has_device_code():
        raise RuntimeError("ebjdat._C was built without device code; " + _BUILD_HINT)
    index = x.get_device()
    getattr(ext, name)(*args, index, torch._C._cuda_getCurrentRawStream(index))


NO_LAYOUT = (0, 0, 0)   # the (C, H, W) arguments of contiguous memory


def layout_args(layout) -> tuple[int, int, int]:
    """The (C, H, W) arguments of a layout: NO_LAYOUT for contiguous memory (None)."""
    return NO_LAYOUT if layout is None else tuple(int(v) for v in layout)


def batch(x: torch.Tensor) -> int:
    """x's samples (dim 0); 1 for a 0-dim x."""
    return x.shape[0] if x.dim() > 0 else 1
