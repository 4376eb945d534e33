"""The settings of an evaluation (ebjdat/evaluate/spec.py): AttackSpec and EvalSpec keep
the defaults ``evaluate`` and ``evaluate_checkpoint`` had as keyword arguments (those of
``ebjdat eval``'s flags), reject every bad field with a message naming it, are frozen,
and the CLI hands its flags to ``evaluate_checkpoint`` as one EvalSpec."""
import argparse
import dataclasses

import pytest
import torch

from ebjdat import cli
from ebjdat.evaluate import (
    AttackSpec,
    EvalSpec,
    evaluate,
    evaluate_checkpoint,
    published_protocol,
)
from ebjdat.evaluate import cli as eval_cli
from ebjdat.evaluate import trained as tr

from .conftest import Linear

# the keyword defaults of evaluate(...) and evaluate_checkpoint(...) before they took a spec
EVALUATE_DEFAULTS = {"eps": None, "norm": "linf", "steps": 20, "alpha": None, "restarts": 1, "random_start": True,
                     "autoattack": False, "autoattack_steps": 100, "autoattack_queries": 5000,
                     "protocol": "standard", "batch_size": 256, "precision": "fp32", "seed": 0, "noise_draws": 16,
                     "published_aa_steps": 20, "published_aa_queries": 5000, "published_noise_sigma": 0.03}
CHECKPOINT_DEFAULTS = {"n": 1000, "samples": True, "n_gen": None, "sample_steps": 100, "ood_sets": (),
                       "calibration": False, "topk_ratio": 0.9, "robustbench_entry": False}


def test_defaults_are_those_of_the_keyword_arguments():
    assert dataclasses.asdict(AttackSpec()) == EVALUATE_DEFAULTS
    spec = EvalSpec()
    assert {k: getattr(spec, k) for k in CHECKPOINT_DEFAULTS} == CHECKPOINT_DEFAULTS
    # both run the standard protocol by default: the published one (minutes of AutoAttack) is asked for
    assert spec.attack == AttackSpec() and spec.attack.protocol == "standard"
    assert dataclasses.asdict(spec.attack) == EVALUATE_DEFAULTS
    assert AttackSpec().radii == [8 / 255] and AttackSpec(norm="l2").radii == [0.5]


def _eval_args(*flags):
    parser = argparse.ArgumentParser()
    eval_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["eval", "--checkpoint", "run", *flags])


def test_the_flags_defaults_are_the_specs():
    assert eval_cli.spec_from_args(_eval_args()) == EvalSpec()


def test_the_default_protocol_is_the_standard_one_and_published_is_asked_for():
    """The published protocol's AutoAttack suite takes minutes on a CPU: eval's default
    (about a minute on the digits) leaves it out; --protocol published or both runs it."""
    assert _eval_args().protocol == "standard" and EvalSpec().attack.protocol == "standard"
    for p in ("published", "both"):
        assert eval_cli.spec_from_args(_eval_args("--protocol", p)).attack.protocol == p


def test_eps_zero_is_accepted_and_measures_the_clean_accuracy(tmp_path):
    """--eps 0: the PGD accuracy at radius 0 is the clean accuracy (the curve includes 0 anyway)."""
    args = _eval_args("--eps", "0", "8/255", "--out", str(tmp_path / "ev"))
    eval_cli.check_args(args)   # no ValueError
    assert eval_cli.spec_from_args(args).attack.radii == [0.0, 8 / 255]
    torch.manual_seed(0)
    model = Linear(torch.randn(10, 64), torch.zeros(10))
    x = torch.rand(24, 1, 8, 8) * 2 - 1
    y = torch.randint(0, 10, (24,))
    r = evaluate(model, x, y, AttackSpec(eps=0, steps=3))
    assert r["pgd_acc"] == r["clean_acc"] and r["eps"] == 0.0 and not r["sanity"]


def test_flags_become_the_spec(tiny_run, tmp_path, monkeypatch, capsys):
    seen = {}

    def stop(checkpoint, spec, **kw):
        seen.update(checkpoint=checkpoint, spec=spec, **kw)
        raise ValueError("stopped after the spec")
    monkeypatch.setattr(tr, "evaluate_checkpoint", stop)
    rc = cli.main(["eval", "--checkpoint", str(tiny_run), "--n", "32", "--eps", "8/255", "4/255", "--norm", "linf",
                   "--steps", "3", "--alpha", "1/255", "--restarts", "2", "--protocol", "published",
                   "--published-aa-steps", "4", "--published-aa-queries", "9", "--batch-size", "16", "--precision", "bf16",
                   "--no-samples", "--sample-steps", "7", "--ood", "noise,interp", "--calibration", "--topk-ratio",
                   "5", "--robustbench-json", str(tmp_path / "rb.json"), "--seed", "3", "--out", str(tmp_path / "e"),
                   "--device", "cpu", "--data-root", str(tmp_path), "--inception-weights", "w.pth"])
    assert rc == 2 and "stopped after the spec" in capsys.readouterr().err
    attack = AttackSpec(eps=[8 / 255, 4 / 255], steps=3, alpha=1 / 255, restarts=2, protocol="published",
                        published_aa_steps=4, published_aa_queries=9, batch_size=16, precision="bf16", seed=3)
    assert seen["spec"] == EvalSpec(attack=attack, n=32, samples=False, sample_steps=7, ood_sets=("noise", "interp"),
                                    calibration=True, topk_ratio=5.0, robustbench_entry=True)
    assert seen["out"] == str(tmp_path / "e") and seen["device"] == "cpu" and seen["progress"] is True
    assert seen["data_root"] == str(tmp_path) and seen["inception_weights"] == "w.pth"


