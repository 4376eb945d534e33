"""Datasets stored as image files (JPEG / PNG): Tiny-ImageNet and any class-folder tree.

Both are decoded once, at the requested size, into a uint8 cache beside the data
(``cache.py``); later loads read the cache.

Decoding one image to size s (``decode_image``): open with Pillow, convert to 8-bit RGB
(``to_rgb8``: 16-bit grey scaled by 255/65535 and rounded, palette images through their
palette, CMYK as Pillow converts it, grey replicated; alpha is dropped), resize so that the short side
is s (bilinear, Pillow's antialiased filter when shrinking; JPEGs are first decoded at the
smallest DCT scale still >= s, which is what makes large photos cheap), then crop the
centre s x s (the odd pixel, when there is one, is dropped right/bottom).

tinyimagenet: Tiny-ImageNet (200 classes, 64x64; http://cs231n.stanford.edu/tiny-imagenet-200.zip).
Layout under ``root`` (``root`` may also be the extracted ``tiny-imagenet-200`` folder itself)::

    tiny-imagenet-200/wnids.txt                       200 WordNet ids, one a line: class i is line i
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      500 per class
    tiny-imagenet-200/val/images/*.JPEG               10,000
    tiny-imagenet-200/val/val_annotations.txt         file <TAB> wnid <TAB> bbox ...

"test" is the val split (the release's test/ has no labels). Size: 64 by default; any
image_size decodes at that size.

imagefolder: ``root/train/<class>/*.{png,jpg,jpeg}`` and ``root/val/<class>/...`` (or
``root/test/<class>/...`` when there is no val/), any resolution; class i is the i-th
class folder of train/ in sorted order (the test split uses train's numbering, so it may
lack classes but not add any). Files with other extensions and folders starting with "."
are ignored. image_size: 64 by default. Example: Imagenette
(https://github.com/fastai/imagenette, train/ and val/ folders of 10 classes).
"""
from __future__ import annotations

import hashlib
import numbers
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import Dataset, check_split, class_list, finish, keep_classes
from .cache import cached, listing_digest
from .checks import read_text
from .cifar import default_root

