"""Downsampled ImageNet, 32x32 and 64x64 (Chrabaszcz, Loshchilov & Hutter, 2017), the npz
release (https://image-net.org/download-images.php, "Imagenet32" / "Imagenet64").

Expected files, for s = 32 or 64, each in ``root``, ``root/imagenet<s>`` or a folder
``Imagenet<s>_*`` inside either (the archives' own folders, e.g. ``Imagenet32_train_npz``,
``Imagenet64_train_part1_npz``, ``Imagenet64_val_npz``)::

    train_data_batch_1.npz .. train_data_batch_10.npz     1,281,167 images in all
    val_data.npz                                          50,000 (the "test" split)

Each npz holds ``data``, (N, 3*s*s) uint8 rows, an image's R, G and B planes one after
the other, each row-major (CHW flattened), and ``labels``, (N,) class numbers 1..1000;
a ``mean`` array, where present, is not used. Read with ``allow_pickle=False``: arrays
only, nothing in a file can run code.

Classes: 1000 (label - 1), or a subset with ``classes`` (a count k: the first k classes;
a file or list of 0-based class indices), applied batch by batch before anything is
converted to float. Before an array is read, the size its header states must be the size
the archive holds for it (which, deflated, is at most 1032 times its compressed bytes):
a crafted header cannot make the reader allocate what the file does not hold. Memory: the whole 64x64 training set is 15.7 GB as uint8 and 63 GB as
the float32 a Dataset holds; 100 classes need a tenth of that.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .base import Dataset, check_split, class_list, finish, keep_classes
from .cifar import default_root

__all__ = ["load_imagenet"]

URL = "https://image-net.org/download-images.php"
N_CLASSES = 1000
TRAIN_FILES = [f"train_data_batch_{i}.npz" for i in range(1, 11)]
TEST_FILES = ["val_data.npz"]


def _folders(root: Path, side: int) -> list[Path]:
    """root, root/imagenet<s>, and the Imagenet<s>_* folders inside either."""
    out = []
    for base in (root, root / f"imagenet{side}"):
        if base.is_dir():
            out.append(base)
            out += sorted(p for p in base.iterdir() if p.is_dir() and p.name.lower().startswith(f"imagenet{side}_"))
    return out


def _find(root: Path, side: int, files: list[str], split: str) -> list[Path]:
    folders = _folders(root, side)
    found, missing = [], []
    for f in files:
        hit = next((d / f for d in folders if (d / f).is_file()), None)
        (found if hit else missing).append(hit or f)
    if missing:
        raise FileNotFoundError(
            f"imagenet{side} {split}: {', '.join(missing)} not found (looked in "
            f"{', '.join(str(d) for d in folders) or root}). Expected the npz release of downsampled ImageNet "
            f"{side}x{side}: train_data_batch_1.npz .. train_data_batch_10.npz and val_data.npz, in {root}, "
            f"{root / f'imagenet{side}'} or the Imagenet{side}_* folders the archives extract to; get them from "
            f"{URL} (Imagenet{side}, npz format)")
    return found


# deflate's largest expansion (a run of one byte): a member claiming more is not deflate output
_DEFLATE_MAX_RATIO = 1032
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _stored_bytes(info: zipfile.ZipInfo, path: Path) -> int:
    """What the archive can hold for a member: its size, checked against what its compressed
    bytes can expand to (a directory entry may state any size)."""
    limit = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _DEFLATE_MAX_RATIO}.get(info.compress_type)
    if limit is None:
        raise ValueError(f"{path}: member {info.filename} is compressed with method {info.compress_type}, which "
                         f"numpy's savez does not write; download the npz release again from {URL}")
    if info.file_size > info.compress_size * limit + 64:
        raise ValueError(f"{path}: member {info.filename} states {info.file_size} bytes, more than its "
                         f"{info.compress_size} compressed bytes can hold (crafted); download it again from {URL}")
    return info.file_size


def _check_sizes(z, path: Path, names: tuple[str, ...]) -> None:
    """Each named array's header against the bytes the archive holds for it, before numpy
    allocates the header's shape (np.load allocates first, then reads)."""
    for name in names:
        member = name + ".npy" if name + ".npy" in z.zip.namelist() else name
        info = z.zip.getinfo(member)
        with z.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                raise ValueError(f"{path}: array '{name}' is in .npy format {version}; expected 1.0 or 2.0 "
                                 f"(numpy.savez); download it again from {URL}")
            shape, _, dtype = _HEADER_READERS[version](f)
            need, have = int(np.prod(shape, dtype=object)) * dtype.itemsize, _stored_bytes(info, path) - f.tell()
        if need != have and not dtype.hasobject:   # object arrays: np.load refuses them (allow_pickle=False)
            raise ValueError(f"{path}: array '{name}' states shape {shape} of {dtype}, {need} bytes, but the archive "
                             f"holds {have} bytes for it (truncated or crafted); download it again from {URL}")


def read_batch(path: Path, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, s, s) uint8, y (N,) int64 in [0, 1000)) of one npz batch."""
    try:
        with open(path, "rb") as f:   # closed on every failure too
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError(f"{path} holds a single array, not an npz archive of 'data' and 'labels'")
            with z:
                if "data" not in z.files or "labels" not in z.files:
                    raise ValueError(f"{path}: expected arrays 'data' and 'labels', found {sorted(z.files)}")
                _check_sizes(z, path, ("data", "labels"))
                data, labels = z["data"], z["labels"]
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path} is not a readable npz batch ({e}); the npz release holds plain arrays: "
                         f"download it again from {URL}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable npz batch ({type(e).__name__}: {e}): truncated or another "
                         f"format; download it again from {URL} (npz format)") from None
    row = 3 * side * side
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise ValueError(f"{path}: 'data' is {data.shape} {data.dtype}, expected (N, {row}) uint8 rows of "
                         f"{side}x{side} images (is this the Imagenet{side} file?)")
    labels = np.asarray(labels).reshape(-1)
    if labels.size != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must hold {data.shape[0]} integers (one per row), got "
                         f"{labels.size} of {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > N_CLASSES):
        raise ValueError(f"{path}: labels must be 1..{N_CLASSES}, got values in [{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, side, side), labels - 1


def load_imagenet(side: int, split: str = "train", *, root=None, image_size: int | None = None,
                  n: int | None = None, seed: int = 0, classes=None) -> Dataset:
    """Downsampled ImageNet (side 32 or 64) as a Dataset: x (N, 3, s, s) float32 in
    [-1, 1] (fit_size to image_size), y in [0, 1000) or [0, k) with ``classes``; pad
    side // 8, flip."""
    if side not in (32, 64):
        raise ValueError(f"side must be 32 or 64, got {side!r}")
    split = check_split(split)
    keep = class_list(classes, N_CLASSES, f"imagenet{side}")
    root = Path(root).expanduser() if root is not None else default_root()
    paths = _find(root, side, TRAIN_FILES if split == "train" else TEST_FILES, split)
    xs, ys = [], []
    for p in paths:   # class subset per batch: only the kept rows are ever held together
        x, y = keep_classes(*read_batch(p, side), keep, N_CLASSES)
        xs.append(x)
        ys.append(y)
    x8 = xs[0] if len(xs) == 1 else np.concatenate(xs)
    y = ys[0] if len(ys) == 1 else np.concatenate(ys)
    return finish(x8, y, N_CLASSES if keep is None else len(keep), f"imagenet{side}", split, n=n, seed=seed,
                  image_size=image_size)
