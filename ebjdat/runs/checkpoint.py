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

Checksummed: ``save_checkpoint`` stores a SHA-256 of the state under the reserved key
``"_sha256"`` (a canonical walk: every tensor's dtype, shape and bytes, every plain
value's type and repr, dict keys in order) and ``load_checkpoint`` recomputes it, so a
flipped bit in tensor data (which torch's zip reader does not notice) is an error, not a
silently different model. The returned dict holds no ``"_sha256"``. Files without the key
(written before it existed, or by other tools) still load; only checksummed files are
verified this way. Zip files without the key are checked against the zip's own CRC-32s
instead (torch writes them but never checks them); legacy-format files (torch < 1.6) are
not checked at all.

Loading refuses, with a ValueError naming the file: empty, truncated and damaged files,
files that are not torch.save archives, files holding Python objects whose unpickling
would run code (refused as unsafe; they are never unpickled) and files holding no dict.

Files of a run: ``folder/step_{N:08d}.pt`` (``checkpoint_path``); the newest is the one
with the highest N (``latest_checkpoint``).
"""
from __future__ import annotations

import _compat_pickle
import collections
import errno
import hashlib
import io
import numbers
import os
import pickle
import pickletools
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
CHECKSUM_KEY = "_sha256"  # reserved top-level key: the SHA-256 hex digest of the rest
_HEX64 = re.compile(r"[0-9a-f]{64}")
# torch.save(..., _use_new_zipfile_serialization=False) files start with the pickled magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_SCAN_LIMIT = 64 << 20  # bytes of pickle read when naming the globals of a refused file
_OLDER = "use an older checkpoint of the run"  # what to do about a damaged file
_OURS = "pass a checkpoint that save_checkpoint wrote"  # ... and about a foreign one


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


def _tensor_bytes(t: torch.Tensor):
    """The tensor's values as a flat uint8 numpy view (no copy when already a contiguous
    CPU tensor): works for every dtype (bf16, fp16, bool, ...) and for 0-d tensors."""
    t = t.detach()
    if t.layout != torch.strided:  # sparse: its values, whatever the stored layout
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    t = t.resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy()


def _feed(h, v) -> None:
    """Feed one value to the hash: a type tag, a length where the size is not implied,
    then the content, so that no two different states give the same byte stream."""
    t = type(v)
    if isinstance(v, torch.Tensor):
        h.update(f"T{v.dtype}{tuple(v.shape)}:".encode())
        if v.device.type != "meta":  # meta tensors have no data
            h.update(_tensor_bytes(v))
    elif t in (dict, collections.OrderedDict):
        h.update(f"{t.__name__}{len(v)}:".encode())
        for k, item in v.items():  # insertion order: pickling keeps it
            _feed(h, k)
            _feed(h, item)
    elif t in (list, tuple):
        h.update(f"{t.__name__}{len(v)}:".encode())
        for item in v:
            _feed(h, item)
    elif t is set:  # iteration order of a set of str differs between processes: sort
        parts = []
        for item in v:
            sub = hashlib.sha256()
            _feed(sub, item)
            parts.append(sub.digest())
        h.update(f"set{len(v)}:".encode() + b"".join(sorted(parts)))
    elif t in (str, bytes, bytearray):
        b = v.encode("utf-8", "surrogatepass") if t is str else bytes(v)
        h.update(f"{t.__name__}{len(b)}:".encode() + b)
    else:  # numbers, None, dtype, device, Size: repr round-trips them
        r = repr(v).encode("utf-8", "backslashreplace")
        h.update(f"{t.__module__}.{t.__qualname__}{len(r)}:".encode() + r)


def state_digest(state: dict) -> str:
    """SHA-256 hex digest of a checkpoint state (the canonical walk ``_feed`` does),
    independent of the tensors' devices and memory layouts."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


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
    CPU by default anyway). The SHA-256 of ``state`` goes into the file under
    ``"_sha256"`` (a reserved key) for ``load_checkpoint`` to verify.
    """
    path = Path(path)
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    if CHECKSUM_KEY in state:
        raise ValueError(f"state key {CHECKSUM_KEY!r} is reserved for the checksum save_checkpoint writes; "
                         f"rename that entry")
    _check_plain(state, "state")
    full = state.copy()  # same type (dict or OrderedDict), checksum last
    full[CHECKSUM_KEY] = state_digest(state)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    # same folder: os.replace is atomic only within one file system
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(full, f)
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before the name points at it
        except (OSError, RuntimeError) as e:
            raise _write_error(path, e) from e
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


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (a full disk, a file size limit, an I/O error); the file
    under its name, if any, is the earlier complete one."""


