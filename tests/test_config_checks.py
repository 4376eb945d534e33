"""Range checks of every numeric setting, where it is read: TrainConfig's table (a TOML key
or a flag named in the message), ``ebjdat sample``'s and ``ebjdat bench``'s flags, the
demo's verdict, and checkpoints or generated points holding NaN. Nothing here trains."""
import math

import pytest
import torch

from ebjdat import cli, validate
from ebjdat.evaluate import generation
from ebjdat.evaluate.trained import load_trained
from ebjdat.runs.checkpoint import load_checkpoint, save_checkpoint
from ebjdat.runs.config import RANGES, TrainConfig

NAN, INF = float("nan"), float("inf")


def one_line_error(capsys, argv, *words) -> str:
    """cli.main(argv) exits 2 with one stderr line holding every word."""
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ---------------------------------------------------------------- TrainConfig's table
BAD = [  # (settings, words the message holds)
    (dict(decay_epochs=[-3]), ["decay_epochs", ">= 0", "[-3]"]),
    (dict(decay_epochs=[100, 50]), ["decay_epochs", "increasing", "[100, 50]"]),
    (dict(decay_epochs=[50, 50]), ["decay_epochs", "increasing"]),
    (dict(decay_rate=-1), ["decay_rate", "> 0 and <= 1", "got -1"]),
    (dict(decay_rate=0.0), ["decay_rate", "> 0"]),
    (dict(decay_rate=NAN), ["decay_rate", "got nan"]),
    (dict(lr=0.0), ["lr", "> 0"]),
    (dict(lr=-0.1), ["lr", "> 0"]),
    (dict(lr=INF), ["lr", "finite"]),
    (dict(momentum=1.5), ["momentum", "<= 1"]),
    (dict(weight_decay=-1e-4), ["weight_decay", ">= 0"]),
    (dict(sam_rho=NAN), ["sam_rho"]),
    (dict(buffer_size=7, batch_size=16), ["buffer_size", "7", "batch_size", "16"]),
    (dict(batch_size=0), ["batch_size", ">= 1"]),
    (dict(label_batch_size=0), ["label_batch_size", ">= 1"]),
    (dict(model="wrn", width=0), ["width", ">= 1", "got 0"]),
    (dict(model="wrn", depth=5), ["depth", "6n + 4", "got 5"]),
    (dict(model="wrn", depth=-2), ["depth", ">= 4"]),
    (dict(image_size=0), ["image_size", ">= 1"]),
    (dict(seed=2**64), ["seed", "< 2**63"]),
    (dict(seed=-1), ["seed", ">= 0"]),
    (dict(threads=0), ["threads must be >= 1", "<= 1024"]),
    (dict(threads=4096), ["threads", "<= 1024", "got 4096"]),
    (dict(steps=0), ["steps", ">= 1", "or none"]),
    (dict(epochs=0), ["epochs", ">= 1"]),
    (dict(ckpt_every=0), ["ckpt_every", ">= 1"]),
    (dict(log_every=-1), ["log_every", ">= 1"]),
    (dict(warmup_iters=-1), ["warmup_iters", ">= 0"]),
    (dict(holdout=-5), ["holdout", ">= 0"]),
    (dict(refresh_every=-1), ["refresh_every", ">= 0"]),
    (dict(reinit_freq=1.5), ["reinit_freq", ">= 0 and <= 1"]),
    (dict(reinit_freq=NAN), ["reinit_freq"]),
    (dict(sgld_steps=-1), ["sgld_steps", ">= 0"]),
    (dict(sgld_inner=0), ["sgld_inner", ">= 1"]),
    (dict(sgld_step_size=NAN), ["sgld_step_size", "finite"]),
    (dict(sgld_noise=-0.01), ["sgld_noise", ">= 0"]),
    (dict(sgld_clip=-1.0), ["sgld_clip", "> 0", "or none"]),
    (dict(sgld_clip=0.0), ["sgld_clip", "> 0"]),
    (dict(sgld_clip=NAN), ["sgld_clip"]),
    (dict(pgd_steps=-1), ["pgd_steps", ">= 0"]),
    (dict(pgd_eps=3.0), ["pgd_eps", "<= 2"]),
    (dict(pgd_alpha=-1.0), ["pgd_alpha", ">= 0"]),
    (dict(adv_micro_batch=0), ["adv_micro_batch", ">= 1"]),
    (dict(sigma=-0.03), ["sigma", ">= 0"]),
    (dict(loss_bound=0.0), ["loss_bound", "> 0"]),
    (dict(eval_eps=2.0), ["eval_eps", "<= 1"]),
    (dict(eval_eps=NAN), ["eval_eps"]),
    (dict(eval_pgd_steps=-1), ["eval_pgd_steps", ">= 0"]),
    (dict(classes=0), ["classes", ">= 1"]),
    (dict(w_pxadv=-0.1), ["w_pxadv (the weight of l_pxadv) must be a finite number >= 0"]),
]


