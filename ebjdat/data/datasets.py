"""In-memory image datasets, normalised to [-1, 1] as the published code ((x01 - 0.5) / 0.5).

"digits", the default and the only dataset that needs no download, is the UCI "Optical
Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998; licence CC BY 4.0) as
bundled by scikit-learn's ``load_digits``: 1797 grey 8x8 images, integer values 0..16,
ten classes. It is embedded in this package as ``ebjdat/data/digits.npz`` (written by
``scripts/make_digits.py``), so the core install needs neither scikit-learn nor network.
Its held-out split is fixed in that file: stratified 80/20, seed 0 (1438 train, 359 test).

"cifar10" / "cifar100" read the standard python-pickle release (see ``cifar.py``);
"svhn" (``svhn.py``), "stl10" (``stl10.py``), "imagenet32" / "imagenet64" (``imagenet.py``),
"tinyimagenet" and "imagefolder" (``imagefiles.py``, decoded once into a uint8 cache beside
the data: ``cache.py``) read their standard releases from a local folder;
"synthetic" is seeded noise with random labels, for benchmarks.
"""
from __future__ import annotations

import numbers
from importlib import resources

import numpy as np
import torch

from .base import Dataset, check_n, check_split, fit_size, subset, to_unit_range
from .cifar import load_cifar
from .imagefiles import load_imagefolder, load_tinyimagenet
from .imagenet import load_imagenet
from .stl10 import load_stl10
from .svhn import load_svhn

__all__ = ["CLASS_SUBSETS", "DATASETS", "Dataset", "load_dataset"]

DATASETS = ("digits", "cifar10", "cifar100", "svhn", "stl10", "tinyimagenet", "imagenet32", "imagenet64",
            "imagefolder", "synthetic")
# the file datasets: each takes root, image_size, n, seed and classes (a class subset)
_FILE_LOADERS = {
    "svhn": load_svhn,
    "stl10": load_stl10,
    "tinyimagenet": load_tinyimagenet,
    "imagenet32": lambda split, **kw: load_imagenet(32, split, **kw),
    "imagenet64": lambda split, **kw: load_imagenet(64, split, **kw),
    "imagefolder": load_imagefolder,
}
CLASS_SUBSETS = tuple(_FILE_LOADERS)   # the datasets that take ``classes``

def _digits_arrays() -> dict[str, np.ndarray]:
    ref = resources.files("ebjdat.data").joinpath("digits.npz")
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in ("images", "labels", "test_mask")}


def load_digits(split: str = "train", *, image_size: int | None = None,
                n: int | None = None, seed: int = 0) -> Dataset:
    """The embedded 8x8 digits: x (N, 1, s, s) in [-1, 1] (values /16 then normalised)."""
    a = _digits_arrays()
    keep = a["test_mask"] == (1 if check_split(split) == "test" else 0)
    x = torch.from_numpy(a["images"][keep].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(a["labels"][keep].astype(np.int64))
    x, y = subset(x, y, check_n(n), seed, f"digits/{split}")
    # No augmentation (pad 0, no flip). A mirrored digit is another digit or none (2, 3, 4,
    # 7, 9). A shift by one pixel is an eighth of the image: the digits are centred, so
    # shifted ones are another distribution, and a JEM learns it as data (measured on the
    # default run, docs/generation-digits.md: with reflect-padded shifts the buffer's
    # digits FD was 27, with no augmentation 5; with -1-padded shifts 83).
    return Dataset(fit_size(to_unit_range(x), image_size).contiguous(), y, 10, "digits",
                   pad=0, flip=False)


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
    test = check_split(split) == "test"
    n = check_n(n, 512 if test else 2048)
    # seed * 2 + split is injective, so no (seed, split) pair shares a stream with another.
    g = torch.Generator().manual_seed(int(seed) * 2 + int(test))
    x = (0.5 * torch.randn(n, channels, s, s, generator=g)).clamp_(-1.0, 1.0)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return Dataset(x, y, n_classes, "synthetic", pad=0, flip=False)


# ---- dispatch ----------------------------------------------------------------------------
def load_dataset(name: str = "digits", split: str = "train", *, root=None,
                 image_size: int | None = None, n: int | None = None, download: bool = False,
                 seed: int = 0, classes=None) -> Dataset:
    """Loads ``name`` (one of DATASETS) as a :class:`Dataset`: x (N, C, H, W) float32 in
    [-1, 1], y (N,) int64.

    split: "train" or "test" (tinyimagenet, imagenet32/64: their val split; imagefolder:
    root/val, else root/test). root: the dataset's folder (ignored by digits and
    synthetic; default ``$EBJDAT_DATA`` or ``./data``; imagefolder needs it). image_size:
    cifar, svhn, stl10, imagenet32/64: see :func:`fit_size` (native size or larger);
    tinyimagenet and imagefolder decode at any size (default 64); synthetic: any size,
    default 32. n: a seeded random subset of that many samples (synthetic: the sample
    count). download: let torchvision fetch a missing CIFAR. seed: the subset's (and the
    synthetic data's) seed. classes (CLASS_SUBSETS only): a count k (the first k classes),
    a list of 0-based class indices or the path of a text file of them; labels become
    0..k-1 in that order.
    """
    if name in _FILE_LOADERS:
        return _FILE_LOADERS[name](split, root=root, image_size=image_size, n=n, seed=seed, classes=classes)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if classes is not None:
        raise ValueError(f"classes={classes!r}: a class subset is supported for {', '.join(CLASS_SUBSETS)}, "
                         f"not {name}")
    if name == "digits":
        return load_digits(split, image_size=image_size, n=n, seed=seed)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, split, root=root, image_size=image_size, n=n,
                          download=download, seed=seed)
    return load_synthetic(split, image_size=image_size, n=n, seed=seed)