# torch.save's zip writer reports a failed write as a RuntimeError ("[enforce fail at
# inline_container.cc:...] PytorchStreamWriter failed writing file ...: file write failed")
_WRITER_FAILURE = re.compile(r"inline_container|PytorchStreamWriter|file write failed")


def _write_error(path: Path, e: BaseException) -> BaseException:
    """The one-line CheckpointWriteError of a failed write of ``path``; other errors as they are."""
    if isinstance(e, RuntimeError) and not _WRITER_FAILURE.search(str(e)):
        return e
    if isinstance(e, OSError) and e.errno is not None:
        why = os.strerror(e.errno)
    else:
        why = f"{_first_line(e)}: the disk is full, a file size limit (ulimit -f) was reached or the disk failed"
    err = CheckpointWriteError(f"could not write checkpoint {path} ({why}); {path.name} was not replaced")
    err.errno = e.errno if isinstance(e, OSError) else None
    return err


def _first_line(e: BaseException) -> str:
    """The exception's type and the first sentence of its message (C++ prefix dropped)."""
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(e).strip())
    return f"{type(e).__name__}: {text.splitlines()[0].split('. ')[0]}" if text else type(e).__name__


def _is_zip(path: Path) -> bool:
    """zipfile.is_zipfile, True also where its own check trips on a damaged archive."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # e.g. "zipfiles that span multiple disks": a damaged end record
        return True


def _pickle_globals(data: bytes) -> list[str]:
    """The globals (``module.name``) that the pickles in ``data`` name, first use first,
    read with pickletools (which unpickles nothing); stops at the first unreadable
    opcode. Several pickles may follow one another (legacy torch files)."""
    found, stream = [], io.BytesIO(data)
    while stream.tell() < len(data):
        start, recent, memo = stream.tell(), [], {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):  # Python 2 names, as pickle's fix_imports maps them
                    module, _, name = arg.partition(" ")
                    module, name = _compat_pickle.NAME_MAPPING.get(
                        (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
                    found.append(f"{module}.{name}")
                elif op.name == "STACK_GLOBAL":  # module and name: the two strings pushed last
                    if len(recent) >= 2 and all(isinstance(x, str) for x in recent[-2:]):
                        found.append(f"{recent[-2]}.{recent[-1]}")
                    recent.append(None)
                elif op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    memo[len(memo) if op.name == "MEMOIZE" else arg] = recent[-1] if recent else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    recent.append(memo.get(arg))
                elif op.stack_after:
                    recent.append(arg if isinstance(arg, str) and "UNICODE" in op.name else None)
        except Exception:  # noqa: BLE001 - damaged or not a pickle: what was read so far
            break
        if stream.tell() == start:
            break
    ok = [g for g in found if all(part.isidentifier() for part in g.split("."))]
    return list(dict.fromkeys(ok))


def _allowed_globals() -> set[str] | None:
    """The globals torch's weights_only unpickler admits, or None when torch (a private
    function) does not say."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - another torch version
        return None
    for g in torch.serialization.get_safe_globals():  # what the user allowlisted
        obj, name = g if isinstance(g, tuple) else (g, None)
        allowed.add(name or f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    return allowed


def _unsafe_globals(path: Path, torch_message: str) -> list[str]:
    """The globals in the file's pickles that weights_only loading refuses (read without
    unpickling); falls back to the one torch's message names."""
    parts = []
    try:
        if _is_zip(path):
            with zipfile.ZipFile(path) as z:
                parts = [z.read(i) for i in z.infolist()
                         if i.filename.endswith(".pkl") and i.file_size <= _SCAN_LIMIT]
        else:
            with open(path, "rb") as f:
                parts = [f.read(_SCAN_LIMIT)]
    except Exception:  # noqa: BLE001 - unreadable: torch's message is all there is
        pass
    allowed = _allowed_globals()
    names = [g for data in parts for g in _pickle_globals(data) if allowed is not None and g not in allowed]
    if not names:
        m = re.search(r"GLOBAL ([\w.]+)", torch_message)
        names = [m.group(1)] if m else []
    return list(dict.fromkeys(names))


def _zip_damage(path: Path) -> tuple[str, str] | None:
    """For a zip file: (what is wrong, what to do) when its structure cannot be read or
    a record fails its CRC-32 (which torch's reader does not check), else None. Reads
    every record."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # noqa: BLE001 - zipfile raises many kinds on a damaged archive
        return f"is a damaged zip archive ({_first_line(e)})", _OLDER
    if bad is not None:
        return f"is corrupt: its record {bad!r} fails the zip's CRC check (a flipped bit or a damaged copy)", _OLDER
    return None


def _format_problem(path: Path) -> tuple[str, str] | None:
    """(what the file is, what to do) when it is not a torch.save archive, or None when
    it looks like one (a zip with <name>/data.pkl and <name>/version records)."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if _is_zip(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        tops = {n.rsplit("/", 1)[0] for n in names if n.endswith("/data.pkl")}
        if any(f"{top}/version" in names or f"{top}/.data/version" in names for top in tops):
            return None
        held = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "") or "nothing"
        return (f"is a zip archive but not a torch.save file: expected <name>/data.pkl and <name>/version "
                f"records, it holds {held}"), _OURS
    if head.startswith(b"PK"):
        return ("is a truncated or damaged zip archive (its end, which holds the zip's table of contents, is "
                "missing or overwritten: a cut copy or a save that did not finish)"), _OLDER
    if head == _LEGACY_MAGIC:
        return "is a legacy-format (torch < 1.6) torch.save file that is truncated or corrupt", _OLDER
    return (f"is not a torch.save file: expected a zip archive (starting with b'PK'), found {head[:8]!r}...; "
            f"it is corrupt or of another format"), _OURS


