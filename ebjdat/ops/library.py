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


def _run(fn, x: Tensor, others: tuple[Tensor, ...], backend: str, *args) -> None:
    """Call backend fn(x, *others, *args, layout) on dense memory; copy back if needed."""
    if x.numel() == 0:
        return
    impl = backends.resolve(backend, x)
    if getattr(impl, "ANY_LAYOUT", False):
        getattr(impl, fn)(x, *others, *args, None)
        return
    dense, layout = _dense_layout(x)
    target = x if dense else x.contiguous()
    others = tuple(_like_x(o, layout) for o in others)
    getattr(impl, fn)(target, *others, *args, layout)
    if target is not x:
        x.copy_(target)


@torch.library.custom_op("ebjdat::sgld_step_", mutates_args=("x", "state"))
def sgld_step_(x: Tensor, grad: Tensor, state: Optional[Tensor], step_size: float,
               noise_std: float, grad_clip: float, lo: float, hi: float, backend: str) -> None:
    _run("sgld_step", x, (grad,), backend, state, step_size, noise_std, grad_clip, lo, hi)


@torch.library.custom_op("ebjdat::pgd_step_", mutates_args=("x",))
def pgd_step_(x: Tensor, grad: Tensor, x_orig: Tensor, alpha: float, eps: Optional[float],
              norm: str, lo: float, hi: float, backend: str) -> None:
    _run("pgd_step", x, (grad, x_orig), backend, alpha, eps, norm, lo, hi)


@torch.library.custom_op("ebjdat::pgd_init_", mutates_args=("x", "state"))
def pgd_init_(x: Tensor, x_orig: Tensor, state: Tensor, eps: float, norm: str,
              lo: float, hi: float, backend: str) -> None:
    _run("pgd_init", x, (x_orig,), backend, state, eps, norm, lo, hi)


@sgld_step_.register_fake
def _(x, grad, state, step_size, noise_std, grad_clip, lo, hi, backend):
    return None


@pgd_step_.register_fake
def _(x, grad, x_orig, alpha, eps, norm, lo, hi, backend):
    return None


@pgd_init_.register_fake
def _(x, x_orig, state, eps, norm, lo, hi, backend):
    return None
