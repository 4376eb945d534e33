"""ebjdat.evaluate and `ebjdat eval`: the numbers obey the sanity orderings, masked gradients
are caught, the reference protocol matches independent computations (a hand-written PGD
loop; the closed-form linf robustness of linear models), and the CLI writes its files."""
import copy
import itertools
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ebjdat import cli, ops
from ebjdat.attacks import PGD
from ebjdat.data import load_dataset
from ebjdat.evaluate import (
    PixelModel,
    evaluate,
    evaluate_checkpoint,
    fid_is,
    from_pixels,
    published_noise,
    reference_protocol,
    to_pixels,
)
from ebjdat.evaluate import autoattack as aa
from ebjdat.evaluate import fid as fidmod
from ebjdat.evaluate.robustness import correct
from ebjdat.models import SmallCNN

from .conftest import gpu


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    te = load_dataset("digits", "test")
    return te.x[:64], te.y[:64]


@pytest.fixture(scope="module")
def trained():
    """A SmallCNN with BatchNorm after 150 Adam steps on the digits (about 90 % test
    accuracy), eval mode: BatchNorm makes any stray switch to train mode visible."""
    torch.manual_seed(0)
    tr = load_dataset("digits", "train")
    model = SmallCNN(1, 10, width=16, norm="batch")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(tr), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(tr.x[idx]), tr.y[idx]).backward()
        opt.step()
    return model.eval().requires_grad_(False)


