"""Run folders: which folders a run may write into (the folder a checkpoint belongs to is
``checkpoint.run_folder_of``)."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import latest_checkpoint, run_folder_of


def check_run_folder(out: Path, resumed_from: Path | None = None) -> None:
    """Before any work: a fresh run writes only into a new or empty folder; a resumed one
    into the folder its checkpoint lies in (if that holds no newer checkpoint) or a new or
    empty one. Never into another run's files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; name a new folder")
    if resumed_from is not None and out.resolve() == run_folder_of(resumed_from):
        newest = latest_checkpoint(Path(resumed_from).parent)
        if newest is not None and newest.resolve() != Path(resumed_from).resolve():
            raise ValueError(f"{newest} is newer than {resumed_from}: continuing the older one in "
                             f"{out} would mix two histories; resume {newest}, or pass --out <new folder>")
        return
    if out.is_dir() and any(out.iterdir()):
        held = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise ValueError(f"--out {out} already holds files ({held}, ...): continue that run with "
                         f"--resume {out}, or name a new folder")