@pytest.mark.parametrize("settings,words", BAD, ids=[" ".join(f"{k}={v}" for k, v in s.items()) for s, _ in BAD])
def test_every_range_is_checked_with_the_key_in_one_line(settings, words):
    with pytest.raises(ValueError) as e:
        TrainConfig.preset("sadajem", **settings)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("settings", [dict(decay_epochs=[]), dict(decay_rate=1.0), dict(seed=2**63 - 1),
                                      dict(threads=None), dict(threads=1024), dict(sgld_clip=None),
                                      dict(buffer_size=16, batch_size=16), dict(model="wrn", depth=10, width=1),
                                      dict(eval_eps=0.0), dict(image_size=None), dict(steps=None)])
def test_edge_values_pass(settings):
    TrainConfig.preset("sadajem", **settings)


def test_the_table_covers_every_numeric_field():
    """Every int or float setting has a row (or is checked with the weights' table or the classes)."""
    from dataclasses import fields
    numeric = {f.name for f in fields(TrainConfig) if any(k in f.type for k in ("int", "float"))}
    weights = {"w_px", "w_pyx", "w_pxadv", "w_pyxadv"}
    assert numeric - weights - {"classes", "decay_epochs"} <= set(RANGES), numeric - set(RANGES)


def test_errors_name_the_key_as_the_user_gave_it():
    """A flag's name when the value came from a flag, the setting's name otherwise."""
    with pytest.raises(ValueError, match=r"^--steps must be >= 1 or none, got 0"):
        TrainConfig.preset("sadajem", steps=0, key_names={"steps": "--steps"})
    with pytest.raises(ValueError, match=r"^--threads must be >= 1 and <= 1024 or none, got 4096"):
        TrainConfig.preset("sadajem", threads=4096, key_names={"threads": "--threads"})


def test_toml_errors_name_the_file_and_its_key(tmp_path, capsys):
    """TOML keys, never the sampler's or the attack's own argument names (grad_clip, eps)."""
    for text, words, internal in [("sgld_clip = -1.0\n", ["sgld_clip", "> 0"], "grad_clip"),
                                  ("eval_eps = 2.0\n", ["eval_eps", "<= 1"], "for linf"),
                                  ("decay_rate = -1\n", ["decay_rate", "> 0"], None),
                                  ("decay_epochs = [-3]\n", ["decay_epochs", ">= 0"], None),
                                  ('model = "wrn"\nwidth = 0\n', ["width", ">= 1"], None),
                                  ("seed = 18446744073709551616\n", ["seed", "< 2**63"], None),
                                  ("buffer_size = 7\nbatch_size = 16\n", ["buffer_size", "batch_size"], None)]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        line = one_line_error(capsys, ["train", "--config", path, "--out", tmp_path / "never"], str(path), *words)
        assert line.startswith(f"ebjdat train: {path}: ")
        assert internal is None or internal not in line.split(": ", 2)[2], line
    assert not (tmp_path / "never").exists()