def _unsafe_error(path: Path, names: list[str], torch_message: str) -> ValueError:
    """The ValueError for a file holding Python objects that unpickling would run."""
    what = (", ".join(f"GLOBAL {n}" for n in names[:3]) + (", ..." if len(names) > 3 else "") if names
            else torch_message.strip().splitlines()[0])
    return ValueError(
        f"checkpoint {path} was refused as unsafe: it holds Python objects ({what}) that loading would have to "
        f"run; ebjdat checkpoints hold only tensors and plain values; only if you trust its source, load it "
        f"with torch.load(path, weights_only=False) (or allowlist the class with "
        f"torch.serialization.add_safe_globals) and save its tensors and plain values again")


def _torch_load(path: Path, map_location):
    """torch.load with weights_only=True; every way a bad file fails becomes a ValueError
    naming it (OSErrors other than EINVAL pass through: permissions and I/O errors say
    nothing about the file's contents)."""
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): expected a torch.save zip archive; the process "
                         f"that wrote it did not finish (or the disk was full); {_OLDER}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except OSError as e:
        if e.errno not in (errno.EINVAL, None):
            raise
        err = e
    except Exception as e:  # noqa: BLE001 - zip reader (RuntimeError), a cut pickle (EOFError), KeyError, ...
        err = e
    # torch raises its own UnpicklingError (advice included) with the refusal as context
    refused = isinstance(err, pickle.UnpicklingError)
    cause = err.__context__ if refused and err.__context__ is not None else err
    # a damaged archive is corrupt, not unsafe, whatever names its damaged pickle now holds
    problem = _zip_damage(path) if _is_zip(path) else None
    if problem is None:
        names = _unsafe_globals(path, str(cause) if refused else "")
        if names or (refused and re.search(r"Can only (build|create)|unsupported class|unrecognized function",
                                           str(cause))):
            raise _unsafe_error(path, names, str(cause)) from None  # not torch's advice to load it anyway
        problem = _format_problem(path)
    if problem is None and (re.search(r"PytorchStreamReader|Couldn't parse the version", str(cause))
                            or isinstance(cause, UnicodeDecodeError)):
        # damage where the CRC-32s do not look: the headers, the names of the records
        problem = ("is a damaged zip archive: its records pass their CRC checks, but torch's zip reader cannot "
                   "read its headers or find its records"), _OLDER
    if problem is None:
        raise ValueError(f"checkpoint {path} cannot be loaded although it looks like an intact torch.save archive; "
                         f"check map_location={map_location!r} and the torch version (this is "
                         f"{torch.__version__}) (torch.load said {_first_line(cause)})") from err
    what, todo = problem
    raise ValueError(f"checkpoint {path} {what}; {todo} (torch.load said {_first_line(cause)})") from err


