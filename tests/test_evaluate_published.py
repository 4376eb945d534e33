"""`ebjdat eval` beyond accuracy and PGD: the published attack suite against torchattacks'
MultiAttack, top-5, OOD / calibration / both protocols through the CLI, the RobustBench card,
the published FID (top-k filter, torchmetrics or ours) and the new flags' early checks."""
import json
import sys

import pytest
import torch
from torch import nn

from ebjdat import cli
from ebjdat.evaluate import (
    AttackSpec,
    PixelModel,
    evaluate,
    fid_is,
    to_pixels,
)
from ebjdat.evaluate import autoattack as aa
from ebjdat.evaluate import fid as fidmod
from ebjdat.evaluate.robustness import correct

from .conftest import Linear

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the published attack suite
def test_published_suite_equals_torchattacks_multiattack(trained, digits):
    """Our sequential run of the published suite (each attack on the points every earlier
    one left correct) gives the same robust points as torchattacks' own MultiAttack."""
    ta = aa.torchattacks_module()
    x, y = to_pixels(digits[0][:24]), digits[1][:24]
    pm = PixelModel(trained)
    mask, info = aa.published_autoattack_correct(pm, x, y, eps=16 / 255, steps=5, n_queries=40, batch_size=64)
    assert info["attacks"] == ["apgd-ce", "apgd-dlr", "fab-t", "square"]
    assert info["steps"] == 5 and info["n_queries"] == 40
    after = list(info["robust_after"].values())
    assert after == sorted(after, reverse=True) and after[-1] == int(mask.sum())
    multi = ta.MultiAttack([atk for _, atk in aa.published_suite(pm, eps=16 / 255, n_classes=10, steps=5,
                                                                  n_queries=40)])
    with torch.random.fork_rng():
        xa = multi(x, y)
    with torch.no_grad():
        theirs = pm(xa).argmax(1) == y
    # the same seeds and the same points attacked in the same order: the same robust points
    assert torch.equal(theirs.cpu(), mask) and int(mask.sum()) < int(correct(pm, x, y).sum())


def test_published_protocol_reports_the_published_suite(trained, digits):
    x, y = digits
    r = evaluate(trained, x[:32], y[:32], AttackSpec(protocol="published", steps=5, published_aa_steps=5,
                                                     published_aa_queries=30))
    ref = r["published_protocol"]
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
    r = evaluate(model, x, y, AttackSpec(eps=0.0, steps=0))
    expected = top_k_accuracy_score(y.numpy(), logits.numpy(), k=5, labels=list(range(100)))
    assert round(r["top5_acc"] * 150) == round(expected * 150) >= 50     # float32 means: compare counts
    assert r["top5_acc"] > r["clean_acc"] and r["standard_protocol"]["top5_acc"] == r["top5_acc"]
    assert "top5_acc" not in evaluate(model_10 := Linear(torch.randn(10, 64, generator=g), torch.zeros(10)), x,
                                      y % 10, AttackSpec(eps=0.0, steps=0))
    assert isinstance(model_10, nn.Module)