class RoundedInput(nn.Module):
    """Masked gradients: the forward rounds pixels to 1/16 (the digits' own grid, so clean
    accuracy is unchanged) and the input gradient is exactly zero everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        p = torch.round(to_pixels(x) * 16) / 16
        return self.model(from_pixels(p))


class Linear(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def exact_linf_robust(w, b, x, y, eps, lo=-1.0, hi=1.0):
    """Exact robustness of a linear classifier in the box [lo, hi]: y is kept against class j
    iff min over the ball-and-box of the margin (w_y - w_j).x' + b_y - b_j is > 0, and the
    minimum moves every coordinate as far as allowed against the sign of w_y - w_j."""
    x, w, b = x.flatten(1).double(), w.double(), b.double()
    down, up = (x - eps).clamp_min(lo) - x, (x + eps).clamp_max(hi) - x
    ok = torch.ones(len(x), dtype=torch.bool)
    for j in range(w.shape[0]):
        d = w[y] - w[j]                                       # (N, D)
        margin = (d * x).sum(1) + b[y] - b[j]
        worst = margin + torch.where(d > 0, d * down, d * up).sum(1)
        ok &= (y == j) | ((margin > 0) & (worst > 0))
    return ok


# ---------------------------------------------------------------- sanity orderings
def test_eps0_equals_clean_and_curve_is_monotone(trained, digits):
    x, y = digits
    r = evaluate(trained, x, y, eps=[8 / 255, 2 / 255, 16 / 255, 32 / 255], steps=10)
    curve = r["pgd_curve"]
    assert [p["eps"] for p in curve] == sorted(p["eps"] for p in curve) and curve[0]["eps"] == 0
    assert curve[0]["acc"] == r["clean_acc"] > 0.8
    assert all(b["acc"] <= a["acc"] for a, b in itertools.pairwise(curve))
    assert curve[-1]["acc"] < r["clean_acc"]           # the attack does break points
    assert r["pgd_acc"] == next(p["acc"] for p in curve if p["eps"] == 8 / 255)
    assert r["sanity"] == [] and r["sanity_checks"]["eps0_equals_clean"]["passed"]
    assert r["noise_acc"] >= r["pgd_acc"] and r["zero_grad_frac"] == 0


def test_restarts_only_remove_points_and_l2_works(trained, digits):
    x, y = digits
    one = evaluate(trained, x, y, eps=16 / 255, steps=5, restarts=1)
    three = evaluate(trained, x, y, eps=16 / 255, steps=5, restarts=3)
    assert three["pgd_acc"] <= one["pgd_acc"]          # restart 0 is the same run, then AND
    l2 = evaluate(trained, x, y, eps=[1.0, 0.5], norm="l2", steps=5)
    assert l2["pgd_curve"][0]["acc"] == l2["clean_acc"] and l2["sanity"] == []
    assert l2["pgd_curve"][2]["acc"] <= l2["pgd_curve"][1]["acc"]


def test_autoattack_at_most_pgd_reduced_budget(trained, digits):
    x, y = digits
    r = evaluate(trained, x[:32], y[:32], eps=16 / 255, steps=10, autoattack=True, autoattack_steps=10,
                 autoattack_queries=50)
    assert r["autoattack"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert r["autoattack"]["version"] == "standard (reduced budget)"
    assert r["autoattack_acc"] <= r["pgd_acc"] and r["worst_case_acc"] <= r["autoattack_acc"]
    assert r["sanity_checks"]["autoattack_le_pgd"]["passed"] and r["sanity"] == []


def test_autoattack_standard_budget_on_a_handful(trained, digits):
    x, y = digits
    r = evaluate(trained, x[:6], y[:6], eps=16 / 255, steps=20, autoattack=True, protocol="standard")
    info = r["autoattack"]
    assert info["version"] == "standard" and info["steps"] == 100 and info["n_queries"] == 5000
    assert r["autoattack_acc"] <= r["pgd_acc"] + 1 / 6


def test_autoattack_leaves_global_rng_alone(trained, digits):
    x, y = digits
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    aa.autoattack_correct(PixelModel(trained), to_pixels(x[:4]), y[:4], eps=8 / 255, steps=2, n_queries=5)
    assert torch.equal(torch.rand(3), expected)


def test_masked_gradients_are_flagged(trained, digits):
    x, y = digits
    masked = RoundedInput(trained)
    r = evaluate(masked, x, y, eps=8 / 255, steps=10)
    assert r["clean_acc"] == evaluate(trained, x, y, eps=0.0, steps=0)["clean_acc"]
    assert r["zero_grad_frac"] == 1.0
    names = [s.split(":")[0] for s in r["sanity"]]
    assert "gradients_nonzero" in names and "pgd_beats_noise" in names
    assert not r["sanity_checks"]["gradients_nonzero"]["passed"]


# ---------------------------------------------------------------- independent computations
def test_pixel_wrapper_equals_model_units_with_doubled_eps(trained, digits):
    x, y = digits
    e, a = 6 / 255, 1.5 / 255
    for rs in (False, True):
        pix = PGD(PixelModel(trained), eps=e, alpha=a, steps=10, random_start=rs, clamp=(0.0, 1.0),
                  generator=ops.PhiloxGenerator(7))(to_pixels(x), y)
        mod = PGD(trained, eps=2 * e, alpha=2 * a, steps=10, random_start=rs, clamp=(-1.0, 1.0),
                  generator=ops.PhiloxGenerator(7))(x, y)
        # the two gradients differ by rounding, so a sign step may flip where a gradient
        # element is within rounding of 0: allow a few such elements, no more
        close = (from_pixels(pix) - mod).abs() <= 1e-5
        assert close.float().mean() >= 0.999, f"{int((~close).sum())} of {close.numel()} elements differ"
        assert torch.equal(trained(from_pixels(pix)).argmax(1), trained(mod).argmax(1))


def test_reference_protocol_matches_a_hand_written_pgd_loop(trained, digits):
    """The published PGD-20: eps 8/255 and alpha 1/255 on the [-1, 1] input, after the
    test-time noise x + 0.03 z (z from a CPU generator seeded with the seed), clamped."""
    x, y = digits
    advs = []
    for sigma in (0.0, 0.03):
        ref, _, adv = reference_protocol(trained, x, y, random_start=False, noise_sigma=sigma, seed=5,
                                         aa_steps=1, aa_queries=1)
        x0 = (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
        eps, alpha = 8 / 255, 1 / 255
        xa = x0.clone()
        for _ in range(20):
            xa.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(trained(xa), y), xa)
            xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x0 - eps), x0 + eps).clamp(-1, 1)
        with torch.no_grad():
            clean = trained(x0).argmax(1) == y
            robust = clean & (trained(xa).argmax(1) == y)
        assert torch.allclose(adv, xa, atol=1e-6)
        assert ref["pgd_acc"] == robust.float().mean().item() and ref["clean_acc"] == clean.float().mean().item()
        assert ref["noise_sigma"] == sigma and (ref["test_time_noise"] is None) == (sigma == 0)
        advs.append(adv)
    assert not torch.allclose(advs[0], advs[1], atol=1e-3)            # the noise is there
    assert ref["eps_pixels"] == 4 / 255 and ref["alpha_model_units"] == 1 / 255 and ref["steps"] == 20
    assert ref["alpha_pixels"] == 0.5 / 255 and ref["worst_case_acc"] <= min(ref["pgd_acc"], ref["autoattack_acc"])


def test_published_noise_is_seeded_and_device_independent(digits):
    x, _ = digits
    a, b = published_noise(x, 0.03, 1), published_noise(x, 0.03, 1)
    assert torch.equal(a, b) and not torch.equal(a, published_noise(x, 0.03, 2))
    assert published_noise(x, 0.0, 1) is x and a.min() >= -1 and a.max() <= 1
    inside = (x > -0.8) & (x < 0.8)                                   # pixels the clamp cannot reach
    assert (a - x)[inside].std().item() == pytest.approx(0.03, rel=0.05)
    with pytest.raises(ValueError, match="reference_noise_sigma must be a finite number >= 0"):
        reference_protocol(nn.Linear(64, 10), x, torch.zeros(len(x), dtype=torch.long), noise_sigma=-0.1)


def _linear_problem(k, seed=0, n=128):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 2.6 - 1.3).clamp(-1, 1)  # a fifth of pixels on the box
    w, b = torch.randn(k, 64, generator=g) * 0.5 / k ** 0.5, torch.randn(k, generator=g) * 0.1
    y = (x.flatten(1) @ w.T + b).argmax(1)
    flip = torch.rand(n, generator=g) < 0.1                                 # some clean errors
    y[flip] = (y[flip] + 1) % k
    return Linear(w, b).eval(), x, y


def test_reference_protocol_equals_closed_form_on_a_linear_model():
    model, x, y = _linear_problem(2)
    exact = exact_linf_robust(model.w.detach(), model.b.detach(), x, y, 8 / 255).float().mean().item()
    assert 0.3 < exact < 0.8                                                # a non-trivial case
    # without the test-time noise the published protocol attacks x itself; 2 classes: no APGD-DLR
    r = evaluate(model, x, y, eps=4 / 255, protocol="both", steps=20, reference_noise_sigma=0.0,
                 reference_aa_queries=200)
    ref = r["reference_protocol"]
    # binary and linear: the gradient sign is constant, PGD reaches the exact worst case
    assert ref["pgd_acc"] == exact and ref["autoattack_acc"] == exact
    assert ref["autoattack"]["attacks"] == ["apgd-ce", "fab-t", "square"]
    assert r["pgd_acc"] == exact                  # 4/255 in pixels is 8/255 in model units
    assert r["sanity"] == []


def test_pgd_never_beats_the_exact_robustness_of_a_multiclass_linear_model():
    model, x, y = _linear_problem(10, seed=1)
    exact = exact_linf_robust(model.w.detach(), model.b.detach(), x, y, 8 / 255).float().mean().item()
    r = evaluate(model, x, y, eps=4 / 255, protocol="both", steps=20, reference_noise_sigma=0.0,
                 reference_aa_steps=10, reference_aa_queries=100)
    assert r["pgd_acc"] >= exact and r["reference_protocol"]["pgd_acc"] >= exact
    assert r["reference_protocol"]["autoattack_acc"] >= exact
    assert r["pgd_acc"] <= exact + 0.05                                      # and comes close


def test_bf16_precision_runs(trained, digits):
    x, y = digits
    r = evaluate(trained, x, y, eps=8 / 255, steps=3, precision="bf16")
    assert abs(r["clean_acc"] - evaluate(trained, x, y, eps=0.0, steps=0)["clean_acc"]) <= 2 / 64
    assert r["pgd_curve"][0]["acc"] == r["clean_acc"] and r["precision"] == "bf16"


# ---------------------------------------------------------------- FID / IS
def test_fid_without_weights_says_what_is_missing():
    img = torch.rand(8, 1, 8, 8) * 2 - 1
    note = fid_is(img, img)["fid_note"]
    assert "Inception weights" in note and "--inception-weights" in note and "offline" in note
    note = fid_is(img, img, inception_weights="/no/such/weights.pth")["fid_note"]
    assert "/no/such/weights.pth does not exist" in note


def test_fid_and_is_formulas_with_a_stand_in_extractor():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 4, generator=g, dtype=torch.float64)
    assert abs(fidmod.frechet_distance(feats, feats)) < 1e-8
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    assert fidmod.frechet_distance(feats, feats + shift) == pytest.approx(5.0, abs=1e-8)
    assert fidmod.inception_score(torch.zeros(50, 7))[0] == pytest.approx(1.0)
    one_hot = torch.eye(5).repeat(10, 1) * 100                            # confident, all classes
    assert fidmod.inception_score(one_hot, splits=1)[0] == pytest.approx(5.0, rel=1e-6)
    # the whole path: images -> uint8 RGB -> extractor -> numbers
    seen = []

    def extractor(u8):
        seen.append((u8.dtype, tuple(u8.shape)))
        f = u8.float().flatten(1)[:, :3].double()
        return f, torch.zeros(len(u8), 7, dtype=torch.float64)

    img = torch.rand(12, 1, 8, 8, generator=g) * 2 - 1
    r = fid_is(img, img, extractor=extractor, batch_size=5)
    assert r["fid"] == pytest.approx(0.0, abs=1e-6) and r["is"] == pytest.approx(1.0)
    assert seen[0] == (torch.uint8, (5, 3, 8, 8))


# ---------------------------------------------------------------- checkpoint and CLI
def test_cli_end_to_end_writes_json_and_pngs(tiny_run, tmp_path, capsys):
    js, pngs = tmp_path / "r.json", tmp_path / "png"
    rc = cli.main(["eval", "--checkpoint", str(tiny_run), "--n", "32", "--steps", "3", "--eps", "8/255",
                   "4/255", "--autoattack", "--aa-steps", "5", "--aa-queries", "20", "--json", str(js),
                   "--out", str(pngs), "--device", "cpu", "--sample-steps", "5", "--batch-size", "16",
                   "--ref-aa-steps", "2", "--ref-aa-queries", "10"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "reference (published)" in out and "AutoAttack" in out and "FID/IS not computed" in out
    r = json.loads(js.read_text())
    for key in ("clean_acc", "pgd_acc", "autoattack_acc", "energy_gap_adv", "energy_gap_gen", "pgd_curve",
                "reference_protocol", "sanity", "sanity_checks", "fid_note"):
        assert key in r, key
    assert r["eps"] == 8 / 255 and [p["eps"] for p in r["pgd_curve"]] == [0.0, 4 / 255, 8 / 255]
    assert r["step"] == 1 and r["n"] == 32 and r["energy_generated_from"] == "buffer"
    for name in ("energy", "samples_fresh", "samples_fresh_conditional", "samples_buffer",
                 "samples_buffer_conditional"):
        assert (pngs / f"{name}.png").stat().st_size > 0
    assert sorted(r["files"]) == sorted(str(p) for p in pngs.glob("*.png"))


def test_evaluation_leaves_the_model_alone(tiny_run, tmp_path):
    """Attacks (torchattacks' too, which switch modes themselves) and train-mode samplers
    must not change the model: same mode, same weights and BatchNorm statistics."""
    from ebjdat.evaluate import load_for_eval
    ck = load_for_eval(tiny_run)
    model, x, y = ck["model"], ck["test_set"].x[:16], ck["test_set"].y[:16]
    before = copy.deepcopy(model.state_dict())
    r = evaluate(model, x, y, eps=8 / 255, steps=2, protocol="both", autoattack=True, autoattack_steps=3,
                 autoattack_queries=5, reference_aa_steps=3, reference_aa_queries=5)
    assert not model.training and r["sanity"] == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train(True)  # the caller's mode comes back, whatever it was
    evaluate(model, x, y, eps=8 / 255, steps=1, protocol="reference", reference_aa_steps=1, reference_aa_queries=2)
    assert model.training
    runs = [evaluate_checkpoint(tiny_run, n=16, steps=2, protocol=p, samples=False, out=tmp_path, device="cpu",
                                reference_aa_steps=2, reference_aa_queries=5, ood_sets="noise", calibration=True)
            for p in ("standard", "both")]
    assert runs[0]["energy_clean_mean"] == runs[1]["energy_clean_mean"]
    assert runs[0]["files"] == [str(tmp_path / n) for n in ("energy.png", "ood_noise.png", "reliability.png")]
    assert "reference_protocol" not in runs[0] and "gen_reference" not in runs[0]
    assert runs[0]["ood_auroc"] == runs[1]["ood_auroc"] and runs[0]["ece"] == runs[1]["ece"]


def test_bad_inputs_give_clear_errors(tiny_run, trained, digits, tmp_path, capsys):
    x, y = digits
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        evaluate(trained, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        evaluate_checkpoint(tiny_run, eps=[8 / 255, -1.0])
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate(trained, x, y, protocol="paper")
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_checkpoint(tiny_run, protocol="paper")
    with pytest.raises(ValueError, match=r"\[-1, 1\] units"):
        evaluate(trained, x * 3, y)
    with pytest.raises(ValueError, match="norm must be one of"):
        evaluate(trained, x, y, norm="l1")
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(tiny_run), "--eps", "-0.1"]) == 2
    assert "eps must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "--checkpoint", str(tiny_run), "--protocol", "paper"])
    assert "invalid choice: 'paper'" in capsys.readouterr().err


def test_missing_torchattacks_names_the_install_command(trained, digits, tiny_run, monkeypatch, capsys):
    x, y = digits
    monkeypatch.setitem(sys.modules, "torchattacks", None)   # import torchattacks -> ImportError
    with pytest.raises(ImportError, match="pip install --no-deps torchattacks"):
        evaluate(trained, x, y, autoattack=True)
    assert cli.main(["eval", "--checkpoint", str(tiny_run), "--autoattack"]) == 2
    assert "pip install --no-deps torchattacks" in capsys.readouterr().err
    # the reference protocol still runs its PGD and says why its APGD is missing
    ref = evaluate(trained, x[:8], y[:8], protocol="reference", steps=2)
    assert ref["reference_protocol"]["autoattack_acc"] is None and "autoattack_acc" not in ref
    assert "pip install" in ref["reference_protocol"]["autoattack_note"]
    assert ref["worst_case_acc"] == ref["reference_protocol"]["pgd_acc"]     # the worst case of what ran


def test_clean_correct_mask_matches_accuracy(trained, digits):
    x, y = digits
    mask = correct(PixelModel(trained), to_pixels(x), y, batch_size=7)
    assert mask.float().mean().item() == evaluate(trained, x, y, eps=0.0, steps=0)["clean_acc"]


@gpu
def test_evaluate_on_a_gpu_agrees_with_the_cpu(trained, digits):
    x, y = digits
    kw = dict(eps=[8 / 255, 16 / 255], steps=10, protocol="both")
    on_cpu = evaluate(trained, x, y, reference_aa_steps=5, reference_aa_queries=50, **kw)
    model = copy.deepcopy(trained).cuda()
    r = evaluate(model, x.cuda(), y.cuda(), autoattack=True, autoattack_steps=10, autoattack_queries=50,
                 reference_aa_steps=5, reference_aa_queries=50, **kw)
    assert r["clean_acc"] == on_cpu["clean_acc"] and r["sanity"] == []
    # one Philox stream on both devices: the same random starts, so the same attack up to
    # float differences between the devices' convolutions
    assert abs(r["pgd_acc"] - on_cpu["pgd_acc"]) <= 2 / 64
    assert abs(r["reference_protocol"]["pgd_acc"] - on_cpu["reference_protocol"]["pgd_acc"]) <= 2 / 64
    bf16 = evaluate(model, x.cuda(), y.cuda(), eps=8 / 255, steps=10, precision="bf16")
    assert bf16["sanity"] == [] and abs(bf16["clean_acc"] - r["clean_acc"]) <= 2 / 64


# ---------------------------------------------------------------- the published attack suite
def test_published_suite_equals_torchattacks_multiattack(trained, digits):
    """Our sequential run of the published suite (each attack on the points every earlier
    one left correct) gives the same robust points as torchattacks' own MultiAttack."""
    ta = aa.torchattacks_module()
    x, y = to_pixels(digits[0][:24]), digits[1][:24]
    pm = PixelModel(trained)
    mask, info = aa.reference_autoattack_correct(pm, x, y, eps=16 / 255, steps=5, n_queries=40, batch_size=64)
    assert info["attacks"] == ["apgd-ce", "apgd-dlr", "fab-t", "square"]
    assert info["steps"] == 5 and info["n_queries"] == 40
    after = list(info["robust_after"].values())
    assert after == sorted(after, reverse=True) and after[-1] == int(mask.sum())
    multi = ta.MultiAttack([atk for _, atk in aa.reference_suite(pm, eps=16 / 255, n_classes=10, steps=5,
                                                                  n_queries=40)])
    with torch.random.fork_rng():
        xa = multi(x, y)
    with torch.no_grad():
        theirs = pm(xa).argmax(1) == y
    # the same seeds and the same points attacked in the same order: the same robust points
    assert torch.equal(theirs.cpu(), mask) and int(mask.sum()) < int(correct(pm, x, y).sum())


def test_reference_protocol_reports_the_published_suite(trained, digits):
    x, y = digits
    r = evaluate(trained, x[:32], y[:32], protocol="reference", steps=5, reference_aa_steps=5,
                 reference_aa_queries=30)
    ref = r["reference_protocol"]
    assert ref["autoattack"]["attacks"] == ["apgd-ce", "apgd-dlr", "fab-t", "square"]
    assert ref["autoattack"]["steps"] == 5 and ref["autoattack"]["n_queries"] == 30
    assert r["worst_case_acc"] == ref["worst_case_acc"] <= min(ref["pgd_acc"], ref["autoattack_acc"])
    assert r["alpha"] == 0.5 / 255 and r["eps"] == 4 / 255 and "standard_protocol" not in r
    assert r["sanity"] == [] and ref["clean_acc"] == r["clean_acc"]


# ---------------------------------------------------------------- top-5
def test_top5_accuracy_on_a_100_class_model():
    from sklearn.metrics import top_k_accuracy_score
    g = torch.Generator().manual_seed(0)
    model = Linear(torch.randn(100, 64, generator=g) * 0.3, torch.randn(100, generator=g) * 0.1).eval()
    x = torch.rand(150, 1, 8, 8, generator=g) * 2 - 1
    with torch.no_grad():
        logits = model(x)
    y = torch.randint(0, 100, (150,), generator=g)
    y[:50] = logits[:50].topk(4, 1).indices[:, 3]             # fourth-best: top-5 but not top-1
    r = evaluate(model, x, y, eps=0.0, steps=0)
    expected = top_k_accuracy_score(y.numpy(), logits.numpy(), k=5, labels=list(range(100)))
    assert round(r["top5_acc"] * 150) == round(expected * 150) >= 50     # float32 means: compare counts
    assert r["top5_acc"] > r["clean_acc"] and r["standard_protocol"]["top5_acc"] == r["top5_acc"]
    assert "top5_acc" not in evaluate(model_10 := Linear(torch.randn(10, 64, generator=g), torch.zeros(10)), x,
                                      y % 10, eps=0.0, steps=0)
    assert isinstance(model_10, nn.Module)


# ---------------------------------------------------------------- the CLI: OOD, calibration, both protocols
def test_cli_ood_calibration_and_both_protocols(tiny_run, tmp_path, capsys):
    """The done-when check: `ebjdat eval --ood noise --calibration --json F` on a trained tiny
    digits run reports an AUROC for uniform noise and an ECE in [0, 1]; the default
    --protocol both shows the two protocols side by side."""
    from sklearn.metrics import roc_auc_score

    from ebjdat.evaluate import load_for_eval, ood
    from ebjdat.evaluate.calibration import confidences, expected_calibration_error
    js, rb = tmp_path / "r.json", tmp_path / "rb.json"
    rc = cli.main(["eval", "--checkpoint", str(tiny_run), "--ood", "noise", "--calibration", "--json", str(js),
                   "--robustbench-json", str(rb), "--n", "32", "--steps", "2", "--no-samples", "--out",
                   str(tmp_path / "e"), "--device", "cpu", "--ref-aa-steps", "2", "--ref-aa-queries", "10"])
    assert rc == 0
    out = capsys.readouterr().out
    r = json.loads(js.read_text())
    auc = r["ood_auroc"]["noise"]
    assert set(auc) == {"log_px", "max_py", "neg_grad_norm"} and all(0 <= v <= 1 for v in auc.values())
    assert 0 <= r["ece"]["15"] <= 1 and 0 <= r["ece"]["20"] <= 1
    # the same numbers, computed apart: scikit-learn's AUROC of logsumexp, the ECE of the softmax
    ck = load_for_eval(tiny_run)
    model, x, y = ck["model"], ck["test_set"].x[:32], ck["test_set"].y[:32]
    noise = ood.load_sets(["noise"], (1, 8, 8), 32, test_x=ck["test_set"].x, seed=0)["noise"]
    with torch.no_grad():
        s_in, s_out = torch.logsumexp(model(x), 1), torch.logsumexp(model(noise), 1)
    assert auc["log_px"] == pytest.approx(roc_auc_score([1] * 32 + [0] * 32, torch.cat([s_in, s_out]).numpy()),
                                          abs=1e-9)
    conf, ok, _ = confidences(model, x, y)
    assert r["ece"]["20"] == pytest.approx(expected_calibration_error(conf, ok, 20), abs=1e-12)
    # both protocols, side by side and labelled
    lines = out.splitlines()
    header = next(ln for ln in lines if "standard" in ln and "reference (published)" in ln)
    assert header.index("standard") < header.index("reference (published)")
    noise_row = next(ln for ln in lines if ln.startswith("test-time noise"))
    assert "none" in noise_row and "N(0, 0.03^2)" in noise_row
    assert "alpha 1/255 in [-1, 1]" in next(ln for ln in lines if ln.startswith("PGD "))
    assert r["standard_protocol"]["clean_acc"] == r["clean_acc"] and r["standard_protocol"]["test_time_noise"] is None
    assert r["reference_protocol"]["alpha_model_units"] == 1 / 255 and r["reference_protocol"]["noise_sigma"] == 0.03
    assert "OOD detection AUROC" in out and "ECE (15 bins)" in out and "published way: FD" in out
    assert (tmp_path / "e" / "ood_noise.png").exists() and (tmp_path / "e" / "reliability.png").exists()
    # the published generation metrics: the filtered replay buffer
    gr = r["gen_reference"]
    assert gr["ratio"] == 0.9 and gr["buffer_size"] == 256 and gr["kept"] == sum(gr["kept_per_class"]) < 256
    assert r["gen_n_reference"] == gr["kept"] and r["gen_fd_reference"] > 0
    # the RobustBench card: AutoAttack did not run
    card = json.loads(rb.read_text())
    assert card == r["robustbench"] and card["autoattack_acc"] is None and "--autoattack" in card["autoattack_note"]
    assert card["clean_acc"] == f"{100 * r['clean_acc']:.2f}" and card["eps"] == "8/255"
    assert card["threat_model"] == "Linf" and card["n_examples"] == 32 and card["architecture"] == "SmallCNN"


# ---------------------------------------------------------------- RobustBench
def test_robustbench_card_from_each_protocol(tiny_run, tmp_path, capsys):
    from ebjdat.evaluate import robustbench
    rb = tmp_path / "rb.json"
    assert cli.main(["eval", "--checkpoint", str(tiny_run), "--n", "16", "--steps", "2", "--no-samples", "--out",
                     str(tmp_path / "e"), "--protocol", "standard", "--autoattack", "--aa-steps", "2",
                     "--aa-queries", "5", "--robustbench-json", str(rb), "--norm", "l2"]) == 0
    card = json.loads(rb.read_text())
    assert card["threat_model"] == "L2" and card["eps"] == "0.5" and card["protocol"] == "standard"
    assert card["autoattack_acc"] is not None and float(card["autoattack_acc"]) <= float(card["clean_acc"])
    assert "reduced budget (2 iterations, 5 Square queries" in card["footnote"]
    assert set(card) >= {"name", "dataset", "threat_model", "eps", "clean_acc", "autoattack_acc", "n_examples",
                         "architecture", "number_forward_passes", "additional_data", "footnote"}
    # the published protocol alone: its numbers, its units and its test-time noise in the footnote
    res = {"n": 10, "step": 3, "reference_protocol": {"eps_pixels": 4 / 255, "eps_model_units": 8 / 255,
                                                      "clean_acc": 0.9039, "autoattack_acc": 0.663, "noise_sigma": 0.03,
                                                      "autoattack": {"steps": 20}}}
    from ebjdat.train import TrainConfig
    cfg = TrainConfig.preset("sadajem", dataset="cifar10")
    card = robustbench.entry(res, cfg=cfg, deterministic=False)
    assert card["clean_acc"] == "90.39" and card["autoattack_acc"] == "66.30" and card["eps"] == "4/255"
    assert card["architecture"] == "WideResNet-28-10" and card["dataset"] == "cifar10"
    for words in ("published EB-JDAT protocol", "N(0, 0.03^2)", "randomised", "forward pass is random"):
        assert words in card["footnote"]


def test_deterministic_forward_detects_sampling():
    from ebjdat.evaluate.robustbench import deterministic_forward

    class Noisy(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10] + torch.randn(len(x), 10)
    x = torch.rand(4, 1, 8, 8)
    assert not deterministic_forward(Noisy(), x)
    assert deterministic_forward(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10)).train(), x)


