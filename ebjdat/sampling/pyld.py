"""PYLD: JEM++'s proximal Langevin sampler.

Each of the n_steps outer steps takes the energy's gradient once, then applies n_inner
clipped, clamped updates ``x <- clamp(x + step_size * clamp(-g, -c, c), lo, hi)``.

JEM++ writes the inner steps through the first layer: with ``h = first_layer(x)`` and
``p = dE/dh`` at the outer point, each inner step follows the input gradient of the
Hamiltonian ``sum(first_layer(x) * p)``, which is ``first_layer^T p``. When the first layer
is linear (a convolution) that gradient does not depend on x and equals the outer input
gradient ``dE/dx``, so every inner step reuses it: the default, one forward and backward
per outer step. Give ``first_layer`` and ``head`` (``E = head(first_layer(x), y)``) to run
the Hamiltonian literally, as JEM++ does (a first-layer forward/backward per inner step).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import prechecked
from .sgld import SGLD, EnergyFn


class PYLD(SGLD):
    """JEM++'s sampler: defaults are its settings (10 x 5 steps of 0.2, clip 1, clamp [-1, 1])."""

    def __init__(self, energy_fn: EnergyFn | None = None, *, n_steps: int = 10, n_inner: int = 5,
                 step_size: float = 0.2, grad_clip: float | None = 1.0,
                 clamp: tuple[float, float] | None = (-1.0, 1.0), noise_std: float = 0.0,
                 buffer=None, generator: ops.PhiloxGenerator | None = None,
                 cuda_graph: bool = False, first_layer: nn.Module | None = None,
                 head: EnergyFn | None = None, memory_format: torch.memory_format | None = None):
        if (first_layer is None) != (head is None):
            raise ValueError("give both first_layer and head (E = head(first_layer(x), y)), or neither")
        if energy_fn is None:
            if first_layer is None:
                raise ValueError("give energy_fn, or first_layer and head")
            energy_fn = _Composed(first_layer, head)
        if isinstance(n_inner, bool) or not isinstance(n_inner, int) or n_inner < 1:
            raise ValueError(f"n_inner must be an int >= 1, got {n_inner!r}")
        super().__init__(energy_fn, n_steps=n_steps, step_size=step_size, noise_std=noise_std,
                         grad_clip=grad_clip, clamp=clamp, buffer=buffer, generator=generator,
                         cuda_graph=cuda_graph, memory_format=memory_format)
        self.n_inner = n_inner
        self.first_layer, self.head = first_layer, head

    def _step(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """One outer step: n_inner clipped updates along one gradient (or the Hamiltonian's).
        Returns (E, -dE/dx) at the outer point, for the trace (the Hamiltonian's first inner
        gradient is dE/dx there)."""
        gen = self._gen
        if self.first_layer is None:
            e, g = self._energy_descent(x, y)
            for _ in range(self.n_inner):
                prechecked.sgld_step_(x, g, gen, *self._update)
            return e, g
        e, p = self._feature_grad(x, y)
        first = None
        for _ in range(self.n_inner):
            x_ = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad((self.first_layer(x_) * p).sum(), x_)
            g = g.neg_()
            first = g if first is None else first
            prechecked.sgld_step_(x, g, gen, *self._update)
        return e, first

    def _feature_grad(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """(E, detached (B,), and p = dE/dh) at h = first_layer(x)."""
        with torch.enable_grad():
            h = self.first_layer(x.detach()).detach().requires_grad_(True)
            e = self.head(h) if y is None else self.head(h, y)
            (p,) = torch.autograd.grad(e.sum(), h)
        return e.detach(), p


class _Composed(nn.Module):
    """E(x, y) = head(first_layer(x), y), as an energy_fn."""

    def __init__(self, first_layer: nn.Module, head):
        super().__init__()
        self.first_layer = first_layer
        self.head = head

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.first_layer(x)
        return self.head(h) if y is None else self.head(h, y)
