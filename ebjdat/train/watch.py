"""The divergence watch of a training run and its error, shared by the trainer and its loop."""
from __future__ import annotations

import math

import torch


class TrainingDiverged(RuntimeError):
    """The watched quantity (cfg.bound_on) became non-finite or exceeded cfg.loss_bound."""


class DivergenceWatch:
    """Stops a run whose ``term`` ("loss", or "l_px": SADA-JEM's p(x) term) is not finite
    or exceeds ``bound`` in magnitude.

    The trainer observes where the published code checks: "l_px" right after the p(x)
    term's forwards, before the labelled forward, the attack and the update (SADA-JEM);
    "loss" before the backward (JEM, JEM++). So a published-mode run stops before the
    diverged iteration's update, as the published loop does.

    ``observe`` folds each iteration's value into a running max on the device (no sync);
    ``check`` reads it (one host sync) and raises TrainingDiverged. ``every_step``: check
    at every observe, as the published loop reads its value every iteration; otherwise
    the caller checks at log and checkpoint time.
    """

    def __init__(self, bound: float, term: str, device, every_step: bool):
        self.bound, self.term, self.every_step = bound, term, every_step
        self.worst = torch.zeros((), device=device)

    def observe(self, value: torch.Tensor, step: int) -> None:
        """Fold ``value`` (the 0-d watched term of iteration ``step``) in."""
        torch.maximum(self.worst, value.detach().abs().nan_to_num(math.inf), out=self.worst)
        if self.every_step:
            self.check(step)

    def check(self, step: int) -> None:
        worst = float(self.worst)
        self.worst.zero_()
        if not worst <= self.bound:
            name = "loss" if self.term == "loss" else f"the {self.term} term"
            raise TrainingDiverged(f"|{name}| reached {worst:g} (bound {self.bound:g}) by step {step}")