BAD_ATTACK = [
    ("eps", -0.1, ValueError, "eps must be >= 0"),
    ("eps", [], ValueError, "eps must name at least one radius"),
    ("eps", 2.0, ValueError, "eps must be <= 1 for linf"),
    ("eps", float("nan"), ValueError, "eps must be finite"),
    ("eps", "8/255", ValueError, "eps must be finite real numbers"),
    ("norm", "l1", ValueError, "norm must be one of"),
    ("steps", -1, ValueError, "steps must be an integer >= 0"),
    ("steps", 2.5, ValueError, "steps must be an integer >= 0"),
    ("alpha", -0.1, ValueError, "alpha must be a finite number >= 0 or None"),
    ("alpha", float("inf"), ValueError, "alpha must be a finite number >= 0 or None"),
    ("alpha", True, ValueError, "alpha must be a finite number >= 0 or None"),
    ("restarts", 0, ValueError, "restarts must be an integer >= 1"),
    ("random_start", 1, TypeError, "random_start must be True or False"),
    ("autoattack", "yes", TypeError, "autoattack must be True or False"),
    ("autoattack_steps", 0, ValueError, "autoattack_steps must be an integer >= 1"),
    ("autoattack_queries", 0, ValueError, "autoattack_queries must be an integer >= 1"),
    ("protocol", "paper", ValueError, "protocol must be one of"),
    ("batch_size", 0, ValueError, "batch_size must be an integer >= 1"),
    ("batch_size", True, ValueError, "batch_size must be an integer >= 1"),
    ("precision", "fp16", ValueError, "precision must be one of"),
    ("seed", -1, ValueError, r"seed must be an integer in \[0, 2\*\*63\)"),
    ("seed", 2**63, ValueError, r"seed must be an integer in \[0, 2\*\*63\)"),
    ("noise_draws", 0, ValueError, "noise_draws must be an integer >= 1"),
    ("published_aa_steps", 0, ValueError, "published_aa_steps must be an integer >= 1"),
    ("published_aa_queries", 0, ValueError, "published_aa_queries must be an integer >= 1"),
    ("published_noise_sigma", -0.1, ValueError, "published_noise_sigma must be a finite number >= 0"),
    ("published_noise_sigma", float("inf"), ValueError, "published_noise_sigma must be a finite number >= 0"),
]
BAD_CHECKPOINT = [
    ("n", 0, ValueError, r"n \(test points\) must be an integer >= 1"),
    ("n", True, ValueError, r"n \(test points\) must be an integer >= 1"),
    ("samples", None, TypeError, "samples must be True or False"),
    ("n_gen", 0, ValueError, "n_gen must be an integer >= 1"),
    ("sample_steps", -1, ValueError, "sample_steps must be an integer >= 0"),
    ("ood_sets", "noise,bogus", ValueError, "ood_sets: 'bogus' is not an OOD set"),
    ("ood_sets", "noise,,interp", ValueError, "ood_sets: .*comma-separated"),
    ("calibration", 1, TypeError, "calibration must be True or False"),
    ("topk_ratio", 0, ValueError, "topk_ratio: top-k ratio must be a fraction in"),
    ("topk_ratio", 1.5, ValueError, "topk_ratio: top-k ratio 1.5 >= 1 must be a whole count"),
    ("robustbench_entry", "yes", TypeError, "robustbench_entry must be True or False"),
    ("attack", {"steps": 2}, TypeError, "attack must be an AttackSpec, got dict"),
]


@pytest.mark.parametrize("field,value,error,words", BAD_ATTACK)
def test_a_bad_attack_field_is_named(field, value, error, words):
    for make in (lambda: AttackSpec(**{field: value}), lambda: AttackSpec().with_overrides(**{field: value}),
                 lambda: EvalSpec().with_overrides(**{field: value})):
        with pytest.raises(error, match=words) as e:
            make()
        assert str(e.value).startswith(field)


@pytest.mark.parametrize("field,value,error,words", BAD_CHECKPOINT)
def test_a_bad_checkpoint_field_is_named(field, value, error, words):
    for make in (lambda: EvalSpec(**{field: value}), lambda: EvalSpec().with_overrides(**{field: value})):
        with pytest.raises(error, match=words) as e:
            make()
        assert str(e.value).startswith(field)


