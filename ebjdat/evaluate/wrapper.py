"""The model seen through [0, 1] pixel images: the space robustness is stated in.

ebjdat's models (like the published code's) read images normalised to [-1, 1],
``x = (p - 0.5) / 0.5`` for pixels ``p`` in [0, 1]. An attack that works on x directly
with "eps = 8/255" perturbs pixels by only 4/255 (ebjdat/published.py, docs/evaluation.md). Wrapping the model so
that it takes pixels makes eps, alpha and the clamp (0, 1) mean what the standard
protocol (and torchattacks, which hard-codes clamp(0, 1)) says they mean.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ..energy import logits_of

PRECISIONS = ("fp32", "bf16")


def to_pixels(x: Tensor) -> Tensor:
    """[-1, 1] model units -> [0, 1] pixels: ``p = (x + 1) / 2`` (any shape)."""
    return (x + 1.0) / 2.0


def from_pixels(p: Tensor) -> Tensor:
    """[0, 1] pixels -> [-1, 1] model units: ``x = (p - 0.5) / 0.5`` (any shape)."""
    return (p - 0.5) / 0.5


@contextlib.contextmanager
def kept_modes(model):
    """Restore the train/eval flag of every submodule on exit, each to its own value.

    ``model.train(was)`` would force one mode on all submodules; a wrapper (a new
    Module, training=True) around an eval-mode model would then put it in train mode."""
    mods = list(model.modules()) if isinstance(model, nn.Module) else []
    saved = [m.training for m in mods]
    try:
        yield model
    finally:
        for m, t in zip(mods, saved):
            m.training = t


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on ``device`` for precision "bf16", else a no-op context."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class PixelModel(nn.Module):
    r"""``logits = model((p - mean) / std)``: a classifier of [0, 1] pixel images.

    Shapes: p (B, C, H, W) in [0, 1] -> (B, K) float32 logits (``model.classify`` when
    the model has one). Defaults ``mean = std = 0.5`` are ebjdat's normalisation, so
    for any perturbation ``d`` of the pixels the model sees ``2 d``: an linf ball of
    radius eps in pixels is the ball of radius ``2 eps`` in model units, and the l2
    ball likewise. ``mean=0, std=1`` gives the identity (attacks in model units, the
    published protocol).

    ``precision="bf16"`` runs the model under bf16 autocast (logits are cast back to
    fp32, so losses and gradients with respect to p stay fp32); "fp32" (the default)
    leaves the model's own dtype alone. The wrapper holds the model as a submodule:
    ``.eval()`` / ``.train()`` reach it, and its parameters give attacks the device. It
    starts in the model's mode.
    """

    def __init__(self, model: nn.Module, *, mean: float = 0.5, std: float = 0.5,
                 precision: str = "fp32"):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be an nn.Module returning logits, got {type(model).__name__}")
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        autocast_for(torch.device("cpu"), precision)  # validates precision
        self.model = model
        self.mean, self.std, self.precision = float(mean), float(std), precision
        # a new Module says training=True; mirror the model instead, or callers that read
        # the wrapper's mode (torchattacks restores "train" after every attack) would put
        # an eval-mode model into train mode
        self.training = bool(getattr(model, "training", False))

    def forward(self, p: Tensor) -> Tensor:
        # identity (mean 0, std 1) skips the arithmetic: bit-exact model-unit attacks
        x = p if (self.mean == 0.0 and self.std == 1.0) else (p - self.mean) / self.std
        with autocast_for(p.device, self.precision):
            logits = logits_of(self.model, x)
        return logits.float()

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}, precision={self.precision!r}"