def _verify(path: Path, state: dict) -> dict:
    """Remove the checksum from state and check it. A file written without one (before
    checksums, or by another tool) is checked against its zip CRC-32s instead, which also
    catches a flipped bit in the checksum's own key."""
    if CHECKSUM_KEY not in state:  # older or foreign file: the zip's CRC-32s at least
        problem = _zip_damage(path) if _is_zip(path) else None
        if problem is not None:
            raise ValueError(f"checkpoint {path} {problem[0]}; {problem[1]}")
        return state
    stored = state.pop(CHECKSUM_KEY)
    if not (isinstance(stored, str) and _HEX64.fullmatch(stored)) or state_digest(state) != stored:
        raise ValueError(f"checkpoint {path} is corrupt: its contents do not match the checksum written with it "
                         f"(a flipped bit or a damaged copy); use an older checkpoint of the run")
    return state


def load_checkpoint(path, map_location="cpu") -> dict:
    """``torch.load(path, map_location=map_location, weights_only=True)``, checksum
    verified, with errors that say what is wrong with the file: FileNotFoundError when
    missing, ValueError when empty / truncated / corrupt / not a torch.save file / not a
    dict, and when it holds Python objects that loading would have to run (refused as
    unsafe, never unpickled).

    Files written with a checksum (every ``save_checkpoint`` file) are verified: a flipped
    bit anywhere in their contents is an error (the SHA-256 costs about half a second
    per GB of state on one CPU core, on load and on save). Files without one (older, or
    written by other tools) still load, checked only against the zip's CRC-32s.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise IsADirectoryError(f"checkpoint {path} is a folder; pass a file, e.g. latest_checkpoint({str(path)!r})")
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = _torch_load(path, map_location)
    if not isinstance(state, dict):  # a bad file, not a bad argument: ValueError like the others
        raise ValueError(  # noqa: TRY004
            f"checkpoint {path} holds a {type(state).__name__}, not a dict: not an ebjdat checkpoint (expected "
            f"the dict of tensors and plain values that save_checkpoint writes)")
    return _verify(path, state)


def checkpoint_path(folder, step: int) -> Path:
    """``folder/step_{step:08d}.pt``."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an integer >= 0, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    return Path(folder) / f"step_{int(step):08d}.pt"


def run_folder_of(checkpoint: Path, *, resolve: bool = True) -> Path:
    """The run folder a checkpoint belongs to: the parent of its checkpoints/ folder, else
    the folder it lies in. ``resolve=False``: the folder as the path names it (absolute,
    symbolic links not followed), i.e. the folder a user named, not where links lead."""
    folder = (Path(checkpoint).resolve() if resolve else Path(os.path.abspath(checkpoint))).parent
    return folder.parent if folder.name == "checkpoints" else folder


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
            raise FileNotFoundError(f"no checkpoint (step_N.pt) in {p} or {p / 'checkpoints'}: nothing to "
                                    f"load; pass a run folder that training wrote checkpoints into, or a "
                                    f"checkpoint file")
        return found
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return p


