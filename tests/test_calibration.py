"""Calibration (ebjdat.evaluate.calibration): ECE against a direct loop over (lo, hi] bins in
exact fractions and against the equivalent per-bin-sum formula, the bin edges, the
extremes, the model-level wrapper and the reliability diagram."""
from fractions import Fraction

import numpy as np
import pytest

from ebjdat import charts
import torch
from PIL import Image
from torch import nn

from ebjdat import plots
from ebjdat.evaluate import calibration as cal


def naive_ece(conf, correct, m):
    """ECE with bins (k/m, (k+1)/m], k = 0..m-1 (0 in the first), a direct loop over the
    bins: membership by Python float comparisons with k/m, sums in exact fractions."""
    n = len(conf)
    total = Fraction(0)
    for k in range(m):
        lo, hi = k / m, (k + 1) / m
        members = [i for i, c in enumerate(conf) if (lo < c <= hi) or (k == 0 and c == 0)]
        if members:
            acc = Fraction(sum(int(correct[i]) for i in members), len(members))
            mean_conf = sum(Fraction(conf[i]) for i in members) / len(members)
            total += Fraction(len(members), n) * abs(acc - mean_conf)
    return float(total)


@pytest.mark.parametrize("m", [15, 20, 7])
def test_ece_equals_the_direct_loop(m):
    g = torch.Generator().manual_seed(m)
    conf = torch.rand(300, generator=g, dtype=torch.float64)
    conf[:40] = torch.randint(0, m + 1, (40,), generator=g).double() / m   # confidences on the edges
    correct = torch.rand(300, generator=g, dtype=torch.float64) < conf ** 2
    assert cal.expected_calibration_error(conf, correct, m) == pytest.approx(
        naive_ece(conf.tolist(), correct.tolist(), m), abs=1e-12)
    # the same number written as sum_m |sum_{i in B_m} (a_i - c_i)| / N
    bins = cal.reliability_bins(conf, correct, m)
    alt = sum(b["count"] * abs(b["acc"] - b["conf"]) for b in bins) / len(conf)
    assert cal.expected_calibration_error(conf, correct, m) == pytest.approx(alt, abs=1e-12)


def test_a_hand_computed_example_and_the_edges():
    conf = torch.tensor([0.95, 0.95, 0.55, 0.55], dtype=torch.float64)
    correct = torch.tensor([True, False, True, True])
    # bin (0.9, 1]: acc 0.5, conf 0.95; bin (0.5, 0.6]: acc 1, conf 0.55; each half the mass
    assert cal.expected_calibration_error(conf, correct, 10) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    bins = cal.reliability_bins(torch.tensor([0.0, 0.6, 0.6000001, 1.0], dtype=torch.float64),
                                torch.ones(4, dtype=torch.bool), 20)
    assert [b["count"] for b in bins if b["count"]] == [1, 1, 1, 1]
    assert bins[0]["count"] == 1 and bins[11]["count"] == 1 and bins[12]["count"] == 1 and bins[19]["count"] == 1
    assert bins[11]["lo"] == pytest.approx(0.55) and bins[11]["hi"] == pytest.approx(0.6)


def test_ece_extremes():
    ones = torch.ones(10, dtype=torch.float64)
    assert cal.expected_calibration_error(ones, torch.ones(10, dtype=torch.bool), 15) == 0.0
    assert cal.expected_calibration_error(ones, torch.zeros(10, dtype=torch.bool), 15) == 1.0
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        conf = torch.rand(50, generator=g)
        v = cal.expected_calibration_error(conf, torch.rand(50, generator=g) < 0.5, 20)
        assert 0.0 <= v <= 1.0


def test_bad_input_names_the_argument():
    c = torch.rand(5)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        cal.expected_calibration_error(c, c > 0.5, 0)
    with pytest.raises(ValueError, match="correct must be an"):
        cal.expected_calibration_error(c, torch.ones(4, dtype=torch.bool), 15)
    with pytest.raises(ValueError, match="probabilities in"):
        cal.expected_calibration_error(c + 1, c > 0.5, 15)
    with pytest.raises(ValueError, match="empty"):
        cal.expected_calibration_error(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 15)


class Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x):
        idx = x.flatten(1)[:, 0].long()
        return self.logits[idx]


def test_model_calibration_and_the_diagram(tmp_path):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(80, 10, generator=g) * 3
    model = Fixed(logits).eval()
    x = torch.arange(80.0).view(80, 1, 1, 1)        # the row of logits each point gets
    y = torch.randint(0, 10, (80,), generator=g)
    y[:40] = logits[:40].argmax(1)                   # half right by construction
    r = cal.evaluate_calibration(model, x, y, batch_size=16, png=tmp_path / "rel.png", title="t")
    p = torch.softmax(logits.double(), 1)
    conf, ok = p.max(1).values, p.argmax(1) == y
    assert r["ece"]["15"] == pytest.approx(naive_ece(conf.tolist(), ok.tolist(), 15), abs=1e-6)
    assert r["ece"]["20"] == pytest.approx(naive_ece(conf.tolist(), ok.tolist(), 20), abs=1e-6)
    assert r["ece_n"] == 80 and len(r["reliability"]) == 20 and r["accuracy"] == ok.double().mean().item()
    with Image.open(tmp_path / "rel.png") as im:
        assert im.size == (600, 640 + 3 * 18)          # three lines of notes under the picture
        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(px, axis=0)) > 20


def test_reliability_plot_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="bins must be a non-empty list"):
        charts.save_reliability(tmp_path / "r.png", [])
    with pytest.raises(ValueError, match="suffix"):
        charts.save_reliability(tmp_path / "r.nope", [{"lo": 0, "hi": 1, "count": 1, "conf": 0.5, "acc": 1}])
