"""Checks the file readers share: what a field of a data file holds (dtype, value range,
count) and whether a length stated inside a file fits in the bytes that follow it. Each
failure is a one-line ValueError that starts with the file's path and names the field, so
that a wrong file is refused before it is cast silently or allocates what it does not hold."""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

__all__ = ["class_labels", "fits", "image_bytes", "read_text"]


def fits(path: Path, what: str, claimed: int, remaining: int, fix: str) -> None:
    """Refuses a length field (``claimed`` bytes) larger than the ``remaining`` bytes of the
    file: checked before anything of that size is allocated."""
    if claimed > remaining:
        raise ValueError(f"{path}: {what} claims {claimed} bytes but only {remaining} remain in the file "
                         f"(truncated or crafted); {fix}")


def _range(a: np.ndarray) -> str:
    return f"[{a.min()}, {a.max()}]" if a.size else "(none)"


def image_bytes(a: np.ndarray, path: Path, field: str, fix: str) -> np.ndarray:
    """``a`` (any shape) as uint8 images: uint8 as is; another integer dtype only when every
    value lies in [0, 255] (a lossless cast). Floats (even in [0, 1]), bools, strings and
    objects are refused: casting them would change the pictures without a word."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind not in "iu":
        raise ValueError(f"{path}: field '{field}' holds {a.dtype} values; expected uint8 images in [0, 255]; {fix}")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"{path}: field '{field}' holds {a.dtype} values in {_range(a)}; expected uint8 images in "
                         f"[0, 255]; {fix}")
    return a.astype(np.uint8)


def _whole_numbers(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all() and (a == np.round(a)).all())


def _label_array(values, path: Path, field: str, fix: str, floats: bool) -> np.ndarray:
    """values (a list / tuple of ints or a numeric array) as an int64 array, dtype checked;
    floats: whether a float array of whole numbers is admitted."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iu":
            return values.reshape(-1).astype(np.int64)
        if floats and values.dtype.kind == "f" and _whole_numbers(values):
            return values.reshape(-1).astype(np.int64)
        what = "values that are not whole numbers" if values.dtype.kind == "f" else "values"
        raise ValueError(f"{path}: field '{field}' holds {values.dtype} {what}; expected integer class "
                         f"indices; {fix}")
    if not isinstance(values, (list, tuple)):
        raise ValueError(  # noqa: TRY004 - a file's content, not an argumentf"{path}: field '{field}' holds a {type(values).__name__}; expected a list of integer "
                         f"class indices; {fix}")
    # element by element: np.asarray would turn strings into a str array and nested lists
    # (rows repeated through a pickle's memo) into an array of any size
    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)), None)
    if bad is not None:
        raise ValueError(f"{path}: field '{field}' holds {type(bad).__name__} values (e.g. {bad!r:.40}); expected "
                         f"integer class indices; {fix}")
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{path}: field '{field}' holds an integer beyond 64 bits; expected class indices; "
                         f"{fix}") from None


def class_labels(values, path: Path, field: str, n: int, fix: str, lo: int | None = None,
                 hi: int | None = None, floats: bool = False) -> np.ndarray:
    """(n,) int64 of the labels in ``values`` (a list / tuple of ints or a numeric array),
    checked to be integers, n of them (``n``: the number of images they label) and, when
    lo and hi are given, in [lo, hi]. floats: admit a float array of whole numbers (MATLAB
    files store labels as doubles)."""
    if not isinstance(values, np.ndarray) and isinstance(values, (list, tuple)) and len(values) != n:
        raise ValueError(f"{path}: field '{field}' holds {len(values)} labels for {n} images; {fix}")
    y = _label_array(values, path, field, fix, floats)
    if y.size != n:
        raise ValueError(f"{path}: field '{field}' holds {y.size} labels for {n} images; {fix}")
    bad = y[(y < lo) | (y > hi)] if lo is not None else y[:0]
    if bad.size:
        raise ValueError(f"{path}: field '{field}' holds label {bad[0]}, outside [{lo}, {hi + 1}) (labels in "
                         f"{_range(y)}); {fix}")
    return y


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of path; a binary file is a ValueError naming it (the decoder's own
    message names neither the file nor what it was meant to hold)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason}); expected a text "
                         f"file") from None