# ---- the run's initial distribution, beside its checkpoints --------------------------------
INIT_FILE = "init.pt"


def save_init(folder, record: dict, state) -> None:
    """Write a run's fitted class-Gaussian once into its folder as INIT_FILE (checksummed),
    so that sampling needs no dataset; ``record`` is what the checkpoints keep of it
    ({"kind", "file", "sha256"}), ``state()`` returns the tensors. The folder's own file
    is kept (a fresh run starts in an empty folder, a resume reads it back); a file that
    holds another distribution is an error, never overwritten."""
    if record["kind"] == "uniform":
        return
    path = Path(folder) / INIT_FILE
    if path.exists():
        if state_digest(load_checkpoint(path)) != record["sha256"]:
            raise ValueError(f"{path} holds another initial distribution than this run's: it belongs to "
                             f"another run; move it away, or write this run into a new folder (--out)")
        return
    save_checkpoint(path, state())


def load_init(checkpoint_file, record: dict | None, *, missing_ok: bool = False) -> dict | None:
    """The class-Gaussian state a checkpoint's ``record`` names (INIT_FILE in its run
    folder, digest checked); None for a uniform init, a checkpoint without a record, or
    (``missing_ok``: a resume fits it to the data again) a file that is not there."""
    if record is None or record.get("kind") == "uniform":
        return None
    path = run_folder_of(Path(checkpoint_file)) / record["file"]
    if missing_ok and not path.exists():
        return None
    if not path.is_file():
        raise ValueError(f"{path} is missing: the run's class-Gaussian initial distribution, kept in the run "
                         f"folder beside checkpoints/; copy it along with the checkpoint")
    state = load_checkpoint(path)
    if state_digest(state) != record["sha256"]:
        raise ValueError(f"{path} is not the initial distribution {checkpoint_file} was trained with "
                         f"(its digest differs): it belongs to another run")
    return state


# ---- the fields of a training checkpoint (Trainer.state_dict), checked before they are used ----
def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_log(v) -> bool:
    return isinstance(v, dict) and isinstance(v.get("sums"), dict) and _is_count(v.get("count")) \
        and all(isinstance(t, torch.Tensor) for t in v["sums"].values())


# field: (required, check, what it must be)
TRAINING_FIELDS = {
    "step": (True, _is_count, "an integer >= 0"),
    "config": (True, lambda v: isinstance(v, dict), "a dict of settings"),
    "model": (True, lambda v: isinstance(v, dict), "a dict of tensors (the model's state_dict)"),
    "optimizer": (True, lambda v: isinstance(v, dict), "a dict (the optimizer's state_dict)"),
    "ranks": (True, lambda v: isinstance(v, list) and v and all(isinstance(r, dict) for r in v),
              "a non-empty list of dicts (one per process)"),
    "wall_s": (False, _is_number, "a number of seconds"),
    "resumes": (False, lambda v: isinstance(v, list), "a list"),
    "log": (False, _is_log, "a dict of 'sums' (tensors) and 'count' (an integer >= 0)"),
    "init": (False, lambda v: v is None or isinstance(v, dict), "a dict or None"),
    "data": (False, lambda v: isinstance(v, dict), "a dict"),
}


def check_training_fields(path, state: dict) -> None:
    """ValueError naming the file and the first field of a training checkpoint that is
    missing or of the wrong type (a crafted or foreign file), before any of it is used."""
    for key, (required, ok, what) in TRAINING_FIELDS.items():
        if key not in state:
            if required:
                raise ValueError(f"checkpoint {path} has no {key!r}: not an ebjdat training checkpoint "
                                 f"(Trainer.save writes those)")
            continue
        if not ok(state[key]):
            shown = repr(state[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ValueError(f"checkpoint {path} field {key!r} is {type(state[key]).__name__} {shown}, expected "
                             f"{what}: the file was not written by ebjdat's trainer or was altered; "
                             f"{_OLDER}")
