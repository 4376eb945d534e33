"""Pictures: sample grids (Pillow) with their title strips, row labels and noise flag, and
the matplotlib charts (histograms, reliability diagram, OOD panels, scatter, curves,
bench report), each checked for what it claims."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image

from ebjdat import charts, plots
from ebjdat.bench import report
from ebjdat.evaluate import generation, landscape, ood, robustness
from ebjdat.charts import save_histograms
from ebjdat.plots import NAN_COLOUR, PAD_COLOUR, save_grid


def load(path, fmt="PNG"):
    with Image.open(path) as im:
        assert im.format == fmt
        im.load()
        return im.copy()


def colours(im) -> int:
    """How many distinct colours a picture has: 1 or 2 would be a blank or broken one."""
    return len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0))


def has_colour(im, colour) -> bool:
    rgb = tuple(round(255 * c) for c in to_rgba(colour)[:3])
    return bool((np.asarray(im.convert("RGB")) == rgb).all(axis=-1).any())


# ---------------------------------------------------------------- grids

def test_grid_size_and_values(tmp_path):
    x = torch.zeros(6, 3, 32, 32)
    x[0] = -1.0
    x[1] = 1.0
    x[2] = -7.0  # clamped
    x[3] = 7.0
    path = save_grid(tmp_path / "g.png", x, nrow=3, pad=2, title="")
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
    im = load(save_grid(tmp_path / "d.png", x, title=""))  # nrow = ceil(sqrt(10)) = 4
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
    with pytest.raises(ValueError, match="row_labels has 2 labels for a grid of 4 rows"):
        save_grid(tmp_path / "x.png", torch.zeros(16, 1, 8, 8), nrow=4, row_labels=["a", "b"])


def test_grid_title_strip_holds_the_title(tmp_path):
    x = torch.zeros(4, 1, 8, 8)
    bare = load(save_grid(tmp_path / "bare.png", x, title=""))
    titled = load(save_grid(tmp_path / "titled.png", x))          # default title: "4 samples"
    strip = plots.TITLE_MARGIN + plots.TITLE_LINE
    assert titled.size == (max(bare.width, plots.MIN_TITLE_WIDTH), bare.height + strip)
    a = np.asarray(titled)
    assert (a[:strip] < 100).all(axis=-1).any()                   # dark ink: the title's text
    assert np.array_equal(a[strip:, :bare.width], np.asarray(bare))  # the grid itself under it, unchanged
    long = load(save_grid(tmp_path / "long.png", x, title="a long title " * 12))
    assert long.width == titled.width and long.height > titled.height  # wrapped onto more lines, not cut off


def test_class_row_labels_and_grid_text():
    assert plots.class_row_labels(3) == ["class 0", "class 1", "class 2"]
    assert plots.grid_text("t", [0, 1], 2) == ("t", ["0", "1"])
    assert plots.grid_text("t", None, 5) == ("t", [])
    with pytest.raises(ValueError, match="one per row"):
        plots.grid_text("t", ["a"], 2)


def test_row_labels_are_drawn_left_of_their_rows(tmp_path):
    x = torch.zeros(12, 1, 8, 8)
    plain = load(save_grid(tmp_path / "p.png", x, nrow=4, title=""))
    labelled = load(save_grid(tmp_path / "l.png", x, nrow=4, title="", row_labels=plots.class_row_labels(3)))
    assert labelled.height == plain.height and labelled.width > plain.width
    label_w = labelled.width - plain.width
    a = np.asarray(labelled)
    assert np.array_equal(a[:, label_w:], np.asarray(plain))
    row_h = (plain.height - 1) // 3
    for r in range(3):                                            # ink beside every row
        band = a[1 + r * row_h:(r + 1) * row_h, :label_w]
        assert (band < 100).all(axis=-1).any(), f"row {r} has no label"
    assert (a[:, :label_w] == 255).all(axis=-1).mean() > 0.5      # white around the labels


def test_class_grid_rows_and_title(tmp_path):
    x = torch.rand(30, 1, 8, 8) * 2 - 1
    y = torch.arange(3).repeat_interleave(10)
    im = load(plots.save_class_grid(tmp_path / "c.png", x, y, 3, title="t"))
    assert im.height == plots.TITLE_MARGIN + plots.TITLE_LINE + 3 * 34 + 2 and colours(im) > 50
    untitled = load(plots.save_class_grid(tmp_path / "u.png", x, y, 3, title=""))
    assert untitled.height == 3 * 34 + 2


# ---------------------------------------------------------------- noise flag

def test_noise_flag_for_chance_level_accuracy_only():
    flagged = plots.flag_noise("samples", 0.11, 10)
    assert flagged == "samples (looks like noise: conditional accuracy 0.11, chance 0.10)"
    assert plots.flag_noise("s", 0.2, 10).endswith("chance 0.10)")          # 2x chance: still noise
    for acc in (0.21, 0.9, None, float("nan")):
        assert plots.flag_noise("samples", acc, 10) == "samples"
    assert plots.looks_like_noise(0.5, 2) and not plots.looks_like_noise(0.5, 10)


def test_grid_titles_flag_noise_by_the_digits_network():
    from ebjdat.data import load_dataset
    test = load_dataset("digits", "test")
    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(10).repeat(20)
    assert "looks like noise" in landscape.grid_title("t", None, noise, y, 10)
    assert landscape.grid_title("t", None, test.x, test.y, 10) == "t"                 # real digits
    assert generation.grid_accuracy(None, torch.zeros(4, 3, 32, 32), y[:4], 10) is None  # not digits


def test_grid_accuracy_uses_the_models_own_classes_and_keeps_its_mode():
    from ebjdat.data import load_dataset
    test = load_dataset("digits", "test")

    class Oracle(torch.nn.Module):   # predicts the true class of each test digit: accuracy near 1
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(1)

        def forward(self, x):
            idx = torch.cdist(x.flatten(1), test.x.flatten(1)).argmin(1)
            return torch.nn.functional.one_hot(test.y[idx], 10).float()

    model = Oracle().train()
    acc = generation.grid_accuracy(model, test.x, None, 10)
    assert acc > 0.8 and model.training and model.bn.training


# ---------------------------------------------------------------- histograms

def energies(seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(1000, generator=g) * 1.5 - 12 + shift,
            "samples": torch.randn(300, generator=g) * 2.5 - 6,
            "adversarial": torch.randn(500, generator=g) - 9}


def test_histograms_render_and_differ(tmp_path):
    a = save_histograms(tmp_path / "a.png", energies(0), title="energies", notes=["n1", "n2"])
    b = save_histograms(tmp_path / "b.png", energies(0, shift=3.0), title="energies", notes=["n1", "n2"])
    ia, ib = load(a), load(b)
    assert ia.size == ib.size == (640, 420 + 2 * charts.NOTE_PX)
    assert colours(ia) > 50
    assert not np.array_equal(np.asarray(ia), np.asarray(ib))
    c = save_histograms(tmp_path / "c.png", energies(0), title="energies", notes=["n1", "n2"])
    assert np.array_equal(np.asarray(ia), np.asarray(load(c)))   # same input, same picture


def test_histogram_legend_matches_its_marks():
    series = energies(0)
    fig = charts.histogram_figure(series, title="E(x)", xlabel="energy")
    ax = fig.axes[0]
    handles = ax.get_legend().legend_handles
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.split(":")[0] for t in texts] == ["data", "samples", "adversarial"]
    assert texts[0] == f"data: mean {series['data'].double().mean().item():.4g}, n=1000"
    assert len(ax.patches) == 3
    for h, patch in zip(handles, ax.patches):
        assert h.get_edgecolor() == patch.get_edgecolor() and h.get_facecolor() == patch.get_facecolor()
    assert len({p.get_edgecolor() for p in ax.patches}) == 3      # one colour per series
    assert ax.get_title() == "E(x)" and ax.get_xlabel() == "energy" and ax.get_ylabel()


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
        assert im.size == (640, 420) and colours(im) > 10
    fig = charts.histogram_figure(cases[2], bins=10)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mixed: mean 1.833, n=3, 2 non-finite dropped"]
    assert any("not drawn: empty: empty; nan: no finite values" in t.get_text() for t in ax.texts)


def test_histograms_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="bins"):
        save_histograms(tmp_path / "x.png", {"a": torch.randn(5)}, bins=0)
    with pytest.raises(TypeError, match="dict"):
        save_histograms(tmp_path / "x.png", [torch.randn(5)])


# ---------------------------------------------------------------- reliability

BINS = [{"lo": i / 10, "hi": (i + 1) / 10, "count": 10 * i, "conf": i / 10 + 0.05,
         "acc": min(1.0, max(0.0, i / 10 + (0.2 if i < 3 else -0.15)))} for i in range(10)]


def test_reliability_legend_colours_and_styles_match_the_marks():
    fig = charts.reliability_figure(BINS, title="reliability")
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "accuracy of the bin", "gap to the bin's mean confidence", "perfect calibration"]
    bar_h, gap_h, line_h = legend.legend_handles
    bars, gaps = ax.containers[0], ax.containers[1]
    assert all(p.get_facecolor() == bar_h.get_facecolor() for p in bars)
    assert all(p.get_facecolor() == gap_h.get_facecolor() for p in gaps)
    r, g, b, alpha = gap_h.get_facecolor()
    assert r > g + 0.2 and r > b + 0.2 and alpha == 1.0           # red, and opaque: no purple mix over blue
    r, g, b, _ = bar_h.get_facecolor()
    assert b > r + 0.2                                             # blue
    (ideal,) = ax.lines
    assert ideal.get_linestyle() == line_h.get_linestyle() == "--"
    assert ideal.get_color() == line_h.get_color()
    assert ax.get_title() == "reliability" and ax.get_ylabel() == "accuracy"
    assert fig.axes[1].get_xlabel().startswith("confidence")


def test_reliability_picture_shows_the_legend_colours(tmp_path):
    im = load(charts.save_reliability(tmp_path / "r.png", BINS, title="t", notes=["a", "b"]))
    assert im.size == (600, 640 + 2 * charts.NOTE_PX) and colours(im) > 50
    # the gap's own colour is on the picture: drawn opaque, also inside the under-confident bars
    assert has_colour(im, charts.GAP_COLOUR) and has_colour(im, charts.ACC_COLOUR)


# ---------------------------------------------------------------- OOD

def test_ood_caption_follows_the_auroc():
    assert ood.direction_note("log p(x)", 0.93) == "log p(x): higher on in-distribution points (AUROC 0.930 > 0.5)"
    low = ood.direction_note("max p(y|x)", 0.38)
    assert "higher on OOD points" in low and "0.380 < 0.5" in low and "in-distribution points" not in low
    assert "does not separate" in ood.direction_note("s", 0.5)
    assert "no AUROC" in ood.direction_note("s", None)


def test_ood_picture_states_each_scores_direction(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    s_in = {k: torch.randn(200, generator=g) for k in ood.SCORES}
    s_out = {k: torch.randn(200, generator=g) + (-2 if k == "log_px" else 1) for k in ood.SCORES}
    row = {k: ood.auroc(s_in[k], s_out[k]) for k in ood.SCORES}
    assert row["log_px"] > 0.5 > row["max_py"]
    seen = {}
    real = charts.save_histogram_panels

    def spy(path, panels, **kw):
        seen.update(kw)
        return real(path, panels, **kw)

    monkeypatch.setattr(charts, "save_histogram_panels", spy)
    im = load(ood._histograms(tmp_path, "noise", s_in, s_out, row, ""))
    notes = seen["notes"]
    assert notes[0].startswith(ood.SCORE_LABELS["log_px"]) and "higher on in-distribution points" in notes[0]
    assert notes[1].startswith(ood.SCORE_LABELS["max_py"]) and "higher on OOD points" in notes[1]
    assert not any("each score is higher" in n for n in notes)
    assert colours(im) > 50 and im.height == 30 + 3 * 300 + len(notes) * charts.NOTE_PX


# ---------------------------------------------------------------- scatter, curves, bench

def test_scatter_legend_and_picture(tmp_path):
    pts = {"a": (1.0, 0.5, 0.1, 0.01), "b": (3.0, 0.9, 0, 0)}
    fig = charts.scatter_figure(pts, xlabel="FD", ylabel="accuracy", title="t")
    ax = fig.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["a", "b"]
    assert [h.lines[0].get_color() for h in handles] == [c.lines[0].get_color() for c in ax.containers]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("FD", "accuracy", "t")
    im = load(charts.save_scatter(tmp_path / "s.png", pts, xlabel="x", ylabel="y", notes=["n"]))
    assert im.size == (640, 460 + charts.NOTE_PX) and colours(im) > 20


def test_robustness_curves(tmp_path):
    res = {"n": 100, "norm": "linf", "steps": 10, "noise_acc": 0.8,
           "pgd_curve": [{"eps": 0.0, "acc": 0.9}, {"eps": 8 / 255, "acc": 0.4}, {"eps": 16 / 255, "acc": 0.1}],
           "published_protocol": {"pgd_curve": [{"eps": 0.0, "acc": 0.9}, {"eps": 8 / 255, "acc": 0.5}]},
           "standard_protocol": {"pgd_curve": [{"eps": 0.0, "acc": 0.9}, {"eps": 8 / 255, "acc": 0.4}]}}
    im = load(robustness.save_robustness_curves(tmp_path / "c.png", res))
    assert colours(im) > 20
    fig = charts.curves_figure({"a": [(0, 1), (1, 0.5)], "b": [(0, 0.9), (1, 0.2)]}, xlabel="eps", ylabel="acc")
    ax = fig.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["a", "b"]
    assert [(h.get_color(), h.get_linestyle()) for h in handles] == [(ln.get_color(), ln.get_linestyle())
                                                                      for ln in ax.lines]
    assert handles[0].get_linestyle() != handles[1].get_linestyle()
    with pytest.raises(ValueError, match="no pgd_curve"):
        robustness.save_robustness_curves(tmp_path / "e.png", {"n": 1})


def test_bench_plot_colours_faster_and_slower_rows(tmp_path):
    rows = [{"suite": "ops", "case": "a", "ours": "x", "baseline": "y", "speedup": 4.0},
            {"suite": "ops", "case": "b", "ours": "x", "baseline": "y", "speedup": 0.5}]
    im = load(report.plot([{"environment": {}, "rows": rows}], tmp_path / "b.png"))
    assert im.width == 1000 and colours(im) > 20
    assert has_colour(im, "#3c78c8") and has_colour(im, "#d25a46")   # a faster bar and a slower bar
    with pytest.raises(ValueError, match="name the image format"):
        report.plot([{"environment": {}, "rows": rows}], tmp_path / "b.pdf")


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".bmp", "BMP")])
def test_charts_in_other_formats(tmp_path, suffix, fmt):
    im = load(charts.save_reliability(tmp_path / f"r{suffix}", BINS), fmt)
    assert im.size == (600, 640) and colours(im) > 20


def test_grids_never_import_matplotlib_and_charts_never_pyplot(tmp_path):
    code = ("import sys, torch; from ebjdat import plots; plots.save_grid(sys.argv[1], torch.zeros(4, 1, 8, 8)); "
            "assert 'matplotlib' not in sys.modules, 'grids imported matplotlib'; "
            "from ebjdat import charts; charts.save_histograms(sys.argv[2], {'a': [1.0, 2.0]}); "
            "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "g.png"), str(tmp_path / "h.png")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
