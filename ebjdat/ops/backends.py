"""Backend registry: which implementation of the ops runs, chosen globally or per block."""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import warnings
from types import SimpleNamespace

import torch

from . import registry
from .interpreter import interpreting

NAMES = ("auto", "torch", "triton", "cuda", "cpu")
_current = "auto"


# Each family's module of a backend. cpu shares the family's cuda.py: its functions launch
# the ebjdat._C entry of x's device, the CUDA kernel or the host loop (csrc/<family>.cpp),
# so a new op needs no file for the cpu backend; _decide keeps each backend on its device.
MODULES = {"torch": "spec", "triton": "triton", "cuda": "cuda", "cpu": "cuda"}


@functools.cache
def table(name: str) -> SimpleNamespace:
    """Backend ``name`` ("torch", "triton", "cuda" or "cpu"): ``getattr(table(name), op.name)`` is
    its function of every registered op (from the op family's module, ``MODULES``), and
    ``ANY_LAYOUT`` says whether those take any strides (the torch specification) or dense
    memory only (library.py copies the rest)."""
    fns = {op.name: getattr(importlib.import_module(f"{op.package}.{MODULES[name]}"), op.name)
           for op in registry.ops()}
    return SimpleNamespace(name=name, ANY_LAYOUT=name == "torch", **fns)


@functools.cache
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_status() -> str | None:
    """None when the triton backend can run here, else the reason it cannot."""
    if not _has_triton():
        return "triton is not installed (pip install triton)"
    if not (torch.cuda.is_available() or interpreting()):
        return "the triton backend needs a CUDA GPU, or TRITON_INTERPRET=1 for CPU tensors"
    return None


def cuda_status() -> str | None:
    """None when ebjdat._C is importable (host path at least), else the reason."""
    from . import cuda
    return cuda.load_error()


def cpu_status() -> str | None:
    """None when the cpu backend (ebjdat._C's vectorised host loops) can run here, else why."""
    from . import cuda
    return cuda.load_error()


# torch: always; looked up by name at each call, so the functions stay patchable in tests
STATUS = {"triton": lambda: triton_status(), "cuda": lambda: cuda_status(), "cpu": lambda: cpu_status()}


def available_backends() -> list[str]:
    """Backends that can run on this machine ("torch" always)."""
    return ["torch"] + [name for name, status in STATUS.items() if status() is None]


def auto_choice(device: torch.device | str = "cpu") -> tuple[str, str]:
    """(backend, why): what ``auto`` runs on ``device``'s tensors on this machine."""
    dev = torch.device(device)
    if dev.type == "cuda":
        from . import cuda
        if cuda.load_error() is None and cuda.has_device_code():
            return "cuda", "ebjdat._C carries the CUDA kernels"
        why = cuda.load_error() or "ebjdat._C was built without nvcc, so without the CUDA kernels"
        if triton_status() is None:
            return "triton", why
        return "torch", f"{why}; and {triton_status()}"
    if dev.type == "cpu":
        why = cpu_status()
        if why is None:
            from . import cuda
            return "cpu", f"ebjdat._C's host loops ({cuda.cpu_simd_level()} vector code on this CPU)"
        return "torch", why
    return "torch", f"only the torch specification runs on {dev.type} tensors"


def set_backend(name: str) -> None:
    """Select the backend: "auto" (CUDA tensors: cuda when built, else triton, else torch;
    CPU tensors: cpu when ebjdat._C is built, else torch), "torch" (the specification),
    "triton", "cuda" or "cpu" (ebjdat._C's vectorised host loops, CPU tensors only)."""
    global _current
    if name not in NAMES:
        raise ValueError(f"backend must be one of {NAMES}, got {name!r}")
    reason = STATUS.get(name, lambda: None)()
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    _current = name


def get_backend() -> str:
    """The selected backend name (possibly "auto")."""
    return _current


@contextlib.contextmanager
def use_backend(name: str):
    """``with ops.use_backend("triton"): ...`` selects a backend for a block."""
    prev = _current
    set_backend(name)
    try:
        yield
    finally:
        set_backend(prev)


_RESOLVED: dict = {name: {} for name in NAMES}   # selection -> {device: backend table}


def resolve(name: str, x: torch.Tensor) -> SimpleNamespace:
    """The backend (``table``) that runs an op on x under the selection ``name``: decided once
    per (selection, device) and cached (``_decide``); a call costs a device read and two
    dict lookups. A refusal is not cached. (Whether triton interprets is fixed for the
    process: Triton reads TRITON_INTERPRET when its kernels are defined.)"""
    try:
        impl = _RESOLVED[name].get(device := x.device)
    except KeyError:   # only through torch.ops.ebjdat.* directly: ebjdat.ops passes a checked name
        raise ValueError(f"backend must be one of {NAMES}, got {name!r}") from None
    if impl is None:
        impl = _RESOLVED[name][device] = _decide(name, x)
    return impl


def _decide(name: str, x: torch.Tensor) -> SimpleNamespace:
    if name == "auto":
        name, why = auto_choice(x.device)
        if name == "torch" and x.device.type == "cpu":   # once per process: decisions are cached
            warnings.warn(f"ebjdat.ops: the auto backend runs the torch specification on the CPU, "
                          f"about 100x slower than the cpu backend, because {why}", RuntimeWarning,
                          stacklevel=2)
    if name == "cpu" and x.device.type != "cpu":
        raise RuntimeError(f"the cpu backend runs CPU tensors only, not {x.device.type} tensors; "
                           "use cuda, triton or auto")
    if name == "triton" and not x.is_cuda and not interpreting():
        raise RuntimeError("the triton backend runs CPU tensors only under TRITON_INTERPRET=1; "
                           "use the torch backend on the CPU")
    if name in ("triton", "cuda") and x.device.type not in ("cuda", "cpu"):
        raise RuntimeError(f"the {name} backend does not run on {x.device.type} tensors")
    return table(name)
