"""Run folders: which folders a run may write into, and the files that mark one (the
folder a checkpoint belongs to is ``checkpoint.run_folder_of``).

A run folder holds checkpoints/, metrics.jsonl, summary.json, the pictures, init.pt,
``config.json`` (the run's settings, written when training starts, so a run stopped
before its first checkpoint can start again and a checkpoint copied in from another run
is recognised) and ``.lock`` (the one process writing into it; ``hold_run_folder``).

Rules, so that no command overwrites, prunes or silently reuses another run's files:
a fresh run writes only into a new or empty folder; a resumed one into the folder its
checkpoint lies in or a new or empty one; never through a symbolic link that leads out of
the folder; one process at a time; ``ebjdat eval`` / ``ebjdat sample`` never replace a
training output (``check_eval_out``, ``check_not_training_output``).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

from .checkpoint import latest_checkpoint, run_folder_of

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the other checks still hold
    fcntl = None

RUN_CONFIG = "config.json"
LOCK_FILE = ".lock"
SUMMARY = "summary.json"
# what a training run writes directly into its folder
TRAINING_OUTPUTS = ("checkpoints", "metrics.jsonl", SUMMARY, "samples.png", "energy.png", "init.pt",
                    RUN_CONFIG, "diverged_samples.png", "retry.toml", LOCK_FILE)
# the entries that make a folder a training run folder
_RUN_MARKERS = ("checkpoints", "metrics.jsonl", SUMMARY, RUN_CONFIG)


def _check_is_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; name a new folder")


def check_no_links(out) -> None:
    """ValueError naming the first entry the run writes (TRAINING_OUTPUTS) that is a
    symbolic link or lies, resolved, outside the run folder: writing through it would
    change another folder's files (another run's metrics, checkpoints, pictures). The run
    folder itself may be a link: it is the folder the user named."""
    out = Path(out)
    if not out.is_dir():
        return
    real = out.resolve()
    for name in TRAINING_OUTPUTS:
        p = out / name
        if p.is_symlink() or (p.exists() and p.resolve().parent != real):
            raise ValueError(f"{p} is a symbolic link (to {p.resolve()}): the run would write through it into "
                             f"another folder; replace it with a real {'folder' if p.is_dir() else 'file'} "
                             f"(or remove it), or pass --out <new folder>")


def restartable(folder) -> bool:
    """A run stopped before its first checkpoint: config.json, no checkpoint, no summary."""
    folder = Path(folder)
    return ((folder / RUN_CONFIG).is_file() and not (folder / SUMMARY).exists()
            and latest_checkpoint(folder / "checkpoints") is None and latest_checkpoint(folder) is None)


def check_run_folder(out: Path, resumed_from: Path | None = None, restart: Path | None = None) -> None:
    """Before any work: a fresh run writes only into a new or empty folder; a resumed one
    into the folder its checkpoint lies in (if that holds no newer checkpoint) or a new or
    empty one; ``restart``: the run folder stopped before its first checkpoint that starts
    again at step 0. Never into another run's files, never through symbolic links."""
    out = Path(out)
    _check_is_folder(out)
    check_no_links(out)
    if resumed_from is not None and out.resolve() == run_folder_of(resumed_from):
        newest = latest_checkpoint(Path(resumed_from).parent)
        if newest is not None and newest.resolve() != Path(resumed_from).resolve():
            raise ValueError(f"{newest} is newer than {resumed_from}: continuing the older one in "
                             f"{out} would mix two histories; resume {newest}, or pass --out <new folder>")
        return
    if restart is not None and out.resolve() == Path(restart).resolve():
        if not restartable(out):
            raise ValueError(f"{out} now holds a checkpoint or a summary: another process trained into it; "
                             f"resume it with ebjdat train --resume {out}")
        return
    held = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if not held:
        return
    listed = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
    if restartable(out):
        raise ValueError(f"--out {out} holds a run stopped before its first checkpoint ({listed}): start it "
                         f"again from step 0 with its stored settings: ebjdat train --resume {out}; or name a "
                         f"new folder")
    if latest_checkpoint(out / "checkpoints") is None and latest_checkpoint(out) is None:
        raise ValueError(f"--out {out} already holds files ({listed}) and no checkpoint to continue: name a "
                         f"new folder (--out <new folder>)")
    raise ValueError(f"--out {out} already holds files ({listed}): continue that run with "
                     f"--resume {out}, or name a new folder")


