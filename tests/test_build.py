"""One builder and what a run keeps for sampling: ``ebjdat.build`` makes the trainer's,
``ebjdat eval``'s and ``ebjdat sample``'s objects; the class-Gaussian initial
distribution lies beside the checkpoints (init.pt, checksummed), so sampling reads no
dataset and a resume continues with the run's own fit."""
import pytest
import torch

from ebjdat import build, cli, ops
from ebjdat.data import datasets, hold_out, load_dataset
from ebjdat.evaluate.trained import load_trained
from ebjdat.runs.checkpoint import INIT_FILE, load_checkpoint, save_checkpoint
from ebjdat.sampling import PYLD, SGLD, ClassGaussianInit
from ebjdat.train import TrainConfig, Trainer


def test_builder_follows_the_config():
    cfg = TrainConfig.preset("jempp", device="cpu")
    net = build.model(cfg, 1, 10)
    s = build.sampler(cfg, net, generator=ops.PhiloxGenerator(0), n_steps=3)
    assert isinstance(s, PYLD) and s.n_steps == 3 and s.n_inner == 5
    jem = TrainConfig.preset("jem", device="cpu")
    s = build.sampler(jem, net, generator=ops.PhiloxGenerator(0))
    assert type(s) is SGLD and s.update_kw["noise_std"] == 0.01 and s.n_steps == 10
    assert build.initial_distribution(jem) == "uniform"
    with pytest.raises(ValueError, match="needs data to fit or a saved state"):
        build.initial_distribution(cfg)
    atk = build.attack(cfg, net, generator=ops.PhiloxGenerator(0))
    assert atk.eps is None and atk.steps == cfg.pgd_steps   # the published attack does not project


def _no_data(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a dataset was loaded")
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setattr("ebjdat.evaluate.trained.load_dataset", refuse)


def test_sample_reads_no_dataset_and_starts_from_the_class_gaussian(tiny_run, tmp_path, monkeypatch, capsys):
    assert (tiny_run / INIT_FILE).is_file()
    init = ClassGaussianInit.from_state_dict(load_checkpoint(tiny_run / INIT_FILE))
    _no_data(monkeypatch)
    out = tmp_path / "fresh.png"
    assert cli.main(["sample", "--checkpoint", str(tiny_run), "--fresh", "--y", "3", "--n", "5",
                     "--steps", "0", "--out", str(out)]) == 0
    assert "from the run's class-Gaussian" in capsys.readouterr().out
    # zero steps picture the starts: class 3's Gaussian under the seed's generator
    run = load_trained(tiny_run)
    assert run["n_classes"] == 10 and run["sample_shape"] == (1, 8, 8) and run["test_set"] is None
    init.generator = torch.Generator().manual_seed(0)
    x0 = init(5, torch.full((5,), 3))
    assert torch.allclose(x0.mean(0).flatten(), init.mean[3].clamp(-1, 1), atol=0.6)
    assert cli.main(["sample", "--checkpoint", str(tiny_run), "--n", "4", "--steps", "1",
                     "--out", str(tmp_path / "buffer.png")]) == 0
    assert "from buffer rows" in capsys.readouterr().out


def test_a_missing_or_foreign_init_file_is_a_message(tiny_run, tmp_path, capsys):
    ckpt = tiny_run / "checkpoints" / "step_00000001.pt"
    alone = tmp_path / "alone"
    alone.mkdir()
    save_checkpoint(alone / "step.pt", load_checkpoint(ckpt))   # the checkpoint copied without init.pt
    assert cli.main(["sample", "--checkpoint", str(alone / "step.pt"), "--fresh", "--n", "2",
                     "--out", str(tmp_path / "s.png")]) == 2
    assert "init.pt is missing" in capsys.readouterr().err
    # a resume fits the distribution to the data again, and writes it beside its checkpoints
    t = Trainer.resume(alone / "step.pt", out=None)
    torch.testing.assert_close(t.init.mean, ClassGaussianInit.from_state_dict(
        load_checkpoint(tiny_run / INIT_FILE)).mean)
    sd = load_checkpoint(tiny_run / INIT_FILE)
    sd["mean"] = sd["mean"] + 1
    save_checkpoint(alone / INIT_FILE, sd)
    with pytest.raises(ValueError, match="digest differs"):
        Trainer.resume(alone / "step.pt", out=None)
    with pytest.raises(ValueError, match="holds another initial distribution"):
        t.save(alone / "checkpoints" / "step_00000002.pt")
    assert not (alone / "checkpoints" / "step_00000002.pt").exists()


def test_resume_continues_with_the_saved_fit(tiny_run, monkeypatch):
    """The resumed trainer's Gaussian is the file's, not a new fit (exact across machines)."""
    def no_fit(*a, **k):
        raise AssertionError("the Gaussian was fitted again")
    monkeypatch.setattr(ClassGaussianInit, "fit", no_fit)
    t = Trainer.resume(tiny_run, out=None)
    saved = load_checkpoint(tiny_run / INIT_FILE)
    assert torch.equal(t.init.mean, saved["mean"]) and torch.equal(t.init.chol, saved["chol"])


def test_hold_out_keeps_the_rest_in_order():
    ds = load_dataset("digits", "train")
    kept = hold_out(ds, 100, seed=0)
    assert len(kept) == len(ds) - 100
    assert torch.equal(kept.x, ds.x[torch.isin(torch.arange(len(ds)), _kept_index(ds, 100))])
    assert hold_out(ds, 0, seed=0) is ds
    with pytest.raises(ValueError, match="holdout=5000"):
        hold_out(ds, 5000, seed=0)


def _kept_index(ds, n):
    return torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[n:].sort().values


def test_sample_steps_one_call_each_equal_one_call_of_all_steps():
    """ebjdat sample runs its chains a step per call under a progress bar: the Philox
    stream continues across calls, so the chains equal one call's, bit for bit."""
    from ebjdat import SGLD, ops
    from ebjdat.cli import run_chains

    def energy(x):
        return (x ** 2).flatten(1).sum(1) + x.flatten(1)[:, 0].sin()

    def chains(stepwise):
        s = SGLD(energy, n_steps=7, step_size=0.3, noise_std=0.05, clamp=(-1.0, 1.0),
                 generator=ops.PhiloxGenerator(11))
        x0 = torch.linspace(-1, 1, 3 * 2 * 5).view(3, 2, 5)
        return run_chains(s, x0, None, 7, progress=False) if stepwise else s.sample(x_init=x0)
    a, b = chains(True), chains(False)
    assert torch.equal(a, b) and not torch.equal(a, torch.linspace(-1, 1, 30).view(3, 2, 5))
