"""Run folders that never lose data (issue 10): a fresh run refuses a folder that holds
files, a resumed run continues beside its checkpoint, a resume may change only how long,
where and how fast the run goes on, metrics.jsonl survives a kill mid-line, and the rows
of a resumed run are those of an uninterrupted one."""
import json
import shutil

import pytest
import torch

from ebjdat import cli
from ebjdat.evaluate import closing
from ebjdat.train import TrainConfig, Trainer

SMALL = ('buffer_size = 128\nlabel_batch_size = 16\nbatch_size = 16\nsgld_steps = 2\npgd_steps = 1\n'
         'eval_pgd_steps = 1\ndevice = "cpu"\n')


def _config(tmp_path, extra=""):
    path = tmp_path / "small.toml"
    path.write_text(SMALL + extra)
    return str(path)


def _train(*args):
    return cli.main(["train", *map(str, args)])


def _rows(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    """A finished 4-step run with checkpoints at 2 and 4 (read-only for the tests: copy it)."""
    tmp = tmp_path_factory.mktemp("run4")
    assert _train("--config", _config(tmp, "log_every = 2\n"), "--steps", 4, "--ckpt-every", 2,
                  "--out", tmp / "run") == 0
    return tmp / "run"


def test_fresh_run_refuses_a_folder_with_files(run4, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run4, run)
    before = _snapshot(run)
    assert _train("--config", _config(tmp_path), "--steps", 3, "--ckpt-every", 1, "--out", run) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and f"--resume {run}" in err and err.count("\n") == 1
    assert _snapshot(run) == before
    (tmp_path / "file").write_text("x")
    assert _train("--steps", 3, "--out", tmp_path / "file") == 2
    assert "is a file" in capsys.readouterr().err


def test_resume_continues_beside_the_checkpoint(run4, tmp_path, monkeypatch):
    """A copied run resumes in the copy (the stored out points at the original), also
    from another working directory."""
    copy = tmp_path / "copy"
    shutil.copytree(run4, copy)
    original = _snapshot(run4)
    monkeypatch.chdir(tmp_path)
    assert _train("--resume", copy, "--steps", 6) == 0
    assert _snapshot(run4) == original
    assert sorted(p.name for p in (copy / "checkpoints").iterdir())[-1] == "step_00000006.pt"
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["step"] == 6
    assert summary["resumes"] == [{"step": 4, "checkpoint": str((copy / "checkpoints" / "step_00000004.pt").resolve()),
                                   "changed": {"steps": [4, 6], "out": [str(run4), str(copy.resolve())]}}]
    assert [r["step"] for r in _rows(copy)] == [2, 4, 6]


def test_resume_into_a_new_folder_carries_the_metrics(run4, tmp_path, capsys):
    new = tmp_path / "new"
    assert _train("--resume", run4 / "checkpoints" / "step_00000002.pt", "--steps", 4, "--out", new) == 0
    assert [r["step"] for r in _rows(new)] == [2, 4]
    assert _rows(new)[0] == _rows(run4)[0]
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("mine")
    assert _train("--resume", run4, "--steps", 6, "--out", other) == 2
    assert "already holds files" in capsys.readouterr().err


def test_resume_from_an_older_checkpoint_in_place_is_refused(run4, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run4, copy)
    assert _train("--resume", copy / "checkpoints" / "step_00000002.pt", "--steps", 6) == 2
    assert "would mix two histories" in capsys.readouterr().err


@pytest.mark.parametrize("flags,name", [(["--variant", "jem"], "variant"), (["--seed", "5"], "seed"),
                                        (["--dataset", "synthetic"], "dataset"), (["--mode", "published"], "mode"),
                                        (["--precision", "bf16"], "precision")])
def test_resume_refuses_flags_that_change_the_run(run4, tmp_path, capsys, flags, name):
    copy = tmp_path / "copy"
    shutil.copytree(run4, copy)
    before = _snapshot(copy)
    assert _train("--resume", copy, "--steps", 6, *flags) == 2
    err = capsys.readouterr().err
    assert f"--resume cannot change {name}" in err and err.count("\n") == 1
    assert _snapshot(copy) == before


def test_resume_refuses_config_and_a_step_count_already_reached(run4, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run4, copy)
    assert _train("--resume", copy, "--config", _config(tmp_path)) == 2
    assert "--config cannot be used with --resume" in capsys.readouterr().err
    assert _train("--resume", copy, "--steps", 3) == 2
    assert "nothing to train: the checkpoint is at step 4" in capsys.readouterr().err
    assert _train("--resume", copy) == 2        # the stored steps (4) are reached too
    assert "nothing to train" in capsys.readouterr().err


def test_partial_metrics_line_and_rows_of_an_uninterrupted_run(tmp_path, capsys):
    """Kill after the checkpoint of step 3 while the row of step 4 was being written: the
    resumed run drops the cut line and logs exactly the rows of a run never stopped."""
    cfg = TrainConfig.from_toml(_config(tmp_path, "log_every = 4\nckpt_every = 3\nsteps = 6\n"))
    straight = tmp_path / "straight"
    Trainer(cfg.with_overrides(out=str(straight))).fit(closing.evaluate)
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    (killed / "checkpoints" / "step_00000006.pt").unlink()
    (killed / "summary.json").unlink()
    cut = (killed / "metrics.jsonl").read_text().splitlines()[0][:25]
    (killed / "metrics.jsonl").write_text(cut)
    assert _train("--resume", killed) == 0
    assert "dropped the partial last line" in capsys.readouterr().err
    a, b = _rows(straight), _rows(killed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 6]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "wall_s"} == {k: v for k, v in rb.items() if k != "wall_s"}
    assert b[0]["wall_s"] > 0 and b[-1]["window"] == 2