# ---------------------------------------------------------------- the published FID
def test_topk_per_class_filter():
    from ebjdat.evaluate.reference_fid import check_ratio, topk_per_class
    # predicted classes 0, 0, 0, 1, 1, 2, 0; confidence grows with the logit's margin
    logits = torch.tensor([[2.0, 0, 0], [5.0, 0, 0], [3.0, 0, 0], [0, 4.0, 0], [0, 1.0, 0], [0, 0, 1.0],
                           [5.0, 0, 0]])
    assert topk_per_class(logits, 0.5).tolist() == [1, 6, 3]           # floor(0.5 * 4) = 2, 1, floor(0.5) = 0
    assert topk_per_class(logits, 0.9).tolist() == [1, 6, 2, 3]        # floor(3.6) = 3, floor(1.8) = 1, floor(.9) = 0
    assert topk_per_class(logits, 2).tolist() == [1, 6, 3, 4, 5]       # ties: the lower index first
    assert topk_per_class(logits, 100).tolist() == [1, 6, 2, 0, 3, 4, 5]
    for bad in (0, -0.5, 1.5, float("inf"), True):
        with pytest.raises(ValueError, match="ratio"):
            check_ratio(bad)


def test_filter_buffer_keeps_confident_rows(trained, digits):
    from ebjdat.evaluate.reference_fid import filter_buffer
    buf = torch.cat([digits[0], torch.rand(40, 1, 8, 8) * 2 - 1])
    kept, info = filter_buffer(trained, buf, ratio=0.5)
    with torch.no_grad():
        logits = trained(buf)
    pred, conf = logits.argmax(1), torch.softmax(logits, 1).max(1).values
    counts = torch.bincount(pred, minlength=10)
    assert info["kept_per_class"] == (counts // 2).tolist() and info["kept"] == len(kept) == int((counts // 2).sum())
    for c in range(10):   # every kept row of a class is at least as confident as every dropped one
        rows = [i for i in range(len(buf)) if pred[i] == c]
        kept_c = [i for i in rows if any(torch.equal(buf[i], k) for k in kept)]
        dropped = [i for i in rows if i not in kept_c]
        if kept_c and dropped:
            assert min(conf[kept_c]) >= max(conf[dropped])


def _fake_torchmetrics(monkeypatch, calls, fail=False):
    import types

    class FrechetInceptionDistance:
        def __init__(self, feature=2048, **kw):
            if fail:
                raise RuntimeError("no network: cannot download the Inception weights")
            calls.append(("init", feature, kw))
            self.sets = {True: [], False: []}

        def update(self, imgs, real):
            calls.append(("update", imgs.dtype, tuple(imgs.shape[1:]), real))
            self.sets[real].append(imgs.double().flatten(1)[:, :3])

        def compute(self):
            return torch.tensor(fidmod.frechet_distance(torch.cat(self.sets[True]), torch.cat(self.sets[False])))
    mod = types.ModuleType("torchmetrics.image.fid")
    mod.FrechetInceptionDistance = FrechetInceptionDistance
    for name, m in (("torchmetrics", types.ModuleType("torchmetrics")),
                    ("torchmetrics.image", types.ModuleType("torchmetrics.image")), ("torchmetrics.image.fid", mod)):
        monkeypatch.setitem(sys.modules, name, m)


def test_published_fid_uses_torchmetrics_when_installed(monkeypatch, tmp_path):
    from ebjdat.evaluate.reference_fid import published_fid
    g = torch.Generator().manual_seed(0)
    gen, real = torch.rand(12, 1, 8, 8, generator=g) * 2 - 1, torch.rand(20, 1, 8, 8, generator=g) * 2 - 1
    calls = []
    _fake_torchmetrics(monkeypatch, calls)
    r = published_fid(gen, real, inception_weights=tmp_path / "w.pth", batch_size=8)
    assert r["fid_reference_backend"] == "torchmetrics" and r["fid_reference_n"] == 12
    assert calls[0] == ("init", 2048, {"feature_extractor_weights_path": str(tmp_path / "w.pth")})
    assert {c[1:3] for c in calls[1:]} == {(torch.uint8, (3, 8, 8))}
    assert sum(1 for c in calls if c[0] == "update" and c[3]) == 3     # 20 real images in batches of 8
    to_u8 = fidmod.uint8_rgb
    assert r["fid_reference"] == pytest.approx(fidmod.frechet_distance(
        to_u8(real).double().flatten(1)[:, :3], to_u8(gen).double().flatten(1)[:, :3]))
    # torchmetrics there but failing (offline): ebjdat's FID, saying why
    _fake_torchmetrics(monkeypatch, [], fail=True)
    r = published_fid(gen, real)
    assert "torchmetrics' FID failed (RuntimeError: no network" in r["fid_reference_note"]
    assert "Inception weights" in r["fid_reference_note"] and "fid_reference" not in r


def test_published_fid_without_torchmetrics_uses_ours(monkeypatch):
    from ebjdat.evaluate.reference_fid import published_fid
    monkeypatch.setitem(sys.modules, "torchmetrics", None)            # import torchmetrics -> ImportError

    def extractor(u8):
        return u8.double().flatten(1)[:, :4], torch.zeros(len(u8), 7, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    gen, real = torch.rand(10, 1, 8, 8, generator=g) * 2 - 1, torch.rand(16, 1, 8, 8, generator=g) * 2 - 1
    r = published_fid(gen, real, extractor=extractor)
    assert r["fid_reference_backend"] == "ebjdat" and "not installed" in r["fid_reference_note"]
    assert r["fid_reference"] == pytest.approx(fid_is(gen, real, extractor=extractor)["fid"])


def test_fid_of_several_sets_reads_the_real_images_once():
    seen = []

    def extractor(u8):
        seen.append(len(u8))
        return u8.double().flatten(1)[:, :3], torch.zeros(len(u8), 7, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    real, a, b = (torch.rand(k, 1, 8, 8, generator=g) * 2 - 1 for k in (30, 10, 1))
    r = fidmod.fid_is_sets({"": a, "_fresh": a, "_tiny": b}, real, extractor=extractor, batch_size=64)
    assert seen == [30, 10, 10]                                       # real once, then each usable set
    assert r["fid"] == r["fid_fresh"] == pytest.approx(fid_is(a, real, extractor=extractor)["fid"])
    assert "at least 2 images" in r["fid_note_tiny"] and "fid_tiny" not in r


# ---------------------------------------------------------------- new flags fail before any work
@pytest.mark.parametrize("flags,words", [
    (["--ood", "noise,bogus"], ["--ood noise,bogus", "'bogus' is not an OOD set"]),
    (["--ood", "noise,,interp"], ["--ood", "comma-separated"]),
    (["--topk-ratio", "0"], ["--topk-ratio 0", "fraction in (0, 1)"]),
    (["--topk-ratio", "1.5"], ["--topk-ratio 1.5", "whole count"]),
    (["--ref-aa-steps", "0"], ["--ref-aa-steps 0"]),
    (["--ref-aa-queries", "0"], ["--ref-aa-queries 0"]),
])
def test_new_eval_flags_are_checked_before_loading(tiny_run, tmp_path, monkeypatch, capsys, flags, words):
    from ebjdat.evaluate import trained as tr

    def never(*a, **k):
        raise AssertionError("the checkpoint was loaded")
    monkeypatch.setattr(tr, "load_for_eval", never)
    assert cli.main(["eval", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "e"), *flags]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_robustbench_json_must_be_a_new_file(tiny_run, tmp_path, monkeypatch, capsys):
    from ebjdat.evaluate import trained as tr

    def never(*a, **k):
        raise AssertionError("the checkpoint was loaded")
    monkeypatch.setattr(tr, "load_for_eval", never)
    old = tmp_path / "card.json"
    old.write_text("kept")
    ck = ["eval", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "e")]
    assert cli.main(ck + ["--robustbench-json", str(old)]) == 2
    assert "--robustbench-json" in capsys.readouterr().err and old.read_text() == "kept"
    same = str(tmp_path / "r.json")
    assert cli.main(ck + ["--json", same, "--robustbench-json", same]) == 2
    assert "is the --json file" in capsys.readouterr().err


def test_published_generation_branches(trained, digits, monkeypatch):
    from ebjdat.evaluate import trained as tr
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    x, _ = digits
    none = tr._published_generation(trained, None, x, x, digits=False, ratio=0.9, inception_weights=None,
                                    device="cpu", batch_size=16)
    assert "no replay buffer" in none["gen_reference"]["note"] and len(none) == 1
    # not the digits: the published FID, here without Inception weights, saying so
    r = tr._published_generation(trained, x, x, x, digits=False, ratio=0.5, inception_weights=None,
                                 device="cpu", batch_size=16)
    assert r["gen_reference"]["kept"] == sum(r["gen_reference"]["kept_per_class"]) <= 32
    assert "Inception weights" in r["fid_reference_note"] and "fid_reference" not in r
    d = tr._published_generation(trained, x, x, x, digits=True, ratio=0.5, inception_weights=None,
                                 device="cpu", batch_size=16)
    assert d["gen_n_reference"] == d["gen_reference"]["kept"] and d["gen_fd_reference"] > 0
