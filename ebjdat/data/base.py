"""What every dataset loader shares: the Dataset record, the [-1, 1] normalisation, resizing,
seeded subsets, class subsets and the split / count checks (the loaders import it; it
imports none of them)."""
from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checks import read_text

SPLITS = ("train", "test")


@dataclass(eq=False)  # == on tensors is elementwise; identity comparison is the sane default
class Dataset:
    """A labelled image set held as two tensors.

    x: (N, C, H, W) float32 in [-1, 1]; y: (N,) int64 in [0, n_classes).
    ``pad`` / ``flip``: the default augmentation a :class:`~ebjdat.data.Loader` applies
    with ``augment=True`` (reflect-pad by ``pad`` then random crop; random horizontal flip).
    """

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    name: str
    pad: int = 0
    flip: bool = False

    def __post_init__(self):
        if not isinstance(self.x, torch.Tensor) or self.x.dim() != 4 or not self.x.is_floating_point():
            raise ValueError(f"x must be a (N, C, H, W) float tensor, got "
                             f"{tuple(self.x.shape) if isinstance(self.x, torch.Tensor) else type(self.x).__name__}")
        if not isinstance(self.y, torch.Tensor) or self.y.dim() != 1 or self.y.dtype != torch.int64:
            raise ValueError("y must be a (N,) int64 tensor")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")
        if isinstance(self.pad, bool) or not isinstance(self.pad, numbers.Integral) or self.pad < 0:
            raise ValueError(f"pad must be an int >= 0, got {self.pad!r}")

    @property
    def image_size(self) -> int:
        return int(self.x.shape[2])

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:  # the default would print both tensors
        return (f"Dataset(name={self.name!r}, n={len(self)}, shape={tuple(self.x.shape[1:])}, "
                f"n_classes={self.n_classes}, pad={self.pad}, flip={self.flip})")


def to_unit_range(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the published code's ``(x - 0.5) / 0.5``."""
    return (x01 - 0.5) / 0.5


def fit_size(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """(N, C, h, w) in [-1, 1] -> (N, C, size, size); square inputs only.

    size a multiple of h: bilinear upsampling (align_corners=False, antialias off: an
    upsample has nothing to alias). Otherwise, size > h: centred zero padding *in [0, 1]
    units*, i.e. pad value -1 here (the extra row/column, when odd, goes bottom/right).
    Smaller sizes are refused: downsampling would discard detail silently.
    """
    h = x.shape[-1]
    if size is None or size == h:
        return x
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < h:
        raise ValueError(f"image_size must be an int >= {h} (the native size), got {size!r}")
    if size % h == 0:
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=False)
    lo = (size - h) // 2
    hi = size - h - lo
    return F.pad(x, (lo, hi, lo, hi), value=-1.0)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_n(n, default: int | None = None) -> int | None:
    if n is None:
        return default
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be None or an int >= 1, got {n!r}")
    return int(n)


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int, name: str):
    """A seeded random subset of n samples, kept in their original order; None: all."""
    if n is None or n == len(y):
        return x, y
    if n > len(y):
        raise ValueError(f"n={n} exceeds the {len(y)} samples of {name}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)[:n].sort().values
    return x[idx], y[idx]


def hold_out(ds: "Dataset", n: int, seed: int) -> "Dataset":
    """ds without n of its samples, drawn by a seeded permutation (JEM++ trains on 45,000
    of CIFAR's 50,000 images); the kept samples stay in their original order."""
    if n == 0:
        return ds
    if not 0 < n < len(ds):
        raise ValueError(f"holdout={n} must be in [0, {len(ds)}): the training split has {len(ds)} images")
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(ds), generator=g)[n:].sort().values
    return dataclasses.replace(ds, x=ds.x[keep], y=ds.y[keep])


def from_uint8(x8) -> torch.Tensor:
    """(N, C, H, W) uint8 (numpy or torch) -> float32 in [-1, 1], exactly
    ``to_unit_range(x8 / 255)``, with one float32 copy (in-place arithmetic: the whole of
    ImageNet-64 is 63 GB as float32, a second temporary would not fit)."""
    x = torch.as_tensor(x8).to(torch.float32)
    return x.div_(255.0).sub_(0.5).div_(0.5)


def default_pad(size: int) -> int:
    """The random-crop padding of a size x size dataset: 4 pixels at 32 (the JEM recipe),
    scaled with the image (8 at 64, 12 at 96)."""
    return max(1, size // 8)


# ---- class subsets ---------------------------------------------------------------------
def class_list(classes, n_classes: int, name: str) -> np.ndarray | None:
    """The original class indices a run keeps, in their new label order, or None for all.

    classes: None (all); an int k (the first k classes, 0..k-1); a sequence of 0-based
    class indices; or a path (str / Path) to a text file of them, separated by spaces,
    commas or newlines, ``#`` starting a comment. Label i of the result is the i-th listed
    class. Duplicates, indices outside [0, n_classes) and empty lists are errors."""
    if classes is None:
        return None
    if isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        if not 1 <= classes <= n_classes:
            raise ValueError(f"classes={classes}: {name} has {n_classes} classes; a count must be in "
                             f"[1, {n_classes}]")
        return np.arange(int(classes))
    if isinstance(classes, (str, os.PathLike)):
        return _check_list(read_class_file(Path(classes), name), n_classes, f"classes file {classes}")
    if isinstance(classes, (list, tuple)) and all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in classes):
        return _check_list([int(c) for c in classes], n_classes, "classes")
    raise TypeError(f"classes must be None, a count (int), a list of class indices or the path of a "
                    f"file of them, got {type(classes).__name__} {classes!r}")


def read_class_file(path: Path, name: str) -> list[int]:
    """The integers of a classes file, in order (checked by class_list, not here); a
    missing file or a token that is no integer is an error naming the file (and line)."""
    try:
        text = read_text(path.expanduser(), "classes file")
    except FileNotFoundError:
        raise FileNotFoundError(f"classes file {path} does not exist: pass a count (the first k classes of "
                                f"{name}) or a text file of 0-based class indices") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        for tok in line.split("#", 1)[0].replace(",", " ").split():
            try:
                out.append(int(tok))
            except ValueError:
                raise ValueError(f"classes file {path}, line {i}: {tok!r} is not an integer; the file "
                                 f"holds 0-based class indices separated by spaces, commas or newlines "
                                 f"(# starts a comment)") from None
    return out


def _check_list(idx: list[int], n_classes: int, what: str) -> np.ndarray:
    if not idx:
        raise ValueError(f"{what} lists no class")
    bad = [c for c in idx if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"{what}: class {bad[0]} is outside [0, {n_classes}) (indices are 0-based)")
    seen: set[int] = set()
    for c in idx:
        if c in seen:
            raise ValueError(f"{what}: class {c} is listed twice")
        seen.add(c)
    return np.asarray(idx, dtype=np.int64)


def keep_classes(x: np.ndarray, y: np.ndarray, keep: np.ndarray | None, n_classes: int):
    """The rows of (x, y) whose class is in ``keep`` (class_list's result), labels remapped
    to their position in ``keep``; (x, y) unchanged for None. Works on numpy arrays, so a
    batch is cut down before it is converted to float (ImageNet: 1000 classes)."""
    if keep is None:
        return x, y
    lut = np.full(n_classes, -1, dtype=np.int64)
    lut[keep] = np.arange(len(keep))
    new = lut[y]
    rows = new >= 0
    return x[rows], new[rows]


def finish(x8: np.ndarray, y: np.ndarray, n_classes: int, name: str, split: str, *,
           n: int | None, seed: int, image_size: int | None, pad: int | None = None,
           flip: bool = True) -> Dataset:
    """uint8 (N, C, H, W) images and int64 labels in [0, n_classes) -> a Dataset: a seeded
    subset of n (before the float copy), float32 in [-1, 1], :func:`fit_size` to
    image_size; pad default :func:`default_pad` of the final size."""
    y = np.asarray(y, dtype=np.int64)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{name}/{split}: labels outside [0, {n_classes})")
    x, yt = subset(torch.from_numpy(np.ascontiguousarray(x8)), torch.from_numpy(y), check_n(n), seed,
                   f"{name}/{split}")
    x = fit_size(from_uint8(x), image_size).contiguous()
    return Dataset(x, yt, n_classes, name, pad=default_pad(x.shape[-1]) if pad is None else pad, flip=flip)