def test_toml_overrides_named_as_given(tmp_path):
    """An override of a TOML file's value is named as the caller names it, without the file."""
    path = tmp_path / "ok.toml"
    path.write_text("steps = 4\n")
    with pytest.raises(ValueError, match=r"^--steps must be >= 1 or none, got 0"):
        TrainConfig.from_toml(str(path), key_names={"steps": "--steps"}, steps=0)


@pytest.mark.parametrize("argv,words", [   # the message names the flag the value came from
    (["--steps", "0"], ["--steps must be", ">= 1"]),
    (["--seed", str(2**64)], ["--seed must be", "< 2**63"]),
    (["--threads", "4096"], ["--threads must be", "<= 1024"]),
    (["--image-size", "0"], ["--image-size must be", ">= 1"]),
])
def test_train_flags_fail_before_any_work(argv, words, tmp_path, capsys):
    one_line_error(capsys, ["train", *argv, "--out", tmp_path / "never"], *words)
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------- checkpoints holding NaN
@pytest.fixture(scope="module")
def nan_checkpoints(tiny_run, tmp_path_factory):
    """conftest's checkpoint with a NaN weight, and with a NaN buffer row."""
    folder = tmp_path_factory.mktemp("nan")
    sd = load_checkpoint(tiny_run / "checkpoints" / "step_00000001.pt")
    name = next(k for k, v in sd["model"].items() if v.is_floating_point())
    weights = {**sd["model"], name: torch.full_like(sd["model"][name], NAN)}
    save_checkpoint(folder / "nan_weights.pt", {**sd, "model": weights})
    rank = dict(sd["ranks"][0])
    buf = rank["buffer"]["buffer"].clone()
    buf[3] = NAN
    rank["buffer"] = {**rank["buffer"], "buffer": buf}
    save_checkpoint(folder / "nan_buffer.pt", {**sd, "ranks": [rank, *sd["ranks"][1:]]})
    return folder, name


def test_nan_weights_and_buffer_rows_are_refused_at_load(nan_checkpoints):
    folder, name = nan_checkpoints
    with pytest.raises(ValueError, match=rf"nan_weights.pt: .*model weights hold non-finite values .*{name}"):
        load_trained(folder / "nan_weights.pt")
    with pytest.raises(ValueError, match=r"nan_buffer.pt: .*replay buffer holds non-finite values .*1 of 256 rows"):
        load_trained(folder / "nan_buffer.pt")


def test_sample_of_nan_weights_writes_nothing(nan_checkpoints, tmp_path, capsys):
    folder, _ = nan_checkpoints
    out = tmp_path / "s.png"
    one_line_error(capsys, ["sample", "--checkpoint", folder / "nan_weights.pt", "--out", out], "non-finite",
                   "nan_weights.pt")
    assert not out.exists()


def test_sample_refuses_non_finite_samples(tiny_run, tmp_path, monkeypatch, capsys):
    """A sampler that diverges from finite weights: no picture of NaN pixels."""
    from ebjdat.sampling import SGLD
    monkeypatch.setattr(SGLD, "sample", lambda self, x_init, y=None, **kw: torch.full_like(x_init, NAN))
    out = tmp_path / "s.png"
    one_line_error(capsys, ["sample", "--checkpoint", tiny_run, "--n", 4, "--out", out], "non-finite", "--steps")
    assert not out.exists()


def test_digits_fd_refuses_non_finite_images():
    x = torch.zeros(8, 1, 8, 8)
    bad = x.clone()
    bad[2, 0, 1, 1] = NAN
    with pytest.raises(ValueError, match="generated images hold non-finite values: 1 of 8"):
        generation.digits_fd(bad, x)


