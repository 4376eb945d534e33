"""In-memory image datasets, normalised to [-1, 1] as the reference ((x01 - 0.5) / 0.5).

"digits", the default and the only dataset that needs no download, is the UCI "Optical
Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998; licence CC BY 4.0) as
bundled by scikit-learn's ``load_digits``: 1797 grey 8x8 images, integer values 0..16,
ten classes. It is embedded in this package as ``ebjdat/data/digits.npz`` (written by
``scripts/make_digits.py``), so the core install needs neither scikit-learn nor network.
Its held-out split is fixed in that file: stratified 80/20, seed 0 (1438 train, 359 test).

"cifar10" / "cifar100" read the standard python-pickle release (see ``cifar.py``);
"synthetic" is seeded noise with random labels, for benchmarks.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DATASETS", "Dataset", "load_dataset"]

DATASETS = ("digits", "cifar10", "cifar100", "synthetic")
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


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _check_n(n, default: int | None = None) -> int | None:
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


# ---- digits ------------------------------------------------------------------------------
def _digits_arrays() -> dict[str, np.ndarray]:
    ref = resources.files("ebjdat.data").joinpath("digits.npz")
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in ("images", "labels", "test_mask")}


def load_digits(split: str = "train", *, image_size: int | None = None,
                n: int | None = None, seed: int = 0) -> Dataset:
    """The embedded 8x8 digits: x (N, 1, s, s) in [-1, 1] (values /16 then normalised)."""
    a = _digits_arrays()
    keep = a["test_mask"] == (1 if _check_split(split) == "test" else 0)
    x = torch.from_numpy(a["images"][keep].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(a["labels"][keep].astype(np.int64))
    x, y = subset(x, y, _check_n(n), seed, f"digits/{split}")
    # pad 1 (an 8x8 digit shifted by 1 is still that digit); no flip: a mirrored digit is
    # another digit or none (2, 3, 4, 7, 9), so flipping would corrupt the labels.
    return Dataset(fit_size(to_unit_range(x), image_size).contiguous(), y, 10, "digits",
                   pad=1, flip=False)


# ---- synthetic ---------------------------------------------------------------------------
def load_synthetic(split: str = "train", *, image_size: int | None = None,
                   n: int | None = None, seed: int = 0, channels: int = 3,
                   n_classes: int = 10) -> Dataset:
    """Noise with random labels (nothing to learn): x = clamp(0.5 * N(0, 1), -1, 1) of
    (n, channels, s, s), s = image_size (default 32), n default 2048 train / 512 test.
    Deterministic in (seed, split); the two splits differ."""
    s = 32 if image_size is None else image_size
    if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
        raise ValueError(f"image_size must be an int >= 1, got {image_size!r}")
    test = _check_split(split) == "test"
    n = _check_n(n, 512 if test else 2048)
    # seed * 2 + split is injective, so no (seed, split) pair shares a stream with another.
    g = torch.Generator().manual_seed(int(seed) * 2 + int(test))
    x = (0.5 * torch.randn(n, channels, s, s, generator=g)).clamp_(-1.0, 1.0)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return Dataset(x, y, n_classes, "synthetic", pad=0, flip=False)


# ---- dispatch ----------------------------------------------------------------------------
def load_dataset(name: str = "digits", split: str = "train", *, root=None,
                 image_size: int | None = None, n: int | None = None, download: bool = False,
                 seed: int = 0) -> Dataset:
    """Loads ``name`` ("digits", "cifar10", "cifar100", "synthetic") as a :class:`Dataset`.

    split: "train" or "test". root: folder of the CIFAR files (ignored otherwise; default
    ``$EBJDAT_DATA`` or ``./data``). image_size: see :func:`fit_size` (synthetic: any size,
    default 32). n: a seeded random subset of that many samples (synthetic: the sample
    count). download: let torchvision fetch a missing CIFAR. seed: the subset's (and the
    synthetic data's) seed.
    """
    if name == "digits":
        return load_digits(split, image_size=image_size, n=n, seed=seed)
    if name in ("cifar10", "cifar100"):
        from .cifar import load_cifar
        return load_cifar(name, split, root=root, image_size=image_size, n=n,
                          download=download, seed=seed)
    if name == "synthetic":
        return load_synthetic(split, image_size=image_size, n=n, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
