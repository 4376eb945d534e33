"""What a training run is made of, shared by the trainer and its loop (neither imports the
other for these): the logged metric names, the divergence error, and the run folder a
checkpoint belongs to."""
from __future__ import annotations

from pathlib import Path

METRICS = ("loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv")


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or exceeded cfg.loss_bound."""


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to: the parent of its checkpoints/ folder, else
    the folder it lies in."""
    folder = Path(checkpoint).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder
