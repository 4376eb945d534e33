"""Datasets, a hold-out split and a device-resident loader.

``load_dataset(name, split)`` returns a :class:`Dataset` (x in [-1, 1], y int64) for
"digits" (embedded, offline, the default), "cifar10" / "cifar100" (a local folder, or
downloaded with torchvision), "svhn", "stl10", "tinyimagenet", "imagenet32",
"imagenet64", "imagefolder" (local folders in their standard layouts; image files are
decoded once into a uint8 cache) and "synthetic" (seeded noise, for benchmarks).
``Loader(ds, batch_size, device=...)`` serves augmented batches from the device.
"""
from .base import hold_out
from .datasets import CLASS_SUBSETS, DATASETS, Dataset, load_dataset
from .loader import Loader, augment_batch

__all__ = ["CLASS_SUBSETS", "DATASETS", "Dataset", "Loader", "augment_batch", "hold_out", "load_dataset"]
