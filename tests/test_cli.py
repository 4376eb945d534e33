"""The `ebjdat` command: the demo's numbers hold and info lists the backends."""
from ebjdat import cli


def test_demo_runs_and_checks_its_numbers(capsys):
    assert cli.main(["demo", "--steps", "150", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "demo OK" in out and "exact stationary value 1.0526" in out


def test_info_lists_backends(capsys):
    assert cli.main(["info"]) == 0
    assert "backends available: torch" in capsys.readouterr().out


def test_info_says_what_runs_without_a_gpu(monkeypatch, capsys):
    """Without a GPU the cuda backend runs its host path only: info must not sell it as CUDA."""
    import torch

    from ebjdat import ops
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ops, "available_backends", lambda: ["torch", "cuda"])
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends available: torch, cuda (host path only: CPU tests; no GPU here)" in out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cli.main(["info"]) == 0
    assert "backends available: torch, cuda (selected" in capsys.readouterr().out


SUMMARY = {"step": 1320, "clean_acc": 0.9612, "pgd_acc": 0.8841, "noise_acc": 0.95, "gen_fd": 4.87,
           "gen_cond_acc": 0.912, "gen_fd_fresh": 9.1, "gen_cond_acc_fresh": 0.85, "energy_gap_adv": 0.0312,
           "energy_gap_gen": -0.25, "sanity": [], "wall_time_s": 212.4, "eval_s": 9.3,
           "config": {"eval_eps": 8 / 255, "eval_pgd_steps": 10}}


def test_train_summary_is_a_short_table():
    """train ends with a few readable lines (every number stays in summary.json)."""
    text = cli.format_summary(SUMMARY, "runs/x")
    lines = text.splitlines()
    assert lines[0] == "ebjdat train: done at step 1320" and len(lines) <= 10
    for words in ("clean accuracy", "96.12 %", "PGD accuracy", "88.41 % (linf eps 8/255, PGD-10)",
                  "FD 4.87, 91.20 % of them the model's class", "FD 9.10", "adversarial - clean +0.0312",
                  "generated - clean -0.25", "212.4 s training, 9.3 s closing evaluation", "runs/x",
                  "runs/x/summary.json"):
        assert words in text, words
    assert "{" not in text
    # no closing evaluation (or not the digits): the lines it has, nothing invented
    short = cli.format_summary({"step": 3, "wall_time_s": 1.0}, "r")
    assert [line.split()[-1] for line in short.splitlines() if "accuracy" in line] == ["-", "-"]
    assert "generation" not in short and "r/summary.json" in short
    warn = cli.format_summary({**SUMMARY, "sanity": ["PGD accuracy above clean"]}, "r")
    assert "WARNING" in warn and "PGD accuracy above clean" in warn


def test_train_prints_the_table_not_json(tmp_path, monkeypatch, capsys):
    from ebjdat.train import Trainer
    monkeypatch.setattr(Trainer, "fit", lambda self, closing=None: dict(SUMMARY))
    assert cli.main(["train", "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "ebjdat train: done at step 1320" in out and '"clean_acc"' not in out
    assert f"{tmp_path / 'run'}" in out.splitlines()[-2]


def test_the_closing_evaluation_reports_each_part_on_stderr(tmp_path, capsys):
    from ebjdat.evaluate import closing
    from ebjdat.train import TrainConfig, Trainer
    cfg = TrainConfig.preset("sadajem", steps=2, buffer_size=128, batch_size=16, label_batch_size=16, sgld_steps=1,
                             pgd_steps=1, eval_pgd_steps=1, device="cpu", out=str(tmp_path / "r"))
    Trainer(cfg).fit(closing=closing.evaluate)
    err = capsys.readouterr().err
    for part in ("closing evaluation of r: standard PGD-1 eps 0.1412", "closing evaluation of r: SGLD chains: 2000",
                 "closing evaluation of r: energy landscape", "closing evaluation of r: finished in"):
        assert part in err, part
