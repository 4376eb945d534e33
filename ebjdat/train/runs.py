"""What a training run is made of, shared by the trainer and its loop (neither imports the
other for these): the logged metric names, the divergence watch and its error, and the
run folder a checkpoint belongs to."""
from __future__ import annotations

import math
from pathlib import Path

import torch

METRICS = ("loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv")


class TrainingDiverged(RuntimeError):
    """The watched quantity (cfg.bound_on) became non-finite or exceeded cfg.loss_bound."""


class DivergenceWatch:
    """Stops a run whose ``term`` ("loss", or "l_px": SADA-JEM's p(x) term) is not finite
    or exceeds ``bound`` in magnitude.

    ``observe`` folds each iteration's value into a running max on the device (no sync);
    ``check`` reads it (one host sync) and raises TrainingDiverged. ``every_step``: check
    at every observe, as the published loop reads its value every iteration; otherwise
    the caller checks at log and checkpoint time.
    """

    def __init__(self, bound: float, term: str, device, every_step: bool):
        self.bound, self.term, self.every_step = bound, term, every_step
        self.worst = torch.zeros((), device=device)

    def observe(self, loss: torch.Tensor, terms: dict, step: int) -> None:
        value = loss if self.term == "loss" else terms[self.term]
        torch.maximum(self.worst, value.detach().abs().nan_to_num(math.inf), out=self.worst)
        if self.every_step:
            self.check(step)

    def check(self, step: int) -> None:
        worst = float(self.worst)
        self.worst.zero_()
        if not worst <= self.bound:
            name = "loss" if self.term == "loss" else f"the {self.term} term"
            raise TrainingDiverged(f"|{name}| reached {worst:g} (bound {self.bound:g}) by step {step}")


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to: the parent of its checkpoints/ folder, else
    the folder it lies in."""
    folder = Path(checkpoint).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder
