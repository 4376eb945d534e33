"""What every dataset loader shares: the Dataset record, the [-1, 1] normalisation, resizing,
seeded subsets and the split / count checks (datasets.py and cifar.py import it; it
imports neither)."""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    """[0, 1] -> [-1, 1], the reference's ``(x - 0.5) / 0.5``."""
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
