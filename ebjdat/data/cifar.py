"""CIFAR-10 / CIFAR-100 from the standard python-pickle release (Krizhevsky, 2009).

Expected layout under ``root`` (``root`` may also be the batches folder itself):
    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch   (b"data", b"labels")
    cifar-100-python/train, test                                   (b"data", b"fine_labels")
b"data" is (N, 3072) uint8, each row a 3x32x32 image in CHW order. These are the files
torchvision downloads; with ``download=True`` and torchvision installed, a missing set is
fetched through ``torchvision.datasets.CIFAR10/100(root, download=True)``.

The batches are pickles, and unpickling an arbitrary file runs whatever code it names, so
they are read with a restricted unpickler that admits only what a CIFAR batch holds (a
dict of bytes, lists, ints and one uint8 numpy array): a crafted file under ``root`` is
refused with a ValueError before any of it runs. Nor can a file make the loader allocate
more than it holds: every length field is checked against the bytes that follow it before
unpickling, an array's size comes only from the bytes pickled for it, and b"data" given as
lists of rows may not hold more values than the file has bytes (a row repeated through
the pickle's memo). b"data" must be uint8 (or integers in [0, 255]) and the labels
integers in [0, n_classes), one per row: anything else is a ValueError naming the file and
the field, never a silent cast.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import torch

from .base import Dataset, check_n, check_split, fit_size, subset, to_unit_range
from .checks import class_labels, fits, image_bytes

try:  # numpy >= 2 (numpy.core is a deprecated alias there)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

__all__ = ["default_root", "load_cifar"]

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_FIX = f"replace it with the file from the python version of the dataset ({URL})"

# name -> (folder, train files, test files, label key, n_classes, torchvision class)
_SPECS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100, "CIFAR100"),
}


def default_root() -> Path:
    """``$EBJDAT_DATA`` when set, else ``./data`` (torchvision's customary folder)."""
    return Path(os.environ.get("EBJDAT_DATA", "data"))


def _find(root: Path, folder: str, files: list[str]) -> Path | None:
    """The folder holding all of ``files``: root itself or root/folder; None if neither."""
    for cand in (root, root / folder):
        if all((cand / f).is_file() for f in files):
            return cand
    return None


def _download(name: str, root: Path, folder: str) -> bool:
    """Fetches both splits with torchvision into root's parent-of-batches; False when
    torchvision is missing."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return False
    parent = root.parent if root.name == folder else root
    cls = getattr(tvd, _SPECS[name][5])
    for train in (True, False):
        cls(str(parent), train=train, download=True)
    return True


def _latin1(text, encoding):
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2: the Latin-1 encoding of
    a str. Nothing else: any other codec is not what a batch holds."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return codecs.encode(text, "latin1")


class _Array(np.ndarray):
    """The ndarray a batch names, for numpy's ``_reconstruct`` only: it is created empty
    and filled by ``__setstate__`` from bytes held in the file, so its size is bounded by
    the file. Calling it (REDUCE numpy.ndarray(shape)) would allocate any shape: refused."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("it calls numpy.ndarray directly, which allocates any shape it is given")

    def __setstate__(self, state):
        # (version, shape, dtype, fortran, rawdata): numpy checks len(rawdata) against the
        # shape for plain dtypes; an object dtype would allocate the shape from a list instead
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("its array state is not numpy's (version, shape, dtype, order, bytes)")
        dtype, raw = state[-3], state[-1]
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise pickle.UnpicklingError(f"it holds an array of Python objects ({dtype}), not of numbers")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"its array data is a {type(raw).__name__}, not bytes")
        super().__setstate__(state)


def _empty_array(subtype, shape, dtype):
    """numpy's ``_reconstruct`` as a pickled ndarray calls it: ``(ndarray, (0,), 'b')``, an
    empty array that BUILD then fills. Another shape would allocate memory that no byte of
    the file backs (2**50 elements are a petabyte)."""
    if subtype is not _Array or shape != (0,):
        raise pickle.UnpicklingError(f"it calls numpy's _reconstruct with shape {shape!r:.60}; a pickled "
                                     f"array passes (0,) and the data separately")
    return _reconstruct(_Array, (0,), dtype)


# every global a CIFAR batch names: numpy's array reconstruction (under its numpy 1 name,
# which the Python 2 release uses, and its numpy 2 name) and bytes re-pickled by Python 3
_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class _NotABatch(ValueError):
    """A file names a global that no CIFAR batch holds; it was not unpickled further."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch and refuses every other global: a crafted file cannot
    make loading import or call anything (a plain pickle.load would run it)."""

    def __init__(self, file, path: Path):
        # The standard release is a Python 2 pickle of a dict with bytes keys.
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        try:
            return _BATCH_GLOBALS[(module, name)]
        except KeyError:
            raise _NotABatch(
                f"{self.path} is not a CIFAR batch and was not loaded: it refers to the Python global "
                f"{module}.{name}, which unpickling would import and run; a CIFAR batch holds only a dict of "
                f"bytes, lists, ints and a numpy array. Replace the file with the one from the python version "
                f"of the dataset (https://www.cs.toronto.edu/~kriz/cifar.html)") from None


