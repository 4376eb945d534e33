"""The trainer: run folder, mode agreement, exact resume, SIGKILL resume, divergence guard,
data parallel with 2 gloo processes, configs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from ebjdat import cli
from ebjdat.evaluate import closing
from ebjdat.train import TrainConfig, Trainer, TrainingDiverged

SMALL = dict(dataset="digits", device="cpu", buffer_size=256, label_batch_size=32, batch_size=16,
             sgld_steps=3, pgd_steps=2, log_every=2, eval_pgd_steps=2)


def test_default_run_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--steps", "7", "--ckpt-every", "3", "--out", str(out)]) == 0
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step_00000003.pt", "step_00000006.pt", "step_00000007.pt"]
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] == 7 and all(k in rows[-1] for k in ("loss", "l_px", "l_pyx", "lr"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 7 and 0 <= summary["pgd_acc"] <= 1 and 0 <= summary["clean_acc"] <= 1
    assert summary["config"]["variant"] == "sadajem" and summary["wall_time_s"] > 0
    for png in ("samples.png", "energy.png"):
        Image.open(out / png).verify()


@pytest.mark.parametrize("norm,steps", [("none", 4), ("batch", 1)])
def test_fast_and_published_modes_compute_the_same_losses(norm, steps):
    """Same seeds, fp32: the published code loop's micro-batched attack, host buffer and duplicated
    forwards give the fast path's losses. With BatchNorm only the first step: the published code's
    duplicated forwards also update the running statistics twice, which later steps see."""
    runs = {}
    for mode in ("fast", "published"):
        t = Trainer(TrainConfig.preset("sadajem", mode=mode, norm=norm, steps=10, precision="fp32", **SMALL))
        runs[mode] = [{k: float(v) for k, v in t.train_step().items()} for _ in range(steps)]
    for fast, ref in zip(runs["fast"], runs["published"]):
        for k in ("loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv"):
            assert fast[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-5), k


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig.preset("sadajem", steps=10, out=str(tmp_path), **SMALL)
    straight = Trainer(cfg)
    for _ in range(6):
        straight.train_step()
    first = Trainer(cfg)
    for _ in range(3):
        first.train_step()
    first.save(tmp_path / "checkpoints" / "step_00000003.pt")
    resumed = Trainer.resume(tmp_path)
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(straight.buffer.data, resumed.buffer.data)


def test_sigkill_then_resume_completes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ebjdat.cli", "train", "--steps", "40", "--ckpt-every", "4", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "step_00000008.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "step_00000008.pt").exists()
    assert not (out / "summary.json").exists()
    done = subprocess.run(cmd[:4] + ["--resume", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["step"] == 40
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated log rows after the resume


def test_divergence_stops_with_a_picture_and_no_checkpoint(tmp_path):
    cfg = TrainConfig.preset("sadajem", steps=6, ckpt_every=4, loss_bound=1e-9, out=str(tmp_path), **SMALL)
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet"):
        Trainer(cfg).fit()
    assert (tmp_path / "diverged_samples.png").exists()
    assert not any((tmp_path / "checkpoints").iterdir())


def test_data_parallel_two_gloo_processes(tmp_path):
    """torchrun with 2 CPU processes: gradients averaged, a buffer shard per rank, one
    checkpoint holding both shards, rank 0 writing the run folder."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ebjdat.cli", "train", "--steps", "3", "--ckpt-every", "3", "--device", "cpu",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sd = torch.load(out / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert len(sd["ranks"]) == 2
    assert not torch.equal(sd["ranks"][0]["buffer"]["buffer"], sd["ranks"][1]["buffer"]["buffer"])
    assert json.loads((out / "summary.json").read_text())["step"] == 3


def test_config_presets_and_overrides(tmp_path):
    jem = TrainConfig.preset("jem", dataset="cifar10")
    assert (jem.optimizer, jem.lr, jem.sgld_noise, jem.norm, jem.sam_rho) == ("adam", 1e-5, 0.01, None, 0.0)
    pp = TrainConfig.preset("jempp", dataset="cifar10")
    assert (pp.sgld_inner, pp.sgld_step_size, pp.decay_epochs) == (5, 0.2, [40, 80, 120])
    sada = TrainConfig.preset("sadajem", dataset="cifar10")
    assert (sada.sam_rho, sada.label_batch_size, sada.batch_size, sada.loss_bound) == (2.0, 128, 64, 1e5)
    toml = tmp_path / "c.toml"
    toml.write_text('variant = "jempp"\nlr = 0.05\nsgld_steps = 3\n')
    c = TrainConfig.from_toml(str(toml), seed=4)
    assert (c.variant, c.lr, c.sgld_steps, c.seed, c.sgld_inner) == ("jempp", 0.05, 3, 4, 5)
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'; did you mean 'lr'"):
        c.with_overrides(learning_rate=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        TrainConfig.preset("sadajem", mode="turbo")
    with pytest.raises(ValueError, match="variant must be one of"):
        TrainConfig.preset("jem2")
    with pytest.raises(ValueError, match="lr must be"):
        TrainConfig.preset("sadajem", lr=float("nan"))


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "cifar" in capsys.readouterr().err.lower()
    assert cli.main(["train", "--resume", str(tmp_path)]) == 2


def test_sample_command_and_help(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(TrainConfig.preset("sadajem", steps=2, ckpt_every=2, out=str(out), **SMALL)).fit(closing.evaluate)
    png = tmp_path / "s.png"
    assert cli.main(["sample", "--checkpoint", str(out), "--n", "8", "--steps", "2", "--out", str(png)]) == 0
    Image.open(png).verify()
    assert cli.main(["sample", "--checkpoint", str(out), "--n", "4", "--fresh", "--y", "3",
                     "--out", str(tmp_path / "s3.png")]) == 0
    for cmd in ("train", "sample"):
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "--help"])
        assert e.value.code == 0
    assert "--resume" in capsys.readouterr().out


def test_fit_without_a_closing_evaluation_only_trains(tmp_path):
    """The training loop imports no evaluation: without ``closing`` the summary holds the
    run's record and no metric of a model evaluation, and no picture is drawn."""
    out = tmp_path / "run"
    s = Trainer(TrainConfig.preset("sadajem", steps=2, ckpt_every=2, out=str(out), **SMALL)).fit()
    assert s["step"] == 2 and "clean_acc" not in s and "eval_s" in s
    assert (out / "summary.json").exists() and not (out / "samples.png").exists()
