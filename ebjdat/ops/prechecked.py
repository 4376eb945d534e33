"""The fused ops without argument checks, for loops that checked their arguments once:
the samplers (``ebjdat.sampling``) and the attacks (``ebjdat.attacks``) validate their
settings when built and their inputs once per call, then run every step through here.

Same names, same math and the same torch.library ops as ``ebjdat.ops``; the scalars are
positional and already validated floats (clamp as lo, hi: -inf, inf for none; grad_clip
inf for none). Nothing is checked: a grad of another shape or device can make the cuda
backend read out of bounds. Anything else should call ``ebjdat.ops``.
"""
from __future__ import annotations

from torch import Tensor

from . import library
from .backends import get_backend
from .generator import PhiloxGenerator, default_generator


def sgld_step_(x: Tensor, grad: Tensor, generator: PhiloxGenerator | None, step_size: float,
               noise_std: float, grad_clip: float, lo: float, hi: float) -> None:
    """ops.sgld_step_ for a grad of x's shape and device (e.g. from autograd through x)."""
    state = None if noise_std == 0 else (generator or default_generator(x.device)).state
    library.pick("sgld_step_", x)(x, grad, state, step_size, noise_std, grad_clip, lo, hi, get_backend())


def pgd_step_(x_adv: Tensor, grad: Tensor, x_orig: Tensor, alpha: float, eps: float | None,
              norm: str, lo: float, hi: float) -> None:
    """ops.pgd_step_ for checked x_adv, x_orig and a grad of their shape and device."""
    library.pick("pgd_step_", x_adv)(x_adv, grad, x_orig, alpha, eps, norm, lo, hi, get_backend())
