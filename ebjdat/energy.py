"""Energies of a classifier's logits (JEM): lower energy is more probable.

``E(x) = -logsumexp_k logits(x)_k`` (marginal), ``E(x, y) = -logits(x)_y`` (conditional),
and EB-JDAT's perceptual distance between clean and adversarial logits.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch._dynamo.eval_frame import OptimizedModule


def marginal(logits: Tensor) -> Tensor:
    """(B, K) logits -> (B,) energies ``-logsumexp(logits)``."""
    return -torch.logsumexp(logits, dim=1)


def conditional(logits: Tensor, y: Tensor) -> Tensor:
    """(B, K) logits, (B,) int labels -> (B,) energies ``-logits[y]``."""
    return -logits.gather(1, y.view(-1, 1)).squeeze(1)


def perceptual_distance(logits: Tensor, logits_adv: Tensor) -> Tensor:
    """(B, K), (B, K) -> (B,): ``|| l/||l|| - l_adv/||l_adv|| ||^2`` per sample (EB-JDAT's P)."""
    a = logits / logits.norm(dim=1, keepdim=True)
    b = logits_adv / logits_adv.norm(dim=1, keepdim=True)
    return (a - b).pow(2).sum(dim=1)


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """The model's logits: ``model.classify(x)`` when it has one, else ``model(x)``.

    A compiled module (``torch.compile(m)``, an OptimizedModule) is called as ``model(x)``:
    its attribute lookup would hand back the uncompiled ``classify``. ``compiled`` builds
    compiled modules whose forward is the logits."""
    if isinstance(model, OptimizedModule):
        return model(x)
    classify = getattr(model, "classify", None)
    return classify(x) if callable(classify) else model(x)


class Logits(nn.Module):
    """``forward(x) = logits_of(model, x)``: a module whose forward is a classifier's logits,
    for a model whose own forward returns something else (JEM's energy, say)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.model, x)


def compiled(model: nn.Module, **options) -> nn.Module:
    """``torch.compile(Logits(model), **options)``: the model's logits path compiled, whether
    its logits come from ``classify`` or ``forward``; ``logits_of`` on the result runs the
    compiled graph. The compiled module shares the model's parameters, buffers and
    train/eval mode."""
    return torch.compile(Logits(model), **options)


class ClassifierEnergy(nn.Module):
    """Turns a classifier into an ``energy_fn(x, y=None) -> (B,)``: marginal energy when y
    is None, conditional energy ``-logits[y]`` otherwise. Holds the model as a submodule,
    so samplers can see its train/eval mode and buffers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        logits = logits_of(self.model, x)
        return marginal(logits) if y is None else conditional(logits, y)
