"""The decoded-image cache: image files are decoded once into one uint8 ``.npz`` beside the
data, and later loads read that file instead of decoding again.

Where: ``<data folder>/.ebjdat_cache/<key>.npz`` (key: dataset, split, size), or, when
``$EBJDAT_CACHE`` is set (a read-only data folder), ``$EBJDAT_CACHE/<folder name>-<hash of
its absolute path>/<key>.npz``. A ``<key>.json`` beside it says what it was built from
(for people; the check reads the copy inside the npz).

Provenance: the npz holds, as a JSON string, the dataset, split, size, the cache format
version, the Pillow version (another libjpeg may decode differently) and a SHA-256 of the
source listing: every source file's relative path, size and modification time (ns), in
the order the samples are read. A load uses the cache only when all of it equals what the
folder has now; otherwise (a file added, removed, replaced or touched; another Pillow; a
cache of another dataset copied in; a damaged or truncated file) it decodes again and
replaces the cache. Contents are not hashed: a 100,000-file listing is stat()ed in well
under a second, reading every byte would cost what the cache saves.

Writes are atomic (a temp file in the cache folder, fsync, ``os.replace``): a killed
process leaves the old cache or the new one, never a partial one under the name; two
processes (DDP ranks) building at once both write complete files and the last rename
wins. A cache folder that cannot be written is a warning, not an error: the data are used
decoded, uncached.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["CACHE_DIR", "CACHE_VERSION", "cache_folder", "cached", "listing_digest"]

CACHE_DIR = ".ebjdat_cache"
CACHE_VERSION = 2   # bump when the decoding changes what a cache holds (2: 16-bit images scaled)
_PROVENANCE = "provenance"


def cache_folder(root: Path) -> Path:
    """Where the cache of the data folder ``root`` lives (module docstring)."""
    env = os.environ.get("EBJDAT_CACHE")
    if not env:
        return root / CACHE_DIR
    where = str(root.expanduser().resolve())
    return Path(env).expanduser() / f"{root.resolve().name}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


def listing_digest(root: Path, files: Sequence[Path]) -> str:
    """SHA-256 of (path relative to root, size, mtime_ns) of each file, in the given order."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read(path: Path, want: str, check: Callable[[dict], str | None]) -> tuple[dict | None, str]:
    """(arrays, "") when path is a readable cache whose provenance is ``want`` and whose
    arrays pass ``check``; (None, why not) otherwise."""
    if not path.is_file():
        return None, "absent"
    try:
        with open(path, "rb") as f:   # closed on every failure too
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                return None, "unreadable"
            with z:
                if _PROVENANCE not in z.files or str(z[_PROVENANCE]) != want:
                    return None, "stale"
                arrays = {k: z[k] for k in z.files if k != _PROVENANCE}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None, "unreadable"
    why = check(arrays)
    return (None, f"malformed: {why}") if why else (arrays, "")


def _write_atomic(path: Path, write: Callable) -> None:
    """write(file object) into a temp file beside path, fsync, rename onto path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)   # mkstemp makes 0600; a cache of public data is no secret
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cached(root: Path, key: str, provenance: dict, build: Callable[[], dict],
           check: Callable[[dict], str | None] = lambda arrays: None) -> tuple[dict, str]:
    """(arrays, status): the numpy arrays ``build()`` returns, read from the cache of
    ``root`` under ``key`` when its provenance equals ``provenance`` (a JSON-able dict, to
    which the cache version is added) and ``check(arrays)`` finds nothing wrong (it returns
    None, or what is wrong); otherwise built and written to the cache.

    status: "hit" (read from the cache), "built" (no cache yet), "rebuilt" (the cache was
    stale, damaged or malformed and is replaced) or "uncached" (built; the cache folder
    could not be written, a warning says so)."""
    want = json.dumps({"cache_version": CACHE_VERSION, **provenance}, sort_keys=True)
    folder = cache_folder(root)
    path = folder / f"{key}.npz"
    arrays, why = _read(path, want, check)
    if arrays is not None:
        return arrays, "hit"
    arrays = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, lambda f: np.savez(f, **arrays, **{_PROVENANCE: np.array(want)}))
        text = json.dumps({**json.loads(want), "root": str(root.expanduser().resolve()),
                           "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()}}, indent=1)
        _write_atomic(folder / f"{key}.json", lambda f: f.write(text.encode()))
    except OSError as e:
        warnings.warn(f"could not write the decoded-image cache {path} ({type(e).__name__}: {e}); the data "
                      f"will be decoded again at every load: make {folder} writable or set EBJDAT_CACHE to "
                      f"a writable folder", stacklevel=3)
        return arrays, "uncached"
    return arrays, "built" if why == "absent" else "rebuilt"