def _check_lengths(raw: bytes, path: Path) -> None:
    """Walks the pickle's opcodes without building anything: a length field (BINBYTES8,
    BINUNICODE8, a FRAME...) larger than the rest of the file is refused here, because the
    unpickler allocates that length before it reads a byte of it."""
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(raw)):
            if op.name == "FRAME":   # genops does not read a frame's bytes; the others it reads
                fits(path, f"is not a readable CIFAR batch: its pickle frame at byte {pos}", arg,
                     len(raw) - pos - 9, _FIX)
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path} is not a readable CIFAR batch ({e}): expected a pickled dict from the python "
                         f"version of the dataset; it is truncated, crafted or of another format: {_FIX}") from None


# what a damaged or crafted pickle raises inside the unpickler (the C unpickler's own
# errors, a global called with arguments it rejects, BUILD on an object without state)
_DAMAGED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            OverflowError, struct.error)


def _unpickle(path: Path):
    """The object pickled in path, through _BatchUnpickler, after _check_lengths; a file
    that is not a pickle (truncated, crafted, another format) is a ValueError naming it."""
    raw = path.read_bytes()
    _check_lengths(raw, path)
    try:
        return _BatchUnpickler(io.BytesIO(raw), path).load()
    except _NotABatch:
        raise
    except _DAMAGED as e:
        raise ValueError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}): expected a pickled "
                         f"dict from the python version of the dataset; it is truncated or of another format: "
                         f"extract the archive again") from e


def _rows(data, path: Path, size: int) -> np.ndarray:
    """b"data" as an (N, 3072) array of its own dtype. Lists of rows are admitted only when
    they hold no more values than the file has bytes (each pickled value takes at least
    one): rows repeated through the memo would otherwise decode to gigabytes."""
    if isinstance(data, _Array):
        return data.view(np.ndarray)
    if not isinstance(data, (list, tuple)):
        raise ValueError(  # noqa: TRY004 - a file's content, not an argumentf"{path}: field 'data' holds a {type(data).__name__}; expected a uint8 numpy array of "
                         f"shape (N, 3072); {_FIX}")
    if any(not isinstance(r, (list, tuple)) or len(r) != 3072 for r in data):
        raise ValueError(f"{path}: field 'data' is a list whose rows are not lists of 3072 values; expected "
                         f"(N, 3072) uint8; {_FIX}")
    if len(data) * 3072 > size:
        raise ValueError(f"{path}: field 'data' holds {len(data)} rows, {len(data) * 3072} values, more than the "
                         f"{size} bytes of the file can hold (rows repeated by reference); {_FIX}")
    bad = next((v for r in data for v in r if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise ValueError(f"{path}: field 'data' holds {type(bad).__name__} values; expected uint8 images in "
                         f"[0, 255]; {_FIX}")
    return np.asarray(data, dtype=np.int64)


def _read(path: Path, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, 32, 32) uint8, y (N,) int64 in [0, n_classes)) of one batch file; every
    field checked (module docstring)."""
    d = _unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise ValueError(f"{path} is not a CIFAR batch: expected a dict with keys b'data' "
                         f"and {label_key!r}")
    data = image_bytes(_rows(d[b"data"], path, path.stat().st_size), path, "data", _FIX)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' has shape {data.shape}, expected (N, 3072)")
    y = class_labels(d[label_key], path, label_key.decode(), data.shape[0], _FIX, 0, n_classes - 1)
    return data.reshape(-1, 3, 32, 32), y


def load_cifar(name: str, split: str = "train", *, root=None, image_size: int | None = None,
               n: int | None = None, download: bool = False, seed: int = 0) -> Dataset:
    """CIFAR-10/100 as a Dataset: x (N, 3, 32, 32) float32 in [-1, 1] (x/255, normalised),
    y the (fine) labels; augmentation defaults pad 4 + horizontal flip (the JEM recipe)."""
    if name not in _SPECS:
        raise ValueError(f"name must be one of {tuple(_SPECS)}, got {name!r}")
    folder, train_files, test_files, label_key, n_classes, _ = _SPECS[name]
    files = test_files if check_split(split) == "test" else train_files
    n = check_n(n)
    root = Path(root).expanduser() if root is not None else default_root()

    where, fetched = _find(root, folder, files), None
    if where is None and download:
        fetched = _download(name, root, folder)
        where = _find(root, folder, files)
    if where is None:
        raise FileNotFoundError(
            f"{name} {split} files not found under {root} (looked in {root} and {root / folder} "
            f"for {', '.join(files)}). Put the python version of the dataset there "
            f"(https://www.cs.toronto.edu/~kriz/cifar.html: extract the archive so that "
            f"{root / folder / files[0]} exists), or pass download=True with torchvision "
            f"installed on a machine that is online"
            + (" (download=True was given, but torchvision is not importable: "
               "pip install torchvision)" if fetched is False else ""))

    parts = [_read(where / f, label_key, n_classes) for f in files]
    x8 = np.concatenate([p[0] for p in parts])
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    x8, y = subset(torch.from_numpy(x8), y, n, seed, f"{name}/{split}")  # before the float copy
    x = to_unit_range(x8.to(torch.float32) / 255.0)
    return Dataset(fit_size(x, image_size).contiguous(), y, n_classes, name, pad=4, flip=True)
