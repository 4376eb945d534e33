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
refused with a ValueError before any of it runs.
"""
from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import Dataset, check_n, check_split, fit_size, subset, to_unit_range

try:  # numpy >= 2 (numpy.core is a deprecated alias there)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

__all__ = ["default_root", "load_cifar"]

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


# every global a CIFAR batch names: numpy's array reconstruction (under its numpy 1 name,
# which the Python 2 release uses, and its numpy 2 name) and bytes re-pickled by Python 3
_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
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


def _unpickle(path: Path):
    """The object pickled in path, through _BatchUnpickler; a file that is not a pickle
    (truncated, another format) is a ValueError naming it."""
    with open(path, "rb") as f:
        try:
            return _BatchUnpickler(f, path).load()
        except (_NotABatch, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - a damaged pickle fails in many ways
            raise ValueError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}): expected a pickled "
                             f"dict from the python version of the dataset; it is truncated or of another format: "
                             f"extract the archive again") from e


def _read(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise ValueError(f"{path} is not a CIFAR batch: expected a dict with keys b'data' "
                         f"and {label_key!r}")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' has shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), np.asarray(d[label_key], dtype=np.int64)


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

    parts = [_read(where / f, label_key) for f in files]
    x8 = np.concatenate([p[0] for p in parts])
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{name}: labels outside [0, {n_classes})")
    x8, y = subset(torch.from_numpy(x8), y, n, seed, f"{name}/{split}")  # before the float copy
    x = to_unit_range(x8.to(torch.float32) / 255.0)
    return Dataset(fit_size(x, image_size).contiguous(), y, n_classes, name, pad=4, flip=True)