__all__ = ["IMAGE_SUFFIXES", "decode_image", "load_imagefolder", "load_tinyimagenet", "to_rgb8"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_FOLDER = "tiny-imagenet-200"
IMAGENETTE_URL = "https://github.com/fastai/imagenette"
DEFAULT_SIZE = 64


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading image files needs Pillow: pip install pillow") from None
    return Image


class _BadPixels(ValueError):
    """An image Pillow reads whose values have no 8-bit RGB meaning."""


# Pillow's modes of 16-bit grey; PNG's 16-bit grey opens as one of them (as "I" in older Pillow)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb8(im, path: Path):
    """A loaded Pillow image of any mode as an 8-bit "RGB" image of the colours it depicts.

    16-bit grey (and "I" holding 0..65535): v * 255 / 65535, rounded, on all three
    channels (Pillow's convert clips at 255 instead: a saturated picture); "I" values
    outside 0..65535 are a ValueError naming path. Palette ("P", "PA"): through the
    palette, via RGBA (Pillow warns on a palette with per-entry transparency converted
    straight to RGB). Every other mode (grey, CMYK, YCbCr, RGBA...): Pillow's convert;
    alpha is dropped."""
    Image = _pil()
    if im.mode in _SIXTEEN_BIT:
        v = np.asarray(im).astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise _BadPixels(f"{path} holds 32-bit integer values in [{v.min()}, {v.max()}]; expected an 8- or "
                             f"16-bit image: convert it to 8-bit RGB")
        # (v * 255 + 32767) // 65535 is round(v * 255 / 65535) exactly: 510 v is never an odd multiple of 65535
        return Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if im.mode in ("P", "PA"):
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")


# what Pillow raises on a damaged or foreign file (SyntaxError: some plugins' header errors)
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


def decode_image(path: Path, size: int) -> np.ndarray:
    """The image file at path as (3, size, size) uint8 (8-bit RGB by :func:`to_rgb8`, short
    side resized to size, centre crop; module docstring). ValueError naming the file when
    Pillow cannot read it or its values are no picture."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))   # JPEG: decode at a reduced scale that is still >= size
            im.load()
            im = to_rgb8(im, path)
    except _BadPixels:
        raise
    except (*_UNREADABLE, Image.DecompressionBombError) as e:
        raise ValueError(f"{path} is not a readable image ({type(e).__name__}: {e}); replace it with an "
                         f"intact copy or delete it") from None
    w, h = im.size
    nw, nh = max(size, round(w * size / min(w, h))), max(size, round(h * size / min(w, h)))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(files: list[Path], size: int) -> np.ndarray:
    """(N, 3, size, size) uint8 of the files, decoded by a thread pool (Pillow releases
    the GIL while it decodes and resizes)."""
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))

    def one(i):
        out[i] = decode_image(files[i], size)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(len(files))))   # list(): re-raises the first failure
    return out


def _check_size(image_size) -> int:
    if image_size is None:
        return DEFAULT_SIZE
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise ValueError(f"image_size must be an int >= 1 (the decoded size), got {image_size!r}")
    return int(image_size)


def _cache_check(n: int, size: int):
    def check(arrays: dict) -> str | None:
        x, y = arrays.get("x"), arrays.get("y")
        if x is None or y is None:
            return "no x or y"
        if x.dtype != np.uint8 or x.shape != (n, 3, size, size) or y.shape != (n,):
            return f"x {x.shape} {x.dtype}, y {y.shape}, expected ({n}, 3, {size}, {size}) uint8 and ({n},)"
        return None
    return check


def _from_files(root: Path, name: str, split: str, files: list[Path], labels: list[int], size: int,
                extra: dict) -> tuple[np.ndarray, np.ndarray]:
    """Decoded (x, y) of the files, through the cache of root."""
    y = np.asarray(labels, dtype=np.int64)
    # the labels' digest: a relabelled file (val_annotations.txt, a renamed class) changes no image
    prov = {"dataset": name, "split": split, "size": size, "files": len(files),
            "listing": listing_digest(root, files), "labels": hashlib.sha256(y.tobytes()).hexdigest(),
            "pillow": _pil().__version__, **extra}

    def build():
        return {"x": _decode_all(files, size), "y": y}

    arrays, _ = cached(root, f"{name}-{split}-{size}", prov, build, _cache_check(len(files), size))
    return arrays["x"], arrays["y"]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


# ---- Tiny-ImageNet -------------------------------------------------------------------------
def _tiny_missing(root: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"tinyimagenet: {what} (looked in {root} and {root / TINY_FOLDER}). Expected the Tiny-ImageNet release: "
        f"{TINY_FOLDER}/wnids.txt, {TINY_FOLDER}/train/<wnid>/images/*.JPEG, {TINY_FOLDER}/val/images/*.JPEG and "
        f"{TINY_FOLDER}/val/val_annotations.txt; get it from {TINY_URL} and extract it under {root}")


def _tiny_root(root: Path) -> Path:
    for cand in (root, root / TINY_FOLDER):
        if (cand / "wnids.txt").is_file():
            return cand
    raise _tiny_missing(root, "no wnids.txt found")


def _tiny_wnids(where: Path) -> list[str]:
    wnids = [w.strip() for w in read_text(where / "wnids.txt", "tinyimagenet class list").splitlines() if w.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise ValueError(f"{where / 'wnids.txt'} must list distinct WordNet ids, one a line "
                         f"(got {len(wnids)} lines, {len(set(wnids))} distinct); extract {TINY_URL} again")
    return wnids


def _tiny_train(where: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for k, wnid in enumerate(wnids):
        folder = where / "train" / wnid / "images"
        if not folder.is_dir():
            raise _tiny_missing(where, f"the training folder {folder} of class {wnid} (wnids.txt line {k + 1}) "
                                f"is missing")
        imgs = _images_in(folder)
        if not imgs:
            raise _tiny_missing(where, f"{folder} holds no .JPEG images")
        files += imgs
        labels += [k] * len(imgs)
    return files, labels


def _tiny_val(where: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    ann = where / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise _tiny_missing(where, f"{ann} is missing")
    index = {w: k for k, w in enumerate(wnids)}
    files, labels = [], []
    for i, line in enumerate(read_text(ann, "tinyimagenet annotations").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise ValueError(f"{ann}, line {i}: expected 'file<TAB>wnid<TAB>bbox...' with a wnid of wnids.txt, "
                             f"got {line!r}; extract {TINY_URL} again")
        img = where / "val" / "images" / parts[0]
        if not img.is_file():
            raise _tiny_missing(where, f"{img}, named on line {i} of {ann}, is missing")
        files.append(img)
        labels.append(index[parts[1]])
    if not files:
        raise ValueError(f"{ann} lists no image; extract {TINY_URL} again")
    return files, labels


def load_tinyimagenet(split: str = "train", *, root=None, image_size: int | None = None,
                      n: int | None = None, seed: int = 0, classes=None) -> Dataset:
    """Tiny-ImageNet as a Dataset: x (N, 3, s, s) float32 in [-1, 1] (s = image_size,
    default 64), y in [0, 200) in wnids.txt order (or [0, k) with ``classes``, see
    :func:`~ebjdat.data.base.class_list`); "test" is the val split. Pad s // 8, flip."""
    split = check_split(split)
    size = _check_size(image_size)
    root = Path(root).expanduser() if root is not None else default_root()
    where = _tiny_root(root)
    wnids = _tiny_wnids(where)
    keep = class_list(classes, len(wnids), "tinyimagenet")   # checked before decoding anything
    files, labels = (_tiny_train if split == "train" else _tiny_val)(where, wnids)
    x8, y = _from_files(where, "tinyimagenet", split, files, labels, size, {"wnids": wnids})
    x8, y = keep_classes(x8, y, keep, len(wnids))
    k = len(wnids) if keep is None else len(keep)
    return finish(x8, y, k, "tinyimagenet", split, n=n, seed=seed, image_size=None)


# ---- any class-folder tree ------------------------------------------------------------------
def _layout(root: Path) -> str:
    return (f"expected {root}/train/<class>/*.png|jpg|jpeg and {root}/val/<class>/... (or {root}/test/<class>/...), "
            f"one folder per class, any image size (e.g. Imagenette: {IMAGENETTE_URL})")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_folder(root: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("val", "test")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"imagefolder: no {' or '.join(names)} folder in {root}; {_layout(root)}")


def load_imagefolder(split: str = "train", *, root=None, image_size: int | None = None,
                     n: int | None = None, seed: int = 0, classes=None) -> Dataset:
    """A class-folder tree (module docstring) as a Dataset: x (N, 3, s, s) float32 in
    [-1, 1], s = image_size (default 64); y the index of the class folder among train/'s
    sorted class folders (or [0, k) with ``classes``). Pad s // 8, flip."""
    split = check_split(split)
    size = _check_size(image_size)
    if root is None:
        raise ValueError(f"imagefolder needs root (ebjdat train --data-root): the folder holding train/ and val/; "
                         f"{_layout(Path('<root>'))}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: {root} is not a folder; {_layout(root)}")
    names = [p.name for p in _class_folders(_split_folder(root, "train"))]
    if not names:
        raise FileNotFoundError(f"imagefolder: {root / 'train'} has no class folders; {_layout(root)}")
    keep = class_list(classes, len(names), "imagefolder")
    folder = _split_folder(root, split)
    index = {c: k for k, c in enumerate(names)}
    files, labels = [], []
    for cls in _class_folders(folder):
        if cls.name not in index:
            raise ValueError(f"imagefolder: class folder {cls} has no counterpart in {root / 'train'}: the "
                             f"classes are numbered by train/'s folders; {_layout(root)}")
        imgs = _images_in(cls)
        if not imgs:
            raise FileNotFoundError(f"imagefolder: {cls} holds no {'/'.join(IMAGE_SUFFIXES)} images; {_layout(root)}")
        files += imgs
        labels += [index[cls.name]] * len(imgs)
    if not files:
        raise FileNotFoundError(f"imagefolder: {folder} has no class folders; {_layout(root)}")
    x8, y = _from_files(root, "imagefolder", folder.name, files, labels, size, {"classes": names})
    x8, y = keep_classes(x8, y, keep, len(names))
    k = len(names) if keep is None else len(keep)
    return finish(x8, y, k, "imagefolder", split, n=n, seed=seed, image_size=None)
