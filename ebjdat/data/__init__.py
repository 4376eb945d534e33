"""Datasets, a hold-out split and a device-resident loader.

``load_dataset(name, split)`` returns a :class:`Dataset` (x in [-1, 1], y int64) for
"digits" (embedded, offline, the default), "cifar10" / "cifar100" (a local folder, or
downloaded with torchvision) and "synthetic" (seeded noise, for benchmarks).
``Loader(ds, batch_size, device=...)`` serves augmented batches from the device.
"""
from .base import hold_out
from .datasets import DATASETS, Dataset, load_dataset
from .loader import Loader, augment_batch

__all__ = ["DATASETS", "Dataset", "Loader", "augment_batch", "hold_out", "load_dataset"]
