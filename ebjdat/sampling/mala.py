"""MALA: Metropolis-adjusted Langevin dynamics on an energy, two fused ops per step.

For an energy E (target density p proportional to exp(-E)) and a step h, each step proposes
``x' = x - h dE/dx(x) + sqrt(2h) z`` (``ops.mala_propose_``) and accepts it with probability
``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``, ``log q(b | a) = -||b - a + h dE/dx(a)||^2
/ (4h)`` (``ops.mala_accept_``). The accept/reject step makes p the chains' stationary
distribution at any step size, where SGLD's unadjusted steps (noise sqrt(2h)) are biased
by O(h): on a Gaussian of variance s^2 they settle at s^2 / (1 - h / (2 s^2)). Each step
costs one forward and one input-only backward (at the proposal): E and dE/dx of the
current states are carried from step to step, taking the proposal's where it is accepted.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import ops
from ..ops import checks, prechecked
from .sgld import SGLD, EnergyFn


class MALA(SGLD):
    """Samples by n_steps MALA steps; a sibling of SGLD (``sample``, buffer, labels,
    ``compile()`` as there: each step one compiled graph).

    energy_fn(x, y=None) -> (B,) energies (lower is more probable). step_size: h > 0.
    buffer: a ReplayBuffer to draw starts from and write samples back to. generator: the
    PhiloxGenerator of the proposals' noise and the acceptance draws (None: each call is
    seeded from torch's generator, as SGLD's). memory_format: the chains' layout for 4-D samples (the
    model's), as SGLD's. ``sample`` takes SGLD's per-call ``n_steps``, ``diagnostics`` and
    ``keep_every``, and seeds as SGLD does without a generator. After ``sample``: ``accepted``, a (B,) int64 tensor on the
    samples' device, each chain's accepted proposals in that call, and
    ``acceptance_rate()``, their fraction of all proposals (a host read).
    """

    def __init__(self, energy_fn: EnergyFn, *, n_steps: int, step_size: float, buffer=None,
                 generator: ops.PhiloxGenerator | None = None,
                 memory_format: torch.memory_format | None = None):
        h = checks.number("step_size", step_size)
        if h <= 0:
            raise ValueError(f"step_size must be > 0 for MALA (log q divides by it), got {step_size!r}")
        super().__init__(energy_fn, n_steps=n_steps, step_size=h, noise_std=math.sqrt(2.0 * h), buffer=buffer,
                         generator=generator, memory_format=memory_format)
        self.step_size = h
        self.accepted: Tensor | None = None

    def acceptance_rate(self) -> float:
        """The fraction of the last ``sample`` call's proposals that were accepted."""
        if self.accepted is None or not self._n or not self.accepted.numel():
            raise ValueError("no proposals yet: call sample() with n_steps >= 1 and at least one chain")
        return float(self.accepted.sum()) / (self.accepted.numel() * self._n)

    # ------------------------------------------------------------------ the loop
    def _loop(self, x: Tensor, y: Tensor | None) -> None:
        """This call's n_steps steps on x in place; counts each chain's accepted proposals
        (and records the trace when one is on: E and -dE/dx of each step's current state)."""
        b = x.shape[0]
        self.accepted = torch.zeros(b, dtype=torch.int64, device=x.device)
        if not self._n:
            return
        energy, descent = self._energy_descent(x, y)
        mask = torch.empty(b, dtype=torch.bool, device=x.device)
        trace = self._trace
        for k in range(self._n):
            if trace is not None:   # the state the step starts from (the step updates them)
                trace.stats(k, energy, descent)
            self._step(x, y, energy, descent, mask, self.accepted)
            if trace is not None:
                trace.keep(k, x)

    def _step(self, x: Tensor, y: Tensor | None, energy: Tensor, descent: Tensor, mask: Tensor,
              accepted: Tensor) -> None:
        """One MALA step on x in place; energy and descent (E and -dE/dx at x) follow x."""
        gen, h = self._gen, self.step_size
        x_prop = torch.empty_like(x)
        prechecked.mala_propose_(x_prop, x, descent, gen, h)
        energy_prop, descent_prop = self._energy_descent(x_prop, y)
        log_q_fwd = self._log_q(x_prop, x, descent)        # log q(x_prop | x)
        log_q_rev = self._log_q(x, x_prop, descent_prop)   # log q(x | x_prop)
        prechecked.mala_accept_(x, x_prop, energy, energy_prop, log_q_fwd, log_q_rev, mask, gen)
        energy.copy_(torch.where(mask, energy_prop, energy))
        descent.copy_(torch.where(mask.view((-1,) + (1,) * (x.dim() - 1)), descent_prop, descent))
        accepted.add_(mask)

    def _energy_descent(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """SGLD's (E(x), -dE/dx at x), E in the per-sample dtype (fp64 for fp64 chains)."""
        e, descent = super()._energy_descent(x, y)
        return e.to(_sample_dtype(x)), descent

    def _log_q(self, to: Tensor, frm: Tensor, descent: Tensor) -> Tensor:
        """log q(to | frm) = -||to - frm - h descent||^2 / (4h) per sample, descent = -dE/dx
        at frm, in the per-sample dtype (fp64 for fp64 chains, else fp32)."""
        p, h = _sample_dtype(to), self.step_size
        v = to.to(p) - frm.to(p) - h * descent.to(p)
        return v.flatten(1).square().sum(1).div_(-4.0 * h)


def _sample_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32
