"""SVHN, the cropped-digits format (Netzer et al., 2011; http://ufldl.stanford.edu/housenumbers/).

Expected layout under ``root`` (``root`` may also be ``root/svhn``)::

    train_32x32.mat    X: (32, 32, 3, N) uint8, y: (N, 1) labels 1..10 (10 is the digit 0)
    test_32x32.mat

(``extra_32x32.mat`` is not read.) The files are MATLAB v5 files, read with
``scipy.io.loadmat`` (scipy is optional: ``pip install scipy``). They hold arrays only,
so nothing in them can run code. Before scipy reads a file, every element length in it
(within compressed elements too) is checked against the bytes that follow, and a compressed
element may expand to at most 16 times the file's size: scipy allocates a stated length
before reading it. y may be integers or whole-number doubles (MATLAB's default). 10 classes, the digit is the label; no horizontal flip
(a mirrored digit is another digit or none), crop padding 4 (image_size // 8 when enlarged).
"""
from __future__ import annotations

import mmap
import struct
import zlib
from pathlib import Path

import numpy as np

from .base import Dataset, check_split, class_list, finish, keep_classes
from .checks import class_labels, fits
from .cifar import default_root

__all__ = ["load_svhn"]

URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _loadmat():
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError("svhn reads the .mat files with scipy, which is not installed: pip install scipy") from None
    return loadmat


def _mat_read_error() -> type:
    """scipy's MatReadError (an Exception subclass, not a ValueError)."""
    from scipy.io.matlab import MatReadError
    return MatReadError


def _find(root: Path, file: str) -> Path:
    for cand in (root, root / "svhn"):
        if (cand / file).is_file():
            return cand / file
    raise FileNotFoundError(f"svhn: {file} not found (looked in {root} and {root / 'svhn'}). Expected the "
                            f"cropped-digits files train_32x32.mat and test_32x32.mat (format 2) from {URL}, "
                            f"saved under {root}")


_MI_MATRIX, _MI_COMPRESSED = 14, 15   # MATLAB v5 element types that hold further elements
_FIX = f"download it again from {URL}"


def _inflate(data, path: Path, pos: int, limit: int) -> bytes:
    """A compressed element's bytes, decompressed to at most limit bytes."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise ValueError(f"{path}: the compressed MATLAB element at byte {pos} is damaged ({e}); {_FIX}") from None
    if d.unconsumed_tail:
        raise ValueError(f"{path}: the compressed MATLAB element at byte {pos} expands to more than {limit} bytes "
                         f"(16 times the file's size; crafted); {_FIX}")
    return out


def _check_elements(buf, path: Path, start: int, end: int, order: str, limit: int, depth: int = 0) -> None:
    """Every element tag in buf[start:end] (a MATLAB v5 element stream): its byte count
    must fit in the bytes that follow; matrices and compressed elements are walked into."""
    pos = start
    while pos + 8 <= end:
        word, count = struct.unpack_from(order + "II", buf, pos)
        if word >> 16:   # a small element: its (<= 4) data bytes are inside the 8-byte tag
            pos += 8
            continue
        where = "the MATLAB element" if depth == 0 else "a MATLAB element (inside a matrix)"
        fits(path, f"{where} at byte {pos}", count, end - pos - 8, _FIX)
        body = pos + 8
        if word == _MI_COMPRESSED:
            inner = _inflate(buf[body:body + count], path, pos, limit)
            _check_elements(inner, path, 0, len(inner), order, limit, depth + 1)
            pos = body + count   # compressed elements are not padded
            continue
        if word == _MI_MATRIX and depth < 8:
            _check_elements(buf, path, body, body + count, order, limit, depth + 1)
        pos = body + count + (-count) % 8


def check_mat_lengths(path: Path) -> None:
    """Checks the element lengths of a MATLAB v5 file (module docstring) before scipy
    allocates them; other formats (v4, v7.3) are left to scipy."""
    size = path.stat().st_size
    if size < 128:
        return   # no v5 header: scipy says what the file is not
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        order = {b"IM": "<", b"MI": ">"}.get(bytes(buf[126:128]))
        if order is not None:
            _check_elements(buf, path, 128, size, order, 16 * size + 2 ** 20)


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, 32, 32) uint8, y (N,) int64 in [0, 10)) of one SVHN .mat file."""
    loadmat = _loadmat()
    check_mat_lengths(path)
    try:
        d = loadmat(str(path))
    except (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, NotImplementedError, struct.error,
            zlib.error, _mat_read_error()) as e:   # what scipy raises on a damaged file
        raise ValueError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e}); download it again "
                         f"from {URL}") from None
    X, y = d.get("X"), d.get("y")
    if not isinstance(X, np.ndarray) or X.dtype != np.uint8 or X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: expected X of shape (32, 32, 3, N) uint8, got "
                         f"{getattr(X, 'shape', None)} {getattr(X, 'dtype', type(X).__name__)}; this is not an SVHN "
                         f"cropped-digits file ({URL}, format 2)")
    if not isinstance(y, np.ndarray) or y.size != X.shape[3]:
        raise ValueError(f"{path}: expected y of shape ({X.shape[3]}, 1) (one label per image), got "
                         f"{getattr(y, 'shape', None)}")
    y = class_labels(y, path, "y", X.shape[3], _FIX, floats=True)
    if y.size and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels must be 1..10 (10 is the digit 0), got values in [{y.min()}, {y.max()}]")
    # (H, W, C, N) -> (N, C, H, W); the digit 0 is stored as 10
    return np.ascontiguousarray(X.transpose(3, 2, 0, 1)), y % 10


def load_svhn(split: str = "train", *, root=None, image_size: int | None = None, n: int | None = None,
              seed: int = 0, classes=None) -> Dataset:
    """SVHN as a Dataset: x (N, 3, 32, 32) float32 in [-1, 1] (fit_size to image_size),
    y the digit 0..9 (or [0, k) with ``classes``); pad 4 (at 32), no flip."""
    split = check_split(split)
    keep = class_list(classes, 10, "svhn")
    root = Path(root).expanduser() if root is not None else default_root()
    x8, y = keep_classes(*read_mat(_find(root, FILES[split])), keep, 10)
    return finish(x8, y, 10 if keep is None else len(keep), "svhn", split, n=n, seed=seed,
                  image_size=image_size, flip=False)