def test_toml_typos_and_types_are_messages(tmp_path, capsys):
    for text, msg in [("batch_sise = 3\n", "unknown setting 'batch_sise'; did you mean 'batch_size'?"),
                      ('batch_size = "big"\n', "batch_size must be an integer, got str 'big'"),
                      ("steps = 2.5\n", "steps must be an integer or none, got float 2.5"),
                      ('compile = "yes"\n', "compile must be true or false"),
                      ("decay_epochs = 5\n", "decay_epochs must be a list of integers"),
                      ("lr = [\n", "is not valid TOML")]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        assert _train("--config", path, "--out", tmp_path / "never") == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "never").exists()
    assert _train("--config", tmp_path / "missing.toml") == 2
    assert "does not exist" in capsys.readouterr().err


def test_threads_chosen_and_recorded(run4):
    summary = json.loads((run4 / "summary.json").read_text())
    assert summary["threads"] == 1 and "one thread" in summary["threads_reason"]
    cfg = TrainConfig.preset("sadajem", device="cpu", threads=2, buffer_size=64)
    assert Trainer(cfg).threads == 2
    with pytest.raises(ValueError, match="threads must be >= 1"):
        TrainConfig.preset("sadajem", threads=0)


def test_autoattack_message_names_what_is_missing(monkeypatch):
    import builtins

    from ebjdat.evaluate import autoattack as aa
    real = builtins.__import__

    def fake(missing):
        def imp(name, *a, **k):
            if name == "torchattacks":
                raise ImportError(f"No module named {missing!r}", name=missing)
            return real(name, *a, **k)
        return imp
    monkeypatch.setattr(builtins, "__import__", fake("scipy"))
    with pytest.raises(ImportError, match="torchattacks is installed but cannot be imported: it needs 'scipy'"):
        aa.torchattacks_module()
    monkeypatch.setattr(builtins, "__import__", fake("torchattacks"))
    with pytest.raises(ImportError, match=r"not installed; install it with `pip install \"ebjdat\[attacks\]\"") as e:
        aa.torchattacks_module()
    assert "--no-deps torchattacks" in str(e.value)


