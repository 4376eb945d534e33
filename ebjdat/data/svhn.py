"""SVHN, the cropped-digits format (Netzer et al., 2011; http://ufldl.stanford.edu/housenumbers/).

Expected layout under ``root`` (``root`` may also be ``root/svhn``)::

    train_32x32.mat    X: (32, 32, 3, N) uint8, y: (N, 1) labels 1..10 (10 is the digit 0)
    test_32x32.mat

(``extra_32x32.mat`` is not read.) The files are MATLAB v5 files, read with
``scipy.io.loadmat`` (scipy is optional: ``pip install scipy``). They hold arrays only,
so nothing in them can run code. 10 classes, the digit is the label; no horizontal flip
(a mirrored digit is another digit or none), crop padding 4 (image_size // 8 when enlarged).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Dataset, check_split, class_list, finish, keep_classes
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


def _find(root: Path, file: str) -> Path:
    for cand in (root, root / "svhn"):
        if (cand / file).is_file():
            return cand / file
    raise FileNotFoundError(f"svhn: {file} not found (looked in {root} and {root / 'svhn'}). Expected the "
                            f"cropped-digits files train_32x32.mat and test_32x32.mat (format 2) from {URL}, "
                            f"saved under {root}")


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, 32, 32) uint8, y (N,) int64 in [0, 10)) of one SVHN .mat file."""
    loadmat = _loadmat()
    try:
        d = loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds on a damaged file
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
    y = y.reshape(-1).astype(np.int64)
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