@contextlib.contextmanager
def hold_run_folder(out):
    """Make ``out`` (created if missing) this process's run folder for the block: an
    exclusive ``flock`` on ``out/.lock`` (which holds the pid), kept while the block runs.
    A second process gets a ValueError naming the holder's pid. The kernel releases the
    lock when its process dies, so the lock file of a killed run never blocks."""
    out = Path(out)
    _check_is_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link: the run would lock another folder's file; remove "
                             f"it, or pass --out <new folder>") from None
        raise
    with os.fdopen(fd, "r+") as f:
        _lock(f, out)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def _lock(f, out: Path) -> None:
    """flock(LOCK_EX | LOCK_NB) on the open lock file, or a ValueError naming the holder."""
    if fcntl is None:
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = f.read().strip() or "unknown"
        raise ValueError(f"run folder {out} is in use by process {pid}; wait for it or pass another "
                         f"--out") from None


# ---- the run's settings, stored beside its checkpoints ---------------------------------------
def write_run_config(out, config: dict) -> None:
    """Write the run's settings to ``out/config.json`` unless the folder has them already
    (a resume in place keeps the file the run started with); atomic (temp file, rename)."""
    path = Path(out) / RUN_CONFIG
    if path.exists():
        return
    tmp = path.with_name(f".{RUN_CONFIG}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, path)


def read_run_config(folder) -> tuple[dict, Path] | None:
    """(settings, the file they came from) of a run folder: config.json, else the config
    in summary.json (folders written before config.json existed); None when neither is there."""
    folder = Path(folder)
    for path, key in ((folder / RUN_CONFIG, None), (folder / SUMMARY, "config")):
        if not path.is_file():
            continue
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path} is not JSON: the file is damaged; repair it from a checkpoint's "
                             f"config, or remove it") from None
        values = values.get(key) if key and isinstance(values, dict) else values
        if isinstance(values, dict):
            return values, path
    return None


def check_same_run(checkpoint, config: dict, folder) -> None:
    """ValueError when the checkpoint's variant, objective or dataset differ from those of
    the run folder it lies in (a checkpoint copied in from another run), naming both."""
    found = read_run_config(folder)
    if found is None:
        return
    stored, where = found
    for key in ("variant", "objective", "dataset"):
        if key in stored and stored[key] != config.get(key):
            raise ValueError(f"checkpoint {checkpoint} belongs to another run: its {key} is {config.get(key)!r}, "
                             f"the run folder's ({where}) is {stored[key]!r}; move the checkpoint out of "
                             f"{folder} and resume it with --out <new folder>")


# ---- what eval and sample may write ----------------------------------------------------------
def run_marker(folder) -> str | None:
    """The entry that makes ``folder`` a training run folder (checkpoints/, metrics.jsonl,
    summary.json, config.json), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return next((name for name in _RUN_MARKERS if (folder / name).exists()), None)


def check_eval_out(folder, name: str = "--out") -> None:
    """The rule for ``ebjdat eval --out``: a training run folder is refused (its pictures
    would replace the training's energy.png, samples.png); a new folder or one of earlier
    eval pictures is fine."""
    marker = run_marker(folder)
    if marker is not None:
        raise ValueError(f"{name} {folder} is a training run folder (it holds {marker}): eval never replaces a "
                         f"training's pictures; pass a new folder, or leave {name} out (default "
                         f"<run>/eval_step_N)")


def check_not_training_output(path, name: str = "--out") -> None:
    """ValueError when the file ``path`` is one a training run wrote into its folder
    (``ebjdat sample --out RUN/samples.png --force`` would replace the training's picture)."""
    path = Path(path)
    if path.name in TRAINING_OUTPUTS and run_marker(path.parent) is not None:
        raise ValueError(f"{name} {path} is a training output of the run in {path.parent}: it is never "
                         f"replaced; pass another file name")
