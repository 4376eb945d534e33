"""ebjdat.evaluate and `ebjdat eval`: the numbers obey the sanity orderings, masked gradients
are caught, the published code protocol matches independent computations (a hand-written PGD
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
from ebjdat.evaluate import (
    AttackSpec,
    EvalSpec,
    PixelModel,
    evaluate,
    evaluate_checkpoint,
    fid_is,
    from_pixels,
    published_noise,
    published_protocol,
    to_pixels,
)
from ebjdat.evaluate import autoattack as aa
from ebjdat.evaluate import fid as fidmod
from ebjdat.evaluate.robustness import correct

from .conftest import Linear, gpu

pytestmark = pytest.mark.usefixtures("one_thread")


class RoundedInput(nn.Module):
    """Masked gradients: the forward rounds pixels to 1/16 (the digits' own grid, so clean
    accuracy is unchanged) and the input gradient is exactly zero everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        p = torch.round(to_pixels(x) * 16) / 16
        return self.model(from_pixels(p))


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
    r = evaluate(trained, x, y, AttackSpec(eps=[8 / 255, 2 / 255, 16 / 255, 32 / 255], steps=10))
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
    one = evaluate(trained, x, y, AttackSpec(eps=16 / 255, steps=5, restarts=1))
    three = evaluate(trained, x, y, AttackSpec(eps=16 / 255, steps=5, restarts=3))
    assert three["pgd_acc"] <= one["pgd_acc"]          # restart 0 is the same run, then AND
    l2 = evaluate(trained, x, y, AttackSpec(eps=[1.0, 0.5], norm="l2", steps=5))
    assert l2["pgd_curve"][0]["acc"] == l2["clean_acc"] and l2["sanity"] == []
    assert l2["pgd_curve"][2]["acc"] <= l2["pgd_curve"][1]["acc"]


def test_autoattack_at_most_pgd_reduced_budget(trained, digits):
    x, y = digits
    r = evaluate(trained, x[:32], y[:32], AttackSpec(eps=16 / 255, steps=10, autoattack=True, autoattack_steps=10,
                                                     autoattack_queries=50))
    assert r["autoattack"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert r["autoattack"]["version"] == "standard (reduced budget)"
    assert r["autoattack_acc"] <= r["pgd_acc"] and r["worst_case_acc"] <= r["autoattack_acc"]
    assert r["sanity_checks"]["autoattack_le_pgd"]["passed"] and r["sanity"] == []


def test_autoattack_standard_budget_on_a_handful(trained, digits):
    x, y = digits
    r = evaluate(trained, x[:6], y[:6], AttackSpec(eps=16 / 255, steps=20, autoattack=True, protocol="standard"))
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
    r = evaluate(masked, x, y, AttackSpec(eps=8 / 255, steps=10))
    assert r["clean_acc"] == evaluate(trained, x, y, AttackSpec(eps=0.0, steps=0))["clean_acc"]
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


def test_published_protocol_matches_a_hand_written_pgd_loop(trained, digits):
    """The published PGD-20: eps 8/255 and alpha 1/255 on the [-1, 1] input, after the
    test-time noise x + 0.03 z (z from a CPU generator seeded with the seed), clamped."""
    x, y = digits
    advs = []
    for sigma in (0.0, 0.03):
        spec = AttackSpec(random_start=False, published_noise_sigma=sigma, seed=5, published_aa_steps=1,
                          published_aa_queries=1)
        ref, _, adv = published_protocol(trained, x, y, spec)
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
    with pytest.raises(ValueError, match="published_noise_sigma must be a finite number >= 0"):
        published_protocol(nn.Linear(64, 10), x, torch.zeros(len(x), dtype=torch.long),
                           AttackSpec(published_noise_sigma=-0.1))


def _linear_problem(k, seed=0, n=128):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 2.6 - 1.3).clamp(-1, 1)  # a fifth of pixels on the box
    w, b = torch.randn(k, 64, generator=g) * 0.5 / k ** 0.5, torch.randn(k, generator=g) * 0.1
    y = (x.flatten(1) @ w.T + b).argmax(1)
    flip = torch.rand(n, generator=g) < 0.1                                 # some clean errors
    y[flip] = (y[flip] + 1) % k
    return Linear(w, b).eval(), x, y


def test_published_protocol_equals_closed_form_on_a_linear_model():
    model, x, y = _linear_problem(2)
    exact = exact_linf_robust(model.w.detach(), model.b.detach(), x, y, 8 / 255).float().mean().item()
    assert 0.3 < exact < 0.8                                                # a non-trivial case
    # without the test-time noise the published protocol attacks x itself; 2 classes: no APGD-DLR
    r = evaluate(model, x, y, AttackSpec(eps=4 / 255, protocol="both", steps=20, published_noise_sigma=0.0,
                                         published_aa_queries=200))
    ref = r["published_protocol"]
    # binary and linear: the gradient sign is constant, PGD reaches the exact worst case
    assert ref["pgd_acc"] == exact and ref["autoattack_acc"] == exact
    assert ref["autoattack"]["attacks"] == ["apgd-ce", "fab-t", "square"]
    assert r["pgd_acc"] == exact                  # 4/255 in pixels is 8/255 in model units
    assert r["sanity"] == []