def test_unknown_fields_are_named():
    with pytest.raises(TypeError, match="step"):
        AttackSpec().with_overrides(step=3)
    with pytest.raises(TypeError, match="step, test_points: no such field of EvalSpec or AttackSpec"):
        EvalSpec().with_overrides(step=3, test_points=5, n=4)


def test_specs_are_frozen_and_overrides_make_checked_copies():
    spec = EvalSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.n = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.attack.steps = 5
    small = spec.with_overrides(n=16, steps=2, eps=[8 / 255, 0.01], ood_sets="Noise, interp")
    assert small.n == 16 and small.attack.steps == 2 and small.attack.protocol == "standard"
    assert small.attack.eps == (8 / 255, 0.01) and small.attack.radii == [8 / 255, 0.01]
    assert small.ood_sets == ("noise", "interp")
    assert spec == EvalSpec() and hash(small) == hash(EvalSpec().with_overrides(n=16, steps=2, eps=(8 / 255, 0.01),
                                                                               ood_sets=["noise", "interp"]))
    # a radius set for one norm is checked again under another
    with pytest.raises(ValueError, match="eps must be <= 1 for linf"):
        AttackSpec(norm="l2", eps=2.0).with_overrides(norm="linf")
    assert dataclasses.replace(spec.attack, steps=3).steps == 3
    with pytest.raises(ValueError, match="steps must be"):
        dataclasses.replace(spec.attack, steps=-3)


def test_the_functions_take_only_their_own_spec(tiny_run, monkeypatch):
    model = Linear(torch.zeros(10, 64), torch.zeros(10))
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(TypeError, match=r"spec must be an AttackSpec or None, got EvalSpec.*\.attack"):
        evaluate(model, x, y, EvalSpec())
    with pytest.raises(TypeError, match="spec must be an AttackSpec or None, got dict"):
        published_protocol(model, x, y, {"steps": 2})

    def never(*a, **k):
        raise AssertionError("the checkpoint was loaded")
    monkeypatch.setattr(tr, "load_for_eval", never)
    with pytest.raises(TypeError, match="spec must be an EvalSpec or None, got AttackSpec"):
        evaluate_checkpoint(tiny_run, AttackSpec())


def test_eval_prints_a_line_as_each_attack_and_part_finishes(tiny_run, tmp_path):
    """progress.lines: a line per attack (PGD at each radius, noise) and per part, with its
    seconds, then the total; outside the block the same evaluation prints nothing."""
    import contextlib
    import io

    from ebjdat import progress
    out = io.StringIO()
    spec = EvalSpec(n=16, sample_steps=1, samples=False, n_gen=8, calibration=True,
                    attack=AttackSpec(steps=1, eps=[8 / 255, 4 / 255]))
    with progress.lines(out, "eval"):
        evaluate_checkpoint(tiny_run, spec, out=tmp_path / "ev", device="cpu")
    lines = out.getvalue().splitlines()
    assert all(line.startswith("eval: ") and line.endswith(" s)") for line in lines[:-1]), lines
    text = "\n".join(lines)
    for part in ("loaded ", "standard PGD-1 eps 0:", "standard PGD-1 eps 0.01569:", "standard PGD-1 eps 0.03137:",
                 "random noise at eps 0.03137", "SGLD chains: 8 points", "generated points", "energy landscape",
                 "calibration"):
        assert part in text, part
    assert lines[-1].startswith("eval: finished in ")
    quiet_out, quiet_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(quiet_out), contextlib.redirect_stderr(quiet_err):
        evaluate_checkpoint(tiny_run, spec, out=tmp_path / "ev2", device="cpu")
    assert "eval:" not in quiet_out.getvalue() + quiet_err.getvalue()


def test_eval_command_reports_progress_on_stderr(tiny_run, tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", str(tiny_run), "--n", "8", "--steps", "1", "--no-samples",
                     "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    captured = capsys.readouterr()
    assert "eval: standard PGD-1 eps 0.03137" in captured.err and "eval: finished in" in captured.err
    assert "eval:" not in captured.out and "protocol standard" in captured.out


def test_several_radii_draw_the_robustness_curve(tiny_run, tmp_path):
    spec = EvalSpec(n=16, sample_steps=1, samples=False, n_gen=8, attack=AttackSpec(steps=1, eps=[8 / 255, 16 / 255]))
    res = evaluate_checkpoint(tiny_run, spec, out=tmp_path / "ev", device="cpu")
    assert str(tmp_path / "ev" / "robustness.png") in res["files"] and (tmp_path / "ev" / "robustness.png").is_file()
    one = evaluate_checkpoint(tiny_run, dataclasses.replace(spec, attack=AttackSpec(steps=1)), out=tmp_path / "e1",
                              device="cpu")
    assert not (tmp_path / "e1" / "robustness.png").exists() and not any("robustness" in f for f in one["files"])
