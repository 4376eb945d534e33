"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and plain values (numbers, strings, None, bytes,
dtypes, devices and dicts / lists / tuples / sets of them): what ``torch.load(...,
weights_only=True)`` accepts, so loading a file never runs code from it.

Atomic: ``save_checkpoint`` writes a temp file in the destination folder, flushes it to
the disk (fsync), then renames it onto the destination (``os.replace``, atomic on POSIX
and Windows within one file system) and fsyncs the folder so the rename itself survives
a power cut. A process killed at any instant leaves the old complete file or the new
complete file under the name, never a partial one; at worst a stray temp file
(``.step_00001000.pt.<random>.tmp``), which ``latest_checkpoint`` ignores and ``prune``
removes.

Files of a run: ``folder/step_{N:08d}.pt`` (``checkpoint_path``); the newest is the one
with the highest N (``latest_checkpoint``).
"""
from __future__ import annotations

import collections
import numbers
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import torch

_STEP_FILE = re.compile(r"step_(\d{8,})\.pt")
_TEMP_FILE = re.compile(r"\.step_\d{8,}\.pt\..*\.tmp")
# what the weights_only unpickler rebuilds (checked before writing, so a run does not
# find out at resume time that its checkpoints cannot be loaded)
_LEAVES = (int, float, bool, complex, str, bytes, bytearray, type(None), torch.dtype, torch.device, torch.Size)
_CONTAINERS = (dict, collections.OrderedDict, list, tuple, set)


def _check_plain(v, where: str) -> None:
    """Raise TypeError naming the first value that weights_only loading would refuse."""
    t = type(v)
    if isinstance(v, torch.Tensor) or t in _LEAVES:
        return
    if t in (dict, collections.OrderedDict):
        for k, item in v.items():
            _check_plain(k, f"{where} key {k!r}")
            _check_plain(item, f"{where}[{k!r}]")
        return
    if t in _CONTAINERS:
        for i, item in enumerate(v):
            _check_plain(item, f"{where}[{i}]")
        return
    hint = ""
    if t.__module__ == "numpy":
        hint = " (numpy: use torch.from_numpy(a) for arrays, float(x) / int(x) for scalars)"
    elif hasattr(v, "__dataclass_fields__"):
        hint = " (a dataclass: store dataclasses.asdict(obj))"
    elif isinstance(v, numbers.Number):
        hint = " (convert it to int or float)"
    raise TypeError(f"{where} is a {t.__module__}.{t.__qualname__}: ebjdat checkpoints hold only tensors and "
                    f"plain values (numbers, strings, None, dicts / lists / tuples of them), which load with "
                    f"weights_only=True; convert it{hint}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside folder durable (POSIX; Windows cannot open a folder)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` (a dict of tensors and plain values) to ``path`` atomically.

    The folder is created if missing. Tensors are saved as they are (move or copy them
    to the CPU first if their device should not matter; ``load_checkpoint`` maps to the
    CPU by default anyway).
    """
    path = Path(path)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    _check_plain(state, "state")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    # same folder: os.replace is atomic only within one file system
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        if os.name != "nt":
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a checkpoint is no secret
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: leave no temp file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def load_checkpoint(path, map_location="cpu") -> dict:
    """``torch.load(path, map_location=map_location, weights_only=True)`` with errors that
    say what is wrong with the file: FileNotFoundError when missing, ValueError when
    truncated / corrupt or when it holds Python objects that weights_only refuses.

    Corruption inside tensor data is not detected (torch's reader checks no checksums);
    the atomic writes of ``save_checkpoint`` are what keeps files whole.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"checkpoint {path} is a folder; pass a file, e.g. latest_checkpoint({str(path)!r})")
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        cause = str(e.__context__ or e)
        if "Unsupported global" in cause:
            what = cause.split(" was not an allowed global")[0].strip()
            raise ValueError(
                f"checkpoint {path} holds Python objects that weights_only loading refuses ({what}); ebjdat "
                f"checkpoints hold only tensors and plain values; if you trust the file, load it yourself with "
                f"torch.load(path, weights_only=False) or allowlist the class with "
                f"torch.serialization.add_safe_globals, and save its tensors and plain values again") from e
        kind = "corrupt" if zipfile.is_zipfile(path) else "not a torch.save zip archive (corrupt, or another format)"
        raise ValueError(f"checkpoint {path} cannot be read: {kind} ({cause.strip().splitlines()[0]})") from e
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError) as e:
        # zip reader errors (RuntimeError), an empty or cut file (EOFError), ...; OSError
        # (permissions, I/O) passes through: the file may be fine
        detail = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {path} is truncated or corrupt and cannot be loaded ({detail}); "
                         f"use an older checkpoint of the run") from e
    if not isinstance(state, dict):  # a bad file, not a bad argument: ValueError like the others
        raise ValueError(  # noqa: TRY004
            f"checkpoint {path} holds a {type(state).__name__}, not a dict: not an ebjdat checkpoint")
    return state


def checkpoint_path(folder, step: int) -> Path:
    """``folder/step_{step:08d}.pt``."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an integer >= 0, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    return Path(folder) / f"step_{int(step):08d}.pt"


def _step_files(folder: Path) -> list[tuple[int, Path]]:
    """(N, path) of every ``step_N.pt`` in folder, oldest first; temp files excluded."""
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _STEP_FILE.fullmatch(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(folder) -> Path | None:
    """The checkpoint with the highest step in folder, or None (no such file, no folder).

    Every ``step_N.pt`` is complete (saves are atomic); the temp files of interrupted
    saves are not considered."""
    files = _step_files(Path(folder))
    return files[-1][1] if files else None


def prune(folder, keep: int = 3, *, temp_files: bool = True) -> list[Path]:
    """Delete all but the ``keep`` newest ``step_N.pt`` files of folder; with
    ``temp_files``, also the temp files that interrupted saves left (do not prune while
    another process is saving into the folder). Returns the deleted paths."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral):
        raise TypeError(f"keep must be an integer >= 1 (the newest checkpoints to keep), got {keep!r}")
    if keep < 1:
        raise ValueError(f"keep must be an integer >= 1 (the newest checkpoints to keep), got {keep!r}")
    folder = Path(folder)
    files = _step_files(folder)
    doomed = [p for _, p in files[:-keep]]
    if temp_files and folder.is_dir():
        doomed += [p for p in folder.iterdir() if _TEMP_FILE.fullmatch(p.name)]
    for p in doomed:
        try:
            p.unlink()
        except FileNotFoundError:  # removed meanwhile: what we wanted
            pass
    return doomed


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or the newest one of a run folder (or of its checkpoints/)."""
    p = Path(path)
    if p.is_dir():
        found = latest_checkpoint(p / "checkpoints") or latest_checkpoint(p)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (step_N.pt) in {p} or {p / 'checkpoints'}: "
                                    "nothing to load")
        return found
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return p
