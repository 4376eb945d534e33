"""The trade-off experiment (ebjdat.experiments): its tables, headline radius, verdicts,
pictures and the digits' attack budget it trains at."""
import json

import pytest
from PIL import Image

from ebjdat import charts
from ebjdat.experiments import tables, tradeoff
from ebjdat.runs.config import DIGITS_EPS
from ebjdat.train import TrainConfig


def _row(obj, seed, accs, clean=0.97, fd=5.0, gap=0.3):
    """A run's row with AutoAttack accuracies ``accs`` at 16/255, 32/255, 48/255."""
    grid = (16 / 255, 32 / 255, 48 / 255)
    return {"objective": obj, "seed": seed, "clean_acc": clean, "gen_fd": fd, "gen_cond_acc": 0.99,
            "energy_clean_mean": -5.0, "energy_gen_mean": -4.8, "energy_gap_gen": 0.2, "n_test": 359,
            "train_eps": 32 / 255,
            "curve": [{"eps": e, "pgd_acc": a + 0.01, "autoattack_acc": a, "energy_adv_mean": -5.0 + gap,
                       "energy_gap_adv": gap} for e, a in zip(grid, accs)]}


def test_the_headline_is_the_smallest_radius_where_standard_falls_to_20_percent():
    rows = [_row("standard", 0, (0.7, 0.25, 0.01)), _row("standard", 1, (0.7, 0.13, 0.0)),
            _row("at", 0, (0.9, 0.8, 0.3))]
    eps, why = tables.headline_radius(rows)   # mean 0.19 at 32/255
    assert eps == 32 / 255 and "19.0 %" in why and "AutoAttack" in why
    high = [_row("standard", 0, (0.7, 0.5, 0.3))]
    eps, why = tables.headline_radius(high)
    assert eps == 48 / 255 and "stays above 20 %" in why
    jem = [_row("jem", 0, (0.9, 0.8, 0.3))]
    assert tables.headline_radius(jem) == (48 / 255, "no standard run: the grid's largest radius")
    assert tables.headline_radius(jem, fallback=32 / 255) == (32 / 255, "no standard run: the digits' budget")
    no_aa = _row("standard", 0, (0.7, 0.1, 0.0))
    for p in no_aa["curve"]:
        p["autoattack_acc"] = None
    assert "PGD-20" in tables.headline_radius([no_aa])[1]


def test_verdicts_say_within_or_outside_the_seeds_spread():
    s = {"ebjdat": {"autoattack_acc": (0.50, 0.02, 3), "gen_fd": (5.0, 0.3, 3)},
         "at": {"autoattack_acc": (0.80, 0.01, 3)}, "jem": {"gen_fd": (5.4, 0.2, 3)}}
    text = "\n".join(tables.verdicts(s))
    assert "AutoAttack accuracy is **outside (worse than)** the seeds' spread of AT's" in text
    assert "-30.00 points" in text
    assert "digits FD is **within** the seeds' spread of JEM's" in text
    s["ebjdat"]["gen_fd"] = (4.0, 0.1, 3)
    assert "FD is **outside (better than)**" in "\n".join(tables.verdicts(s))
    assert tables.overlap((1.0, 0.1, 3), (1.2, 0.1, 3)) and not tables.overlap((1.0, 0.05, 3), (1.2, 0.1, 3))


def test_markdown_holds_the_headline_the_landscape_beside_the_paper_and_the_curves():
    rows = [_row(o, s, a) for s in (0, 1) for o, a in (("standard", (0.7, 0.15, 0.0)), ("at", (0.9, 0.8, 0.3)),
                                                       ("jem", (0.8, 0.3, 0.0)), ("ebjdat", (0.9, 0.5, 0.1)))]
    eps, why = tables.headline_radius(rows)
    md = tables.markdown(rows, eps, why, [0, 1])
    assert md.startswith("## Headline: linf eps 32/255 in [0, 1] pixels")
    assert "| at | 97.0 ± 0.0 | 81.0 ± 0.0 | 80.0 ± 0.0 | 5.00 ± 0.00 | 99.0 ± 0.0 | 0.30 ± 0.00 | 0.20 ± 0.00 |" in md
    assert "## Energy landscape at 32/255" in md and "standard 10.18, at 1.46" in md
    assert "| ebjdat | AutoAttack | 90.0 ± 0.0 | 50.0 ± 0.0 | 10.0 ± 0.0 |" in md
    assert "train with attacks of radius 32/255" in md and "differs from the training budget" not in md
    for r in rows:
        r["train_eps"] = 16 / 255
    assert "differs from the training budget (16/255)" in tables.markdown(rows, eps, why, [0, 1])


