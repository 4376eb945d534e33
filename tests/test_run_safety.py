"""Run folders under faults: no run writes into another (symlinks, eval --out, two writers),
write failures and crafted checkpoints are one-line messages, and every recovery path
(killed before the first checkpoint, killed during the closing evaluation, a diverged
run) names a command that works."""
import errno
import json
import os
import re
import shutil

import pytest
import torch

from ebjdat import cli
from ebjdat.runs import folders
from ebjdat.runs.checkpoint import load_checkpoint, save_checkpoint
from ebjdat.train import Trainer, TrainingDiverged
from ebjdat.train.watch import DivergenceWatch

from .test_train_runs import _config, _rows, _snapshot, _train, run4  # noqa: F401 (run4: a fixture)

CKPT4 = "checkpoints/step_00000004.pt"


def _copy(run4, tmp_path, name="copy"):  # noqa: F811
    dst = tmp_path / name
    shutil.copytree(run4, dst)
    return dst


def _one_line(err: str) -> str:
    """The message on stderr, which must be one line (the progress bar's lines left out)."""
    lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not re.match(r"\w+ (fast|published):", ln)]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("link", ["checkpoints", "metrics.jsonl"])
def test_resume_never_writes_through_a_symlink(run4, tmp_path, capsys, link):  # noqa: F811
    other, run = _copy(run4, tmp_path, "other"), _copy(run4, tmp_path, "run")
    target = other / link
    (shutil.rmtree if (run / link).is_dir() else os.unlink)(run / link)
    (run / link).symlink_to(target, target_is_directory=target.is_dir())
    before = _snapshot(other)
    assert _train("--resume", run, "--steps", 6) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"{run / link} is a symbolic link" in err and str(target) in err
    assert _snapshot(other) == before


