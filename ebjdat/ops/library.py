"""The torch.library custom ops ``ebjdat::sgld_step_``, ``ebjdat::pgd_step_``, ``ebjdat::pgd_init_``.

Each mutates its first argument (and the generator state) in place, returns nothing,
and has a fake implementation, so torch.compile traces it without a graph break and
CUDA graphs capture it. The implementation picks the backend and the memory layout:
contiguous and channels_last tensors sharing x's layout go straight to the kernels;
anything else is copied to contiguous memory, updated, and copied back.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import backends

CONTIGUOUS = None  # layout descriptor: memory order is logical order


def _dense_layout(x: Tensor):
    """(True, layout) when x's memory can be walked as a flat array, else (False, None).

    layout is None (contiguous) or (C, H, W) for a channels_last 4-D tensor.
    """
    if x.is_contiguous():
        return True, CONTIGUOUS
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return True, tuple(x.shape[1:])
    return False, None


def _like_x(t: Tensor, layout) -> Tensor:
    """t in x's memory format (a copy only when it differs)."""
    fmt = torch.contiguous_format if layout is CONTIGUOUS else torch.channels_last
    return t.contiguous(memory_format=fmt)


def _run(fn, impl, x: Tensor, others: tuple[Tensor, ...], *args) -> None:
    """Call impl.fn(x, *others, *args, layout) on dense memory sharing x's layout; copy
    back if x itself was not dense. The ops below take the common case (every tensor
    contiguous, or a backend taking any layout) before calling this."""
    if x.numel() == 0:
        return
    dense, layout = _dense_layout(x)
    target = x if dense else x.contiguous()
    others = tuple(_like_x(o, layout) for o in others)
    getattr(impl, fn)(target, *others, *args, layout)
    if target is not x:
        x.copy_(target)


# Declared with the low-level torch.library API: its eager dispatch costs about 3 us per
# call, where torch.library.custom_op's Python wrapper costs about 40 us (measured on the
# CPU), which would dominate a fused op at CIFAR sizes.
_LIB = torch.library.Library("ebjdat", "DEF")
_SCHEMAS = {
    "sgld_step_": "sgld_step_(Tensor(a!) x, Tensor grad, Tensor(b!)? state, float step_size, "
                  "float noise_std, float grad_clip, float lo, float hi, str backend) -> ()",
    "pgd_step_": "pgd_step_(Tensor(a!) x, Tensor grad, Tensor x_orig, float alpha, float? eps, "
                 "str norm, float lo, float hi, str backend) -> ()",
    "pgd_init_": "pgd_init_(Tensor(a!) x, Tensor x_orig, Tensor(b!) state, float eps, str norm, "
                 "float lo, float hi, str backend) -> ()",
}


# The implementations: the backend for (selection, device), then straight to it when the
# tensors are contiguous (no layout work: the path every sampler and attack step takes).
def sgld_step_(x: Tensor, grad: Tensor, state: Optional[Tensor], step_size: float,
               noise_std: float, grad_clip: float, lo: float, hi: float, backend: str) -> None:
    impl = backends.resolve(backend, x)
    if impl.ANY_LAYOUT or (x.is_contiguous() and grad.is_contiguous()):
        if x.numel():
            impl.sgld_step(x, grad, state, step_size, noise_std, grad_clip, lo, hi, CONTIGUOUS)
        return
    _run("sgld_step", impl, x, (grad,), state, step_size, noise_std, grad_clip, lo, hi)


def pgd_step_(x: Tensor, grad: Tensor, x_orig: Tensor, alpha: float, eps: Optional[float],
              norm: str, lo: float, hi: float, backend: str) -> None:
    impl = backends.resolve(backend, x)
    if impl.ANY_LAYOUT or (x.is_contiguous() and grad.is_contiguous() and x_orig.is_contiguous()):
        if x.numel():
            impl.pgd_step(x, grad, x_orig, alpha, eps, norm, lo, hi, CONTIGUOUS)
        return
    _run("pgd_step", impl, x, (grad, x_orig), alpha, eps, norm, lo, hi)


def pgd_init_(x: Tensor, x_orig: Tensor, state: Tensor, eps: float, norm: str,
              lo: float, hi: float, backend: str) -> None:
    impl = backends.resolve(backend, x)
    if impl.ANY_LAYOUT or (x.is_contiguous() and x_orig.is_contiguous()):
        if x.numel():
            impl.pgd_init(x, x_orig, state, eps, norm, lo, hi, CONTIGUOUS)
        return
    _run("pgd_init", impl, x, (x_orig,), state, eps, norm, lo, hi)


def _fake(*args) -> None:
    """Shapes never change and nothing is returned: the fake kernel does nothing."""
    return None


_IMPLS = {"sgld_step_": sgld_step_, "pgd_step_": pgd_step_, "pgd_init_": pgd_init_}
for _name, _impl in _IMPLS.items():
    _LIB.define(_SCHEMAS[_name])
    _LIB.impl(_name, _impl, "CompositeExplicitAutograd")
    torch.library.register_fake(f"ebjdat::{_name}", _fake, lib=_LIB)


# What call() asks on every eager call, bound once (an attribute chain costs a lookup each).
_grad_enabled = torch.is_grad_enabled
_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch_transforms = torch._C._are_functorch_transforms_active


def pick(name: str, x: Tensor):
    """The callable that runs ``ebjdat::<name>`` on x: its implementation in plain eager
    mode (skipping the dispatcher saves a few microseconds per call), the dispatcher's
    ``torch.ops.ebjdat.<name>`` otherwise. Callers call it with the op's arguments spelled
    out (forwarding them through ``*args`` would cost another 0.3 us a call).

    Plain eager: nothing traces or transforms this call (no torch.compile, no fake or
    functional tensors, no dispatch mode such as make_fx or export, no functorch
    transform) and x records no autograd history; then the dispatcher would only call
    the implementation anyway."""
    if (type(x) is Tensor and not (x.requires_grad and _grad_enabled()) and not _compiling()
            and not _dispatch_modes() and not _functorch_transforms()):
        return _IMPLS[name]
    return getattr(torch.ops.ebjdat, name)