def test_the_digits_attack_budget_reaches_at_ebjdat_and_the_closing_evaluation():
    for obj in ("at", "ebjdat"):
        c = TrainConfig.preset("sadajem", objective=obj)
        assert c.pgd_eps == pytest.approx(2 * DIGITS_EPS) and c.pgd_alpha == pytest.approx(DIGITS_EPS / 2)
        assert c.eval_eps == DIGITS_EPS
    assert TrainConfig.preset("sadajem", objective="at").pgd_project
    cifar = TrainConfig.preset("sadajem", dataset="cifar10", objective="at")
    assert cifar.pgd_eps == pytest.approx(16 / 255) and cifar.eval_eps == pytest.approx(8 / 255)
    assert TrainConfig.preset("sadajem", objective="at", pgd_eps=0.1).pgd_eps == 0.1   # overrides win


def test_curves_shade_the_spread(tmp_path):
    fig = charts.curves_figure({"a": [(0, 1, 0.05), (1, 0.5, 0.1)], "b": [(0, 0.9), (1, 0.2)]}, xlabel="eps",
                               ylabel="acc")
    assert len(fig.axes[0].collections) == 1   # one band: a's; b has no spread


@pytest.mark.parametrize("flags", [["--eps", "0,16/255"], ["--eps", "32/255,16/255"], ["--eps", "1.5"],
                                   ["--eps", "x"], ["--seeds", "0,0"], ["--seeds", "a"], ["--seeds", "-1"],
                                   ["--objectives", "at,at"], ["--objectives", "gan"], ["--steps", "0"],
                                   ["--workers", "0"]])
def test_flags_are_checked_before_any_work(flags, tmp_path, capsys):
    assert tradeoff.main(["--out", str(tmp_path / "t"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tradeoff: {flags[0]}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_tradeoff_writes_its_tables_and_pictures(tmp_path, capsys):
    out = tmp_path / "t"
    assert tradeoff.main(["--out", str(out), "--seeds", "0", "--objectives", "ebjdat,standard", "--workers", "1",
                          "--steps", "3", "--autoattack", "off", "--eps", "16/255,64/255"]) == 0
    captured = capsys.readouterr()
    # standard first (it fixes the headline radius), then EB-JDAT trained at that radius
    assert "[1/2] standard seed 0: clean" in captured.out and "[2/2] ebjdat seed 0" in captured.out
    assert "tradeoff: headline radius 16/255" in captured.out
    # each run's training bar and closing lines go to its log, not between the lines above
    assert "closing evaluation" not in captured.err + captured.out
    assert "closing evaluation of ebjdat-s0: finished" in (out / "runs" / "ebjdat-s0.log").read_text()
    table = (out / "tradeoff.md").read_text()
    assert table.startswith("## Headline: linf eps ") and "| standard |" in table and "PGD-20 accuracy" in table
    data = json.loads((out / "tradeoff.json").read_text())
    assert [r["objective"] for r in data["runs"]] == ["ebjdat", "standard"]
    # 3 steps barely train: standard training falls to 20 % at the first radius, where EB-JDAT then trains
    assert data["headline_eps"] == data["train_eps"] == data["runs"][0]["train_eps"] == pytest.approx(16 / 255)
    assert json.loads((out / "runs" / "ebjdat-s0" / "config.json").read_text())["pgd_eps"] == pytest.approx(32 / 255)
    assert "/" not in json.dumps(data["options"]).replace("16/255", "").replace("64/255", "")
    assert [p["eps"] for p in data["runs"][0]["curve"]] == pytest.approx([16 / 255, 64 / 255])
    assert data["runs"][1]["train_eps"] is None and "energy_gap_adv" in data["summary"]["ebjdat"]
    for name in ("robustness_curves.png", "tradeoff_scatter.png", "tradeoff_samples.png"):
        with Image.open(out / name) as im:
            assert im.width > 300
    assert tradeoff.main(["--out", str(out), "--seeds", "0"]) == 2   # never over another experiment
    assert "not an empty folder" in capsys.readouterr().err


def _check_default_run(tmp_path, **changes):
    import subprocess
    import sys
    from pathlib import Path
    s = {"step": 1320, "clean_acc": 0.98, "pgd_acc": 0.5, "gen_fd": 5.9, "gen_cond_acc": 0.99, "gen_n": 2000,
         "gen_fd_fresh": 20.0, "gen_cond_acc_fresh": 0.9, "gen_n_fresh": 2000, "wall_time_s": 100.0,
         "config": {"eval_eps": DIGITS_EPS}}
    s.update(changes)
    (tmp_path / "summary.json").write_text(json.dumps(s))
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_default_run.py"
    return subprocess.run([sys.executable, str(script), str(tmp_path / "summary.json")], capture_output=True,
                          text=True, check=False)


def test_ci_checks_the_default_runs_robustness_at_the_digits_budget(tmp_path):
    assert _check_default_run(tmp_path).returncode == 0
    r = _check_default_run(tmp_path, pgd_acc=0.2)   # standard training's is below
    assert r.returncode == 1 and "pgd_acc 0.2, needs >= " in r.stderr and "(PGD-10 at 36/255)" in r.stderr
    r = _check_default_run(tmp_path, config={"eval_eps": 8 / 255})
    assert r.returncode == 1 and "not at the digits' budget" in r.stderr
