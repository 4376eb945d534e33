"""Generates ebjdat/data/digits.npz, the embedded default dataset, from scikit-learn.

Run once (needs scikit-learn, which the core install does not):
    python scripts/make_digits.py

Data: the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak,
1998; CC BY 4.0), as bundled by scikit-learn's ``load_digits``: 1797 grey 8x8 images with
integer values 0..16 and labels 0..9. Written, compressed:
    images     (1797, 8, 8) uint8, values 0..16, sklearn's order
    labels     (1797,)      uint8, 0..9
    test_mask  (1797,)      uint8, 1 for the held-out split
The held-out split is stratified 80/20: per class, a seeded permutation of that class's
indices; the first round(0.2 * count) go to test. It is stored in the file (rather than
recomputed at load time) so it never depends on a numpy or scikit-learn version.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 0
TEST_FRACTION = 0.2
OUT = Path(__file__).resolve().parents[1] / "ebjdat" / "data" / "digits.npz"


def stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=np.uint8)
    for c in np.unique(labels):  # ascending class order: part of what makes it reproducible
        idx = np.flatnonzero(labels == c)
        take = round(fraction * len(idx))
        mask[rng.permutation(idx)[:take]] = 1
    return mask


def main() -> None:
    from sklearn.datasets import load_digits

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()

    d = load_digits()
    images = d.images
    # The values are exact small integers stored as float64; check before narrowing.
    if images.min() < 0 or images.max() > 16 or not np.array_equal(images, np.round(images)):
        raise SystemExit("unexpected digits values: expected integers in 0..16")
    images = images.astype(np.uint8)
    labels = d.target.astype(np.uint8)
    mask = stratified_test_mask(labels, TEST_FRACTION, SEED)
    np.savez_compressed(args.out, images=images, labels=labels, test_mask=mask)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {len(labels)} images, "
          f"{int(mask.sum())} test / {int(len(mask) - mask.sum())} train")


if __name__ == "__main__":
    main()
