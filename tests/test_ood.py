"""OOD detection (ebjdat.evaluate.ood): AUROC against scikit-learn and the pairwise
definition, the three JEM scores against per-sample computations, the OOD sets (noise,
interpolations, datasets converted to the run's shape) and the histogram pictures."""
import pickle

import numpy as np
import pytest

from ebjdat import charts
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from ebjdat import plots
from ebjdat.data import load_dataset
from ebjdat.data.base import fit_size
from ebjdat.evaluate import ood
from ebjdat.models import SmallCNN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digit_images():
    """All 359 test digits (x only)."""
    return load_dataset("digits", "test").x


# ---------------------------------------------------------------- AUROC
@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_sklearn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    n_in, n_out = 30 + seed * 7, 25 + seed * 3
    # few distinct values: many ties inside and across the two sets
    s_in = torch.randint(0, 6, (n_in,), generator=g).double() + 0.5
    s_out = torch.randint(0, 5, (n_out,), generator=g).double()
    s_out[::3] += 0.5
    expected = roc_auc_score(np.r_[np.ones(n_in), np.zeros(n_out)], np.r_[s_in.numpy(), s_out.numpy()])
    assert ood.auroc(s_in, s_out) == pytest.approx(expected, abs=1e-12)
    cont_in, cont_out = torch.randn(n_in, generator=g) + 0.7, torch.randn(n_out, generator=g)
    expected = roc_auc_score(np.r_[np.ones(n_in), np.zeros(n_out)], np.r_[cont_in.numpy(), cont_out.numpy()])
    assert ood.auroc(cont_in, cont_out) == pytest.approx(expected, abs=1e-12)


def test_auroc_is_the_pairwise_probability_with_infinities():
    s_in = torch.tensor([3.0, float("inf"), 1.0, 1.0, -2.0])
    s_out = torch.tensor([1.0, -float("inf"), 0.0, float("inf")])
    pairs = [(a > b) + 0.5 * (a == b) for a in s_in.tolist() for b in s_out.tolist()]
    assert ood.auroc(s_in, s_out) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    assert ood.auroc(torch.ones(4), torch.zeros(3)) == 1.0
    assert ood.auroc(torch.zeros(4), torch.ones(3)) == 0.0
    assert ood.auroc(torch.ones(4), torch.ones(3)) == 0.5


def test_auroc_bad_input():
    with pytest.raises(ValueError, match="scores_in is empty"):
        ood.auroc(torch.zeros(0), torch.ones(3))
    with pytest.raises(ValueError, match="scores_out holds NaN"):
        ood.auroc(torch.ones(3), torch.tensor([0.0, float("nan")]))


# ---------------------------------------------------------------- scores
@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = SmallCNN(1, 10, width=8, norm="batch")
    with torch.no_grad():   # non-trivial running statistics, so that eval mode matters
        model.train()
        model(torch.rand(64, 1, 8, 8) * 2 - 1)
    return model.eval()


def test_scores_equal_one_sample_at_a_time_computations(cnn, digit_images):
    x = digit_images[:12]
    s = ood.ood_scores(cnn, x, batch_size=5)
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        logits = cnn(xi)
        lp = torch.logsumexp(logits, 1)
        (g,) = torch.autograd.grad(lp.sum(), xi)
        assert s["log_px"][i].item() == pytest.approx(lp.item(), rel=1e-5, abs=1e-6)
        assert s["max_py"][i].item() == pytest.approx(F.softmax(logits, 1).max().item(), rel=1e-5)
        assert s["neg_grad_norm"][i].item() == pytest.approx(-g.norm().item(), rel=1e-4)
    assert (s["neg_grad_norm"] <= 0).all() and not cnn.training


class Quadratic(nn.Module):
    """logits_k = -||x - m||^2 / D + b_k: log p(x) is highest near the mean image m."""

    def __init__(self, m):
        super().__init__()
        self.m = nn.Parameter(m.clone())
        self.b = nn.Parameter(torch.linspace(0, 1, 10))

    def forward(self, x):
        d = (x - self.m).flatten(1).pow(2).mean(1, keepdim=True)
        return -d * 20 + self.b


def test_detection_of_noise_and_the_histogram_picture(digit_images, tmp_path):
    model = Quadratic(digit_images.mean(0))
    x_in = digit_images[:100]
    sets = ood.load_sets(["noise", "interp"], (1, 8, 8), 100, test_x=digit_images, seed=0)
    r = ood.ood_detection(model, x_in, sets, batch_size=32, out_dir=tmp_path)
    assert r["ood_auroc"]["noise"]["log_px"] > 0.99                   # noise is far from every digit
    assert set(r["ood_auroc"]) == {"noise", "interp"} and r["ood_n"] == {"in": 100, "noise": 100, "interp": 100}
    # the same numbers as auroc of the scores, computed apart
    s_in, s_out = ood.ood_scores(model, x_in), ood.ood_scores(model, sets["interp"])
    for k in ood.SCORES:
        assert r["ood_auroc"]["interp"][k] == ood.auroc(s_in[k], s_out[k])
    # the gradient of log p(x) is -40 (x - m) / D: its norm grows with the distance to m
    assert r["ood_auroc"]["noise"]["neg_grad_norm"] > 0.99
    assert [str(p) for p in r["files"]] == [str(tmp_path / "ood_noise.png"), str(tmp_path / "ood_interp.png")]
    with Image.open(tmp_path / "ood_noise.png") as im:
        assert im.width == 640 and im.height > 3 * 300                 # three panels, a title and a note
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 50


def test_nan_scores_give_none_with_a_note(digit_images):
    class NaNModel(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10] * float("nan")
    r = ood.ood_detection(NaNModel(), digit_images[:8], {"noise": torch.rand(8, 1, 8, 8)})
    assert r["ood_auroc"]["noise"]["log_px"] is None and "NaN" in r["ood_notes"][0]


# ---------------------------------------------------------------- sets and shapes
def test_to_shape_channels_and_size():
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    rgb = ood.to_shape(grey, (3, 8, 8))
    assert rgb.shape == (3, 3, 8, 8) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    col = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    pix = (col + 1) / 2                                       # luminance of [0, 1] pixels, back to [-1, 1]
    luma = (0.299 * pix[:, 0] + 0.587 * pix[:, 1] + 0.114 * pix[:, 2]) * 2 - 1
    assert torch.allclose(ood.to_shape(col, (1, 8, 8))[:, 0], luma, atol=1e-6)
    assert torch.equal(ood.to_shape(grey, (1, 16, 16)), fit_size(grey, 16))   # a whole-factor upscale
    big = torch.full((2, 3, 32, 32), 0.25)
    small = ood.to_shape(big, (1, 8, 8))
    assert small.shape == (2, 1, 8, 8) and torch.allclose(small, torch.full_like(small, 0.25))
    assert ood.to_shape(torch.rand(2, 1, 12, 10) * 2 - 1, (1, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="cannot convert 2-channel"):
        ood.to_shape(torch.zeros(1, 2, 8, 8), (3, 8, 8))


def test_noise_and_interp_sets():
    a = ood.ood_set("noise", (1, 8, 8), 50, seed=3)
    assert a.shape == (50, 1, 8, 8) and a.min() >= -1 and a.max() <= 1 and a.std() > 0.5
    assert torch.equal(a, ood.ood_set("noise", (1, 8, 8), 50, seed=3))
    assert not torch.equal(a, ood.ood_set("noise", (1, 8, 8), 50, seed=4))
    # one-hot test images: the midpoint of two different ones has exactly two pixels at 0
    test_x = torch.full((16, 1, 4, 4), -1.0)
    test_x.view(16, 16)[torch.arange(16), torch.arange(16)] = 1.0
    mix = ood.ood_set("interp", (1, 4, 4), 200, test_x=test_x, seed=0)
    assert mix.shape == (200, 1, 4, 4)
    assert ((mix.flatten(1) == 0).sum(1) == 2).all() and ((mix.flatten(1) == -1).sum(1) == 14).all()
    with pytest.raises(ValueError, match="at least 2"):
        ood.ood_set("interp", (1, 4, 4), 5, test_x=test_x[:1])


def _fake_cifar10_test(root, n=7):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, n)],
         b"batch_label": b"fake"}
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(d, f, protocol=2)


def test_dataset_sets_are_converted_to_the_run_shape(tmp_path, digit_images):
    _fake_cifar10_test(tmp_path)
    full = load_dataset("cifar10", "test", root=tmp_path).x
    x = ood.ood_set("cifar10", (1, 8, 8), 5, root=tmp_path, seed=0)     # RGB 32x32 -> grey 8x8
    keep = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:5].sort().values
    assert torch.equal(x, ood.to_shape(full[keep], (1, 8, 8)))
    assert len(ood.ood_set("cifar10", (3, 32, 32), 100, root=tmp_path)) == 7   # all there is
    up = ood.ood_set("digits", (3, 16, 16), 4, seed=1)                   # grey 8x8 -> RGB 16x16
    assert up.shape == (4, 3, 16, 16) and torch.equal(up[:, 0], up[:, 2])


def test_parse_names():
    assert ood.parse_names("noise , interp,CIFAR100,svhn") == ["noise", "interp", "cifar100", "svhn"]
    assert ood.parse_names(["digits"]) == ["digits"]
    with pytest.raises(ValueError, match="'bogus' is not an OOD set; known: noise, interp, digits"):
        ood.parse_names("noise,bogus")
    with pytest.raises(ValueError, match="comma-separated"):
        ood.parse_names("noise,,interp")
    with pytest.raises(ValueError, match="noise named twice"):
        ood.parse_names("noise,interp,noise")


def test_histogram_panels_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="panels must be a non-empty dict"):
        charts.save_histogram_panels(tmp_path / "p.png", {})
    with pytest.raises(ValueError, match="suffix"):
        charts.save_histogram_panels(tmp_path / "p.xyz", {"a": {"s": torch.randn(5)}})


def test_an_image_folder_as_ood_set(tmp_path):
    """A dataset of the file loaders (here imagefolder: RGB PNGs decoded at 64 x 64) brought
    to a grey 8 x 8 run; more images asked for than there are gives all of them."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 1), ("val", 3)):
        for cls in ("a", "b"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    x = ood.ood_set("imagefolder", (1, 8, 8), 4, root=tmp_path, seed=2)
    expected = load_dataset("imagefolder", "test", root=tmp_path, n=4, seed=2).x
    assert x.shape == (4, 1, 8, 8) and torch.equal(x, ood.to_shape(expected, (1, 8, 8)))
    assert len(ood.ood_set("imagefolder", (1, 8, 8), 50, root=tmp_path)) == 6