def test_checkpoint_of_another_config_is_a_message(run4, tmp_path, capsys):
    """A training checkpoint whose config names an unknown setting, or whose model is not
    the one its config builds (another variant's weights under this config)."""
    from ebjdat.runs.checkpoint import load_checkpoint, save_checkpoint
    sd = load_checkpoint(run4 / "checkpoints" / "step_00000004.pt")
    odd = tmp_path / "odd.pt"
    save_checkpoint(odd, {**sd, "config": {**sd["config"], "turbo": True}})
    with pytest.raises(ValueError, match="holds a config this ebjdat cannot read: unknown setting 'turbo'"):
        Trainer.resume(odd, out=None)
    assert cli.main(["eval", "--checkpoint", str(odd), "--n", "8"]) == 2
    assert "cannot read" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    save_checkpoint(other, {**sd, "config": {**sd["config"], "model": "wrn", "depth": 10, "width": 1}})
    with pytest.raises(ValueError, match="does not fit its own config"):
        Trainer.resume(other, out=None)
    assert cli.main(["eval", "--checkpoint", str(other), "--n", "8"]) == 2
    assert "does not fit its own config" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["fast", "published"])
def test_attack_follows_the_clean_forwards(mode):
    """The published order (SADA-JEM): x_pd's train-mode forward before the sampler, those
    of x_q and x_lab after it, all before the eval-mode attack, so the attack sees BatchNorm
    statistics that include this iteration's batches (num_batches_tracked counts train-mode
    forwards; the whole sequence: tests/test_published.py::ORDER)."""
    cfg = TrainConfig.preset("sadajem", mode=mode, device="cpu", norm="batch", buffer_size=64, batch_size=8,
                             label_batch_size=8, sgld_steps=2, pgd_steps=1)
    t = Trainer(cfg)
    bn = next(m for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = {}
    sample_q, adversarial = t.sample_q, t.adversarial

    def after_sampler(*a, **k):
        out = sample_q(*a, **k)
        seen["after_sampler"] = int(bn.num_batches_tracked)
        return out

    def at_attack(*a, **k):
        seen["at_attack"] = int(bn.num_batches_tracked)
        return adversarial(*a, **k)
    t.sample_q, t.adversarial = after_sampler, at_attack
    t.train_step()
    assert seen["at_attack"] == seen["after_sampler"] + 2


def test_ebjdat_attack_sums_the_perceptual_distance():
    """PGD(loss="ebjdat") on the whole batch equals the published micro-batch loop, whose
    objective sums P over each micro-batch of 2 (weight 1 per sample), in eval mode."""
    from ebjdat import PGD
    from ebjdat.energy import perceptual_distance
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 5)).double()
    x, y = torch.rand(6, 3, 2, 2, dtype=torch.float64) * 2 - 1, torch.randint(0, 5, (6,))
    out = []
    for i in range(0, 6, 2):
        xb, yb, xa = x[i:i + 2], y[i:i + 2], x[i:i + 2].clone()
        for _ in range(3):
            xa = xa.detach().requires_grad_(True)
            j = model(xa).gather(1, yb[:, None]).sum() + perceptual_distance(model(xb).detach(), model(xa)).sum()
            xa = (xa.detach() + 0.05 * torch.autograd.grad(j, xa)[0].sign()).clamp(-1, 1)
        out.append(xa)
    atk = PGD(model, eps=None, alpha=0.05, steps=3, random_start=False, clamp=(-1.0, 1.0), loss="ebjdat")
    assert torch.equal(atk(x, y), torch.cat(out))


def test_final_evaluation_leaves_the_training_state(tmp_path):
    """fit's closing evaluation (attack, picture samples) draws from its own generator and
    undoes its buffer writes and random draws: the state after fit equals that of the same
    iterations run without it."""
    cfg = TrainConfig.from_toml(_config(tmp_path, "steps = 4\nckpt_every = 4\n"))
    fitted = Trainer(cfg.with_overrides(out=str(tmp_path / "run")))
    fitted.fit(closing.evaluate)
    plain = Trainer(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(fitted.threads)     # fit trains with the trainer's thread choice
    try:
        for _ in range(4):
            plain.train_step()
    finally:
        torch.set_num_threads(threads)
    a, b = fitted.state_dict(), plain.state_dict()

    def same(x, y, where):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                same(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, (u, v) in enumerate(zip(x, y)):
                same(u, v, f"{where}[{i}]")
        else:
            assert x == y, where
    for key in ("step", "model", "optimizer", "ranks"):
        same(a[key], b[key], key)