# ---------------------------------------------------------------- ebjdat sample's flags
@pytest.mark.parametrize("argv,words", [(["--seed", str(2**64)], ["--seed", "2**63"]),
                                        (["--seed", "-1"], ["--seed -1", ">= 0"])])
def test_sample_seed_range(tiny_run, argv, words, tmp_path, capsys):
    one_line_error(capsys, ["sample", "--checkpoint", tiny_run, *argv, "--out", tmp_path / "s.png"], *words)


def test_sample_n_bounded_by_memory(tiny_run, tmp_path, monkeypatch, capsys):
    def no_sampling(*a, **k):
        raise AssertionError("the samples were drawn although --n cannot fit")
    monkeypatch.setattr(torch, "rand", no_sampling)
    line = one_line_error(capsys, ["sample", "--checkpoint", tiny_run, "--fresh", "--n", 10**12,
                                   "--out", tmp_path / "s.png"], "--n 1000000000000", "memory", "at most")
    assert not (tmp_path / "s.png").exists(), line


def test_memory_bound_arithmetic(monkeypatch):
    from ebjdat.models import SmallCNN
    monkeypatch.setattr(validate, "memory_bytes", lambda device: 1 << 30)
    model = SmallCNN(1, 10, norm=None).train()
    per_item = validate.item_values((1, 8, 8), model)
    assert per_item > validate.MEMORY_FACTOR * 64 + 3 * 64 * 8 * 8   # the activations count
    assert model.training                                           # the model's mode is kept
    limit = validate.max_items(per_item, torch.device("cpu"))
    assert limit == (1 << 30) // (4 * per_item)
    validate.check_fits("--n", limit, per_item, torch.device("cpu"))
    with pytest.raises(ValueError, match=rf"--n {limit + 1}: .* at most {limit}$"):
        validate.check_fits("--n", limit + 1, per_item, torch.device("cpu"))


# ---------------------------------------------------------------- ebjdat bench
def _no_bench(monkeypatch):
    from ebjdat.bench import timing

    def called(*a, **k):
        raise AssertionError("the benchmark ran although its flags were bad")
    monkeypatch.setattr(timing, "ceilings", called)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_bench_budget_must_be_a_finite_number(value, monkeypatch, capsys):
    _no_bench(monkeypatch)
    one_line_error(capsys, ["bench", "step", "--budget-s", value], "--budget-s", ">= 0")


def test_bench_profile_must_name_a_folder(tmp_path, monkeypatch, capsys):
    _no_bench(monkeypatch)
    file = tmp_path / "f"
    file.write_text("kept")
    one_line_error(capsys, ["bench", "step", "--profile", file], "--profile", "is a file")
    one_line_error(capsys, ["bench", "step", "--profile", file / "sub"], "--profile", "is a file")
    assert file.read_text() == "kept"


# ---------------------------------------------------------------- ebjdat demo
@pytest.mark.parametrize("steps", ["1", "5"])
def test_demo_few_steps_compares_with_the_variance_after_those_steps(steps, capsys):
    assert cli.main(["demo", "--steps", steps, "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "demo OK" in out and "exact stationary value 1.0526" in out


def test_demo_variance_after_k_steps():
    from ebjdat.demo import variance_after
    h = 0.1
    assert variance_after(1, h) == pytest.approx(2 * h)
    assert variance_after(10_000, h) == pytest.approx(1 / (1 - h / 2))
    assert math.isclose(variance_after(2, h), (1 - h) ** 2 * 2 * h + 2 * h)


def test_threads_beyond_the_usable_cpus_are_refused_before_training(tmp_path):
    """More threads than CPUs only spin-wait (a 2-step run with 4096 of them never ended):
    the trainer refuses them, naming the limit, before any step."""
    import os
    from ebjdat.train import Trainer
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cfg = TrainConfig.preset("sadajem", threads=usable + 1, steps=1, out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=rf"threads {usable + 1} is more than the {usable} CPUs"):
        Trainer(cfg)