def test_eval_never_replaces_a_training_output(run4, tmp_path, capsys):  # noqa: F811
    run = _copy(run4, tmp_path)
    before = _snapshot(run)
    assert cli.main(["eval", "--checkpoint", str(run), "--n", "8", "--out", str(run)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "training run folder" in err and str(run) in err
    assert _snapshot(run) == before
    with pytest.raises(ValueError, match="training output"):
        folders.check_not_training_output(run / "energy.png", name="--out")
    folders.check_not_training_output(tmp_path / "energy.png", name="--out")   # not a run folder: fine


def test_one_writer_per_run_folder(run4, tmp_path, capsys):  # noqa: F811
    run = _copy(run4, tmp_path)
    with folders.hold_run_folder(run):
        before = _snapshot(run)
        assert _train("--resume", run, "--steps", 5) == 2
        err = _one_line(capsys.readouterr().err)
        assert f"run folder {run} is in use by process {os.getpid()}" in err and "--out" in err
        assert _snapshot(run) == before
    (run / ".lock").write_text("999999\n")   # a dead process's lock: the kernel released it
    assert _train("--resume", run, "--steps", 5) == 0


@pytest.mark.parametrize("failure", [RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                                                  "failed writing file data/0: file write failed"),
                                     OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_while_checkpointing_is_a_message(tmp_path, capsys, monkeypatch, failure):
    real, calls = torch.save, []

    def save(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 3:   # init.pt, step 2, then step 4 fails
            f.write(b"PK partial")
            raise failure
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    assert _train("--config", _config(tmp_path), "--steps", 4, "--ckpt-every", 2, "--out", run) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"could not write checkpoint {run / CKPT4}" in err and "enforce fail" not in err
    assert f"kept: {run / 'checkpoints' / 'step_00000002.pt'}" in err and f"ebjdat train --resume {run}" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.pt"]


@pytest.mark.parametrize("field,value", [("step", "4"), ("step", -1), ("wall_s", "x"), ("ranks", {}),
                                         ("log", {"sums": {}, "count": "2"})])
def test_checkpoint_fields_are_type_checked(run4, tmp_path, capsys, field, value):  # noqa: F811
    sd = load_checkpoint(run4 / CKPT4)
    crafted = tmp_path / "crafted.pt"
    save_checkpoint(crafted, {**sd, field: value})
    with pytest.raises(ValueError, match=f"checkpoint {crafted} field '{field}"):
        Trainer.resume(crafted, out=None)
    assert _train("--resume", crafted, "--steps", 6, "--out", tmp_path / "new") == 2
    assert str(crafted) in _one_line(capsys.readouterr().err)


def test_resume_refuses_a_checkpoint_of_another_run(run4, tmp_path, capsys):  # noqa: F811
    run = _copy(run4, tmp_path)
    sd = load_checkpoint(run4 / CKPT4)
    save_checkpoint(run / "checkpoints" / "step_00000006.pt",
                    {**sd, "step": 6, "config": {**sd["config"], "variant": "jem", "dataset": "synthetic"}})
    before = _snapshot(run)
    assert _train("--resume", run, "--steps", 8) == 2
    err = _one_line(capsys.readouterr().err)
    assert "step_00000006.pt" in err and "'jem'" in err and "'sadajem'" in err and "config.json" in err
    assert _snapshot(run) == before


def test_run_killed_before_its_first_checkpoint(run4, tmp_path, capsys):  # noqa: F811
    run = _copy(run4, tmp_path)
    for name in ("summary.json", "init.pt", "samples.png", "energy.png"):
        (run / name).unlink()
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    assert _train("--config", _config(tmp_path), "--steps", 4, "--out", run) == 2
    assert f"ebjdat train --resume {run}" in _one_line(capsys.readouterr().err)
    assert _train("--resume", run) == 0
    assert "starts again at step 0" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["step"] == 4
    assert [r["step"] for r in _rows(run)] == [2, 4]
    bare = tmp_path / "bare"   # no checkpoint and no config.json: nothing to resume
    (bare / "checkpoints").mkdir(parents=True)
    (bare / "metrics.jsonl").write_text("")
    assert _train("--resume", bare) == 2
    assert "--out <new folder>" in _one_line(capsys.readouterr().err)
    assert _train("--steps", 1, "--out", bare) == 2
    err = _one_line(capsys.readouterr().err)
    assert "--resume" not in err and "new folder" in err


def test_run_killed_during_the_closing_evaluation(run4, tmp_path, capsys):  # noqa: F811
    run = _copy(run4, tmp_path)
    (run / "summary.json").unlink()
    ckpts = _snapshot(run / "checkpoints")
    assert _train("--resume", run) == 0
    assert "closing evaluation only" in capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and "clean_acc" in summary
    assert _snapshot(run / "checkpoints") == ckpts and [r["step"] for r in _rows(run)] == [2, 4]
    assert _train("--resume", run) == 2   # now finished: says how to train further
    assert f"ebjdat train --resume {run} --steps" in _one_line(capsys.readouterr().err)


def test_divergence_advice_is_a_command_that_works(tmp_path, capsys, monkeypatch):
    real = DivergenceWatch.check

    def check(self, step):
        if step >= 2:
            raise TrainingDiverged(f"|loss| reached inf (bound 1e+05) by step {step}")
        real(self, step)

    monkeypatch.setattr(DivergenceWatch, "check", check)
    run = tmp_path / "run"
    assert _train("--config", _config(tmp_path, "log_every = 2\n"), "--steps", 4, "--ckpt-every", 2,
                  "--out", run) == 3
    err = _one_line(capsys.readouterr().err)
    advice = f"ebjdat train --config {run / 'retry.toml'} --out <new folder>"
    assert advice in err
    monkeypatch.setattr(DivergenceWatch, "check", real)
    new = tmp_path / "new"
    assert cli.main(advice.split()[1:-3] + ["--out", str(new)]) == 0
    old = json.loads((run / "config.json").read_text())
    got = json.loads((new / "summary.json").read_text())["config"]
    assert got["lr"] == old["lr"] / 2
    assert {k: v for k, v in got.items() if k not in ("lr", "out")} == \
        {k: v for k, v in old.items() if k not in ("lr", "out")}


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _train("--steps", 1, "--out", "") == 2
    assert "--out ''" in _one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []
