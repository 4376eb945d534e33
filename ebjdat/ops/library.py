"""The torch.library custom ops ``torch.ops.ebjdat.<op>_``, one per registered op.

Each mutates its target (and any mask, and the generator state) in place, returns
nothing, and has a fake implementation, so torch.compile traces it without a graph break
and CUDA graphs capture it. Schema, implementation and the dispatcher's checked entry are
written from the op's registry record (registry.py, generate.py). The implementation picks
the backend and the memory layout: contiguous and channels_last tensors sharing the
target's layout go straight to the kernels; anything else is copied to contiguous memory,
updated, and copied back; (B,) tensors are made contiguous.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import backends, generate, registry
from .registry import Like, Mask

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


def _run(op: registry.Op, impl, x: Tensor, others: tuple, rest: tuple) -> None:
    """Call impl.<op>(x, *others, *rest, layout) on dense memory: x-sized tensors in x's
    layout, (B,) tensors contiguous; copy back whatever was written to a copy. The
    implementations take the common case (every tensor contiguous, or a backend taking any
    layout) before calling this."""
    if not (x.shape[0] if op.per_sample else x.numel()):
        return
    dense, layout = _dense_layout(x)
    target = x if dense else x.contiguous()
    args, back = [], []
    for a, t in zip(op.tensors[1:], others):
        d = _like_x(t, layout) if isinstance(a, Like) else t.contiguous()
        if isinstance(a, Mask) and d is not t:
            back.append((t, d))
        args.append(d)
    getattr(impl, op.name)(target, *args, *rest, layout)
    if target is not x:
        x.copy_(target)
    for t, d in back:
        t.copy_(d)


def _fake(*args) -> None:
    """Shapes never change and nothing is returned: the fake kernel does nothing."""
    return None


# Declared with the low-level torch.library API: its eager dispatch costs about 3 us per
# call, where torch.library.custom_op's Python wrapper costs about 40 us (measured on the
# CPU), which would dominate a fused op at CIFAR sizes.
_LIB = torch.library.Library("ebjdat", "DEF")
IMPLS: dict[str, object] = {}       # op name -> its implementation (what plain eager calls)
OVERLOADS: dict[str, object] = {}   # op name -> torch.ops.ebjdat.<op>_.default

for _op in registry.ops():
    _LIB.define(_op.schema())
    IMPLS[_op.name] = generate.implementation(_op, backends.resolve, _run)
    _LIB.impl(_op.public_name, generate.checked(_op, IMPLS[_op.name]), "CompositeExplicitAutograd")
    torch.library.register_fake(f"ebjdat::{_op.public_name}", _fake, lib=_LIB)
    OVERLOADS[_op.name] = getattr(torch.ops.ebjdat, _op.public_name).default