# ---------------------------------------------------------------- the CLI: OOD, calibration, both protocols
def test_cli_ood_calibration_and_both_protocols(tiny_run, tmp_path, capsys):
    """The done-when check: `ebjdat eval --ood noise --calibration --json F` on a trained tiny
    digits run reports an AUROC for uniform noise and an ECE in [0, 1]; --protocol both
    shows the two protocols side by side."""
    from sklearn.metrics import roc_auc_score

    from ebjdat.evaluate import load_for_eval, ood
    from ebjdat.evaluate.calibration import confidences, expected_calibration_error
    js, rb = tmp_path / "r.json", tmp_path / "rb.json"
    rc = cli.main(["eval", "--checkpoint", str(tiny_run), "--ood", "noise", "--calibration", "--json", str(js),
                   "--robustbench-json", str(rb), "--n", "32", "--steps", "2", "--no-samples", "--out",
                   str(tmp_path / "e"), "--device", "cpu", "--protocol", "both", "--published-aa-steps", "2",
                   "--published-aa-queries", "10"])
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
    header = next(ln for ln in lines if "standard" in ln and "published" in ln)
    assert header.index("standard") < header.index("published")
    noise_row = next(ln for ln in lines if ln.startswith("test-time noise"))
    assert "none" in noise_row and "N(0, 0.03^2)" in noise_row
    assert "alpha 1/255 in [-1, 1]" in next(ln for ln in lines if ln.startswith("PGD "))
    assert r["standard_protocol"]["clean_acc"] == r["clean_acc"] and r["standard_protocol"]["test_time_noise"] is None
    assert r["published_protocol"]["alpha_model_units"] == 1 / 255 and r["published_protocol"]["noise_sigma"] == 0.03
    assert "OOD detection AUROC" in out and "ECE (15 bins)" in out and "published way: FD" in out
    assert (tmp_path / "e" / "ood_noise.png").exists() and (tmp_path / "e" / "reliability.png").exists()
    # the published generation metrics: the filtered replay buffer
    gr = r["gen_published"]
    assert gr["ratio"] == 0.9 and gr["buffer_size"] == 256 and gr["kept"] == sum(gr["kept_per_class"]) < 256
    assert r["gen_n_published"] == gr["kept"] and r["gen_fd_published"] > 0
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
    res = {"n": 10, "step": 3, "published_protocol": {"eps_pixels": 4 / 255, "eps_model_units": 8 / 255,
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
    from ebjdat.evaluate.buffer_fid import check_ratio, topk_per_class
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
    from ebjdat.evaluate.buffer_fid import filter_buffer
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
    from ebjdat.evaluate.buffer_fid import published_fid
    g = torch.Generator().manual_seed(0)
    gen, real = torch.rand(12, 1, 8, 8, generator=g) * 2 - 1, torch.rand(20, 1, 8, 8, generator=g) * 2 - 1
    calls = []
    _fake_torchmetrics(monkeypatch, calls)
    r = published_fid(gen, real, inception_weights=tmp_path / "w.pth", batch_size=8)
    assert r["fid_published_backend"] == "torchmetrics" and r["fid_published_n"] == 12
    assert calls[0] == ("init", 2048, {"feature_extractor_weights_path": str(tmp_path / "w.pth")})
    assert {c[1:3] for c in calls[1:]} == {(torch.uint8, (3, 8, 8))}
    assert sum(1 for c in calls if c[0] == "update" and c[3]) == 3     # 20 real images in batches of 8
    to_u8 = fidmod.uint8_rgb
    assert r["fid_published"] == pytest.approx(fidmod.frechet_distance(
        to_u8(real).double().flatten(1)[:, :3], to_u8(gen).double().flatten(1)[:, :3]))
    # torchmetrics there but failing (offline): ebjdat's FID, saying why
    _fake_torchmetrics(monkeypatch, [], fail=True)
    r = published_fid(gen, real)
    assert "torchmetrics' FID failed (RuntimeError: no network" in r["fid_published_note"]
    assert "Inception weights" in r["fid_published_note"] and "fid_published" not in r


def test_published_fid_without_torchmetrics_uses_ours(monkeypatch):
    from ebjdat.evaluate.buffer_fid import published_fid
    monkeypatch.setitem(sys.modules, "torchmetrics", None)            # import torchmetrics -> ImportError

    def extractor(u8):
        return u8.double().flatten(1)[:, :4], torch.zeros(len(u8), 7, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    gen, real = torch.rand(10, 1, 8, 8, generator=g) * 2 - 1, torch.rand(16, 1, 8, 8, generator=g) * 2 - 1
    r = published_fid(gen, real, extractor=extractor)
    assert r["fid_published_backend"] == "ebjdat" and "not installed" in r["fid_published_note"]
    assert r["fid_published"] == pytest.approx(fid_is(gen, real, extractor=extractor)["fid"])


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
    (["--published-aa-steps", "0"], ["--published-aa-steps 0"]),
    (["--published-aa-queries", "0"], ["--published-aa-queries 0"]),
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
    assert "no replay buffer" in none["gen_published"]["note"] and len(none) == 1
    # not the digits: the published FID, here without Inception weights, saying so
    r = tr._published_generation(trained, x, x, x, digits=False, ratio=0.5, inception_weights=None,
                                 device="cpu", batch_size=16)
    assert r["gen_published"]["kept"] == sum(r["gen_published"]["kept_per_class"]) <= 32
    assert "Inception weights" in r["fid_published_note"] and "fid_published" not in r
    d = tr._published_generation(trained, x, x, x, digits=True, ratio=0.5, inception_weights=None,
                                 device="cpu", batch_size=16)
    assert d["gen_n_published"] == d["gen_published"]["kept"] and d["gen_fd_published"] > 0
