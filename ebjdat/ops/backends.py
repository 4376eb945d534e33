"""Backend registry: which implementation of the ops runs, chosen globally or per block."""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
from types import SimpleNamespace

import torch

from . import registry
from .interpreter import interpreting

NAMES = ("auto", "torch", "triton", "cuda")
_current = "auto"


MODULES = {"torch": "spec", "triton": "triton", "cuda": "cuda"}   # each family's module of a backend


@functools.cache
def table(name: str) -> SimpleNamespace:
    """Backend ``name`` ("torch", "triton" or "cuda"): ``getattr(table(name), op.name)`` is
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


def available_backends() -> list[str]:
    """Backends that can run on this machine ("torch" always)."""
    out = ["torch"]
    if triton_status() is None:
        out.append("triton")
    if cuda_status() is None:
        out.append("cuda")
    return out


def set_backend(name: str) -> None:
    """Select the backend: "auto" (cuda on a GPU when built, else triton on a GPU, else
    torch), "torch" (the specification), "triton" or "cuda"."""
    global _current
    if name not in NAMES:
        raise ValueError(f"backend must be one of {NAMES}, got {name!r}")
    reason = {"triton": triton_status, "cuda": cuda_status}.get(name, lambda: None)()
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
        if x.is_cuda:
            from . import cuda
            if cuda.load_error() is None and cuda.has_device_code():
                name = "cuda"
            elif triton_status() is None:
                name = "triton"
            else:
                name = "torch"
        else:
            name = "torch"
    if name == "triton" and not x.is_cuda and not interpreting():
        raise RuntimeError("the triton backend runs CPU tensors only under TRITON_INTERPRET=1; "
                           "use the torch backend on the CPU")
    if name in ("triton", "cuda") and x.device.type not in ("cuda", "cpu"):
        raise RuntimeError(f"the {name} backend does not run on {x.device.type} tensors")
    return table(name)