def test_pgd_never_beats_the_exact_robustness_of_a_multiclass_linear_model():
    model, x, y = _linear_problem(10, seed=1)
    exact = exact_linf_robust(model.w.detach(), model.b.detach(), x, y, 8 / 255).float().mean().item()
    r = evaluate(model, x, y, AttackSpec(eps=4 / 255, protocol="both", steps=20, published_noise_sigma=0.0,
                                         published_aa_steps=10, published_aa_queries=100))
    assert r["pgd_acc"] >= exact and r["published_protocol"]["pgd_acc"] >= exact
    assert r["published_protocol"]["autoattack_acc"] >= exact
    assert r["pgd_acc"] <= exact + 0.05                                      # and comes close


def test_bf16_precision_runs(trained, digits):
    x, y = digits
    r = evaluate(trained, x, y, AttackSpec(eps=8 / 255, steps=3, precision="bf16"))
    assert abs(r["clean_acc"] - evaluate(trained, x, y, AttackSpec(eps=0.0, steps=0))["clean_acc"]) <= 2 / 64
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
                   "--published-aa-steps", "2", "--published-aa-queries", "10", "--protocol", "both"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "published" in out and "AutoAttack" in out and "FID/IS not computed" in out
    r = json.loads(js.read_text())
    for key in ("clean_acc", "pgd_acc", "autoattack_acc", "energy_gap_adv", "energy_gap_gen", "pgd_curve",
                "published_protocol", "sanity", "sanity_checks", "fid_note"):
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
    r = evaluate(model, x, y, AttackSpec(eps=8 / 255, steps=2, protocol="both", autoattack=True, autoattack_steps=3,
                                         autoattack_queries=5, published_aa_steps=3, published_aa_queries=5))
    assert not model.training and r["sanity"] == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train(True)  # the caller's mode comes back, whatever it was
    evaluate(model, x, y, AttackSpec(eps=8 / 255, steps=1, protocol="published", published_aa_steps=1,
                                     published_aa_queries=2))
    assert model.training
    spec = EvalSpec(n=16, samples=False, ood_sets="noise", calibration=True,
                    attack=AttackSpec(steps=2, published_aa_steps=2, published_aa_queries=5))
    runs = [evaluate_checkpoint(tiny_run, spec.with_overrides(protocol=p), out=tmp_path, device="cpu")
            for p in ("standard", "both")]
    assert runs[0]["energy_clean_mean"] == runs[1]["energy_clean_mean"]
    assert runs[0]["files"] == [str(tmp_path / n) for n in ("energy.png", "ood_noise.png", "reliability.png")]
    assert "published_protocol" not in runs[0] and "gen_published" not in runs[0]
    assert runs[0]["ood_auroc"] == runs[1]["ood_auroc"] and runs[0]["ece"] == runs[1]["ece"]


def test_bad_inputs_give_clear_errors(tiny_run, trained, digits, tmp_path, capsys):
    x, y = digits
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        evaluate(trained, x, y, AttackSpec(eps=-0.1))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        evaluate_checkpoint(tiny_run, EvalSpec().with_overrides(eps=[8 / 255, -1.0]))
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate(trained, x, y, AttackSpec(protocol="paper"))
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_checkpoint(tiny_run, EvalSpec().with_overrides(protocol="paper"))
    with pytest.raises(ValueError, match=r"\[-1, 1\] units"):
        evaluate(trained, x * 3, y)
    with pytest.raises(ValueError, match="norm must be one of"):
        evaluate(trained, x, y, AttackSpec(norm="l1"))
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
        evaluate(trained, x, y, AttackSpec(autoattack=True))
    assert cli.main(["eval", "--checkpoint", str(tiny_run), "--autoattack"]) == 2
    assert "pip install --no-deps torchattacks" in capsys.readouterr().err
    # the published code protocol still runs its PGD and says why its APGD is missing
    ref = evaluate(trained, x[:8], y[:8], AttackSpec(protocol="published", steps=2))
    assert ref["published_protocol"]["autoattack_acc"] is None and "autoattack_acc" not in ref
    assert "pip install" in ref["published_protocol"]["autoattack_note"]
    assert ref["worst_case_acc"] == ref["published_protocol"]["pgd_acc"]     # the worst case of what ran


def test_clean_correct_mask_matches_accuracy(trained, digits):
    x, y = digits
    mask = correct(PixelModel(trained), to_pixels(x), y, batch_size=7)
    assert mask.float().mean().item() == evaluate(trained, x, y, AttackSpec(eps=0.0, steps=0))["clean_acc"]


@gpu
def test_evaluate_on_a_gpu_agrees_with_the_cpu(trained, digits):
    x, y = digits
    kw = dict(eps=[8 / 255, 16 / 255], steps=10, protocol="both")
    on_cpu = evaluate(trained, x, y, AttackSpec(published_aa_steps=5, published_aa_queries=50, **kw))
    model = copy.deepcopy(trained).cuda()
    r = evaluate(model, x.cuda(), y.cuda(), AttackSpec(autoattack=True, autoattack_steps=10, autoattack_queries=50,
                                                       published_aa_steps=5, published_aa_queries=50, **kw))
    assert r["clean_acc"] == on_cpu["clean_acc"] and r["sanity"] == []
    # one Philox stream on both devices: the same random starts, so the same attack up to
    # float differences between the devices' convolutions
    assert abs(r["pgd_acc"] - on_cpu["pgd_acc"]) <= 2 / 64
    assert abs(r["published_protocol"]["pgd_acc"] - on_cpu["published_protocol"]["pgd_acc"]) <= 2 / 64
    bf16 = evaluate(model, x.cuda(), y.cuda(), AttackSpec(eps=8 / 255, steps=10, precision="bf16"))
    assert bf16["sanity"] == [] and abs(bf16["clean_acc"] - r["clean_acc"]) <= 2 / 64
