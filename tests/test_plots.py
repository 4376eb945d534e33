"""PNG sample grids and energy histograms drawn with Pillow."""
import numpy as np
import pytest
import torch
from PIL import Image

from ebjdat.plots import NAN_COLOUR, PAD_COLOUR, save_grid, save_histograms


def load(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.copy()


def test_grid_size_and_values(tmp_path):
    x = torch.zeros(6, 3, 32, 32)
    x[0] = -1.0
    x[1] = 1.0
    x[2] = -7.0  # clamped
    x[3] = 7.0
    path = save_grid(tmp_path / "g.png", x, nrow=3, pad=2)
    im = load(path)
    # 3 x 32 = 96 < 256 px: enlarged 3x (288 px); 3 columns, 2 rows, pad 2 around and between
    assert im.size == (3 * 96 + 4 * 2, 2 * 96 + 3 * 2)
    a = np.asarray(im.convert("RGB"))

    def tile(i):
        r, c = divmod(i, 3)
        y0, x0 = 2 + r * 98, 2 + c * 98
        return a[y0:y0 + 96, x0:x0 + 96]

    assert (tile(0) == 0).all() and (tile(1) == 255).all()
    assert (tile(2) == 0).all() and (tile(3) == 255).all()
    assert (tile(4) == 128).all()  # 0 -> round(127.5) = 128
    assert (a[0, :] == PAD_COLOUR).all() and (a[:, 0] == PAD_COLOUR).all()


def test_grid_grayscale_digits_upscaled_and_nan(tmp_path):
    x = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).repeat(10, 1, 1, 1)
    x[3, 0, 2, 5] = float("nan")
    im = load(save_grid(tmp_path / "d.png", x))  # nrow = ceil(sqrt(10)) = 4
    ncol, nrows = 4, 3
    assert im.size[0] >= 256
    scale = (im.size[0] - (ncol + 1)) // (ncol * 8)
    assert scale == 8 and im.size == (ncol * 64 + ncol + 1, nrows * 64 + nrows + 1)
    a = np.asarray(im)
    t0 = a[1:65, 1:65]
    assert (t0[:scale, :scale] == 0).all() and (t0[-scale:, -scale:] == 255).all()  # first and last pixel
    assert (t0[..., 0] == t0[..., 1]).all()  # grey stays grey
    t3 = a[1:65, 1 + 3 * 65:1 + 3 * 65 + 64]
    assert (t3[2 * scale:3 * scale, 5 * scale:6 * scale] == NAN_COLOUR).all()
    assert (a[1 + 65:, 1 + 2 * 65:][:64, :64] != NAN_COLOUR).any()


def test_grid_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_grid(tmp_path / "x.png", torch.zeros(2, 2, 8, 8))
    with pytest.raises(TypeError, match="float"):
        save_grid(tmp_path / "x.png", torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="nrow"):
        save_grid(tmp_path / "x.png", torch.zeros(2, 1, 8, 8), nrow=0)


def energies(seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(1000, generator=g) * 1.5 - 12 + shift,
            "samples": torch.randn(300, generator=g) * 2.5 - 6,
            "adversarial": torch.randn(500, generator=g) - 9}


def test_histograms_render_and_differ(tmp_path):
    a = save_histograms(tmp_path / "a.png", energies(0), title="energies")
    b = save_histograms(tmp_path / "b.png", energies(0, shift=3.0), title="energies")
    ia, ib = load(a), load(b)
    assert ia.size == ib.size == (640, 420)
    pa, pb = np.asarray(ia.convert("RGB")), np.asarray(ib.convert("RGB"))
    assert not np.array_equal(pa, pb)
    # each series' colour appears (outlines are drawn solid)
    for colour in [(31, 119, 180), (255, 127, 14), (44, 160, 44)]:
        assert (pa == colour).all(axis=-1).any()
    # same input, same picture
    c = save_histograms(tmp_path / "c.png", energies(0), title="energies")
    assert np.array_equal(pa, np.asarray(load(c).convert("RGB")))


def test_histograms_degenerate_series(tmp_path):
    nan = torch.full((5,), float("nan"))
    mixed = torch.tensor([1.0, float("inf"), float("nan"), 2.0, 2.5])
    cases = [
        {"empty": torch.tensor([])},
        {"nan": nan},
        {"empty": torch.tensor([]), "nan": nan, "mixed": mixed},
        {"const": torch.full((20,), 3.0)},
        {},
        {"list": [1.0, 2.0, 2.0, 3.0], "numpy": np.array([0.5, 1.5])},
    ]
    for i, s in enumerate(cases):
        im = load(save_histograms(tmp_path / f"h{i}.png", s, bins=10))
        assert im.size == (640, 420)


def test_histograms_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="bins"):
        save_histograms(tmp_path / "x.png", {"a": torch.randn(5)}, bins=0)
    with pytest.raises(TypeError, match="dict"):
        save_histograms(tmp_path / "x.png", [torch.randn(5)])
