"""STL-10, the binary release (Coates et al., 2011; https://cs.stanford.edu/~acoates/stl10/).

Expected layout under ``root`` (``root`` may also be the ``stl10_binary`` folder itself)::

    stl10_binary/train_X.bin  train_y.bin    5,000 labelled images
    stl10_binary/test_X.bin   test_y.bin     8,000

X: raw uint8, 3 x 96 x 96 per image, each channel stored column-major (MATLAB order), so
an image is read as (3, W, H) and transposed to (3, H, W). y: one uint8 per image, 1..10.
The unlabelled split is not read. 10 classes, 96x96, flip, crop padding 12.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Dataset, check_split, class_list, finish, keep_classes
from .cifar import default_root

__all__ = ["load_stl10"]

URL = "https://cs.stanford.edu/~acoates/stl10/"
FOLDER = "stl10_binary"
SIDE = 96
_IMAGE_BYTES = 3 * SIDE * SIDE


def _find(root: Path, files: list[str]) -> Path:
    cands = (root, root / FOLDER, root / "stl10", root / "stl10" / FOLDER)
    for cand in cands:
        if all((cand / f).is_file() for f in files):
            return cand
    raise FileNotFoundError(f"stl10: {' and '.join(files)} not found (looked in "
                            f"{', '.join(str(c) for c in cands)}). Expected the binary release: "
                            f"{FOLDER}/train_X.bin, train_y.bin, test_X.bin, test_y.bin; get stl10_binary.tar.gz "
                            f"from {URL} and extract it under {root}")


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, 96, 96) uint8, y (N,) int64 in [0, 10)) of one split's two files."""
    xf, yf = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = np.fromfile(xf, dtype=np.uint8)
    if raw.size == 0 or raw.size % _IMAGE_BYTES:
        raise ValueError(f"{xf} holds {raw.size} bytes, not a positive multiple of 3*96*96 = {_IMAGE_BYTES}: it is "
                         f"truncated or not an STL-10 image file; extract {URL} again")
    y = np.fromfile(yf, dtype=np.uint8).astype(np.int64)
    n = raw.size // _IMAGE_BYTES
    if y.size != n:
        raise ValueError(f"{yf} holds {y.size} labels but {xf} holds {n} images; extract {URL} again")
    if y.min() < 1 or y.max() > 10:
        raise ValueError(f"{yf}: labels must be 1..10, got values in [{y.min()}, {y.max()}]")
    # column-major per channel: the file's (c, w, h) order, transposed to (c, h, w)
    x = raw.reshape(n, 3, SIDE, SIDE).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(x), y - 1


def load_stl10(split: str = "train", *, root=None, image_size: int | None = None, n: int | None = None,
               seed: int = 0, classes=None) -> Dataset:
    """STL-10 as a Dataset: x (N, 3, 96, 96) float32 in [-1, 1] (fit_size to image_size),
    y in [0, 10) (or [0, k) with ``classes``); pad 12, flip."""
    split = check_split(split)
    keep = class_list(classes, 10, "stl10")
    root = Path(root).expanduser() if root is not None else default_root()
    folder = _find(root, [f"{split}_X.bin", f"{split}_y.bin"])
    x8, y = keep_classes(*read_split(folder, split), keep, 10)
    return finish(x8, y, 10 if keep is None else len(keep), "stl10", split, n=n, seed=seed,
                  image_size=image_size)
