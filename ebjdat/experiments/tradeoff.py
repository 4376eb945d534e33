"""The trilemma, measured on the embedded digits: standard training, PGD adversarial
training (AT), JEM and EB-JDAT, each the same trainer with the terms of its objective
(``--objective``) and the same budget, over several seeds, each attacked over a grid of
radii as ``ebjdat eval`` attacks a checkpoint.

    python -m ebjdat.experiments.tradeoff --out runs/tradeoff [--seeds 0,1,2] [--workers 2]

Writes into --out (a new or empty folder): ``runs/<objective>-s<seed>/`` (each run
folder, its progress in ``runs/<objective>-s<seed>.log``), ``tradeoff.json`` (every number), ``tradeoff.md`` (at the headline radius, the
smallest of the grid where standard training's AutoAttack accuracy is at most 20 %: clean,
PGD-20 and AutoAttack accuracy, digits FD and conditional accuracy of buffer samples, the
two energy gaps, mean +- standard deviation over the seeds; whether EB-JDAT is within the
seeds' spread of AT and of JEM; the energy landscape beside the paper's figures; the
curves as a table), ``robustness_curves.png`` (accuracy against eps, one line per
objective, the seeds' spread shaded), ``tradeoff_scatter.png`` (robustness at the headline
radius against generation quality) and ``tradeoff_samples.png`` (generated digits, one row
per objective, the first seed's run). Standard training and JEM, which train without an
attack, run first: standard training's curve fixes the headline radius, and AT and EB-JDAT
then train with attacks of that radius (the step a quarter of it, as the published 2/255
in 8/255), so AT is evaluated at the budget it trained at. Runs train in ``--workers``
processes of one CPU thread each; a line reports each finished run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

from ..runs.config import DIGITS_EPS
from . import tables

OBJECTIVES = ("standard", "at", "jem", "ebjdat")
ATTACKING = ("at", "ebjdat")   # the objectives that train with an attack
# pixels in [0, 1]: standard training's AutoAttack accuracy falls from 73 % at 16/255 to 1 % at
# 48/255, crossing 20 % between 32/255 and 36/255 (docs/tradeoff.md)
GRID = (16 / 255, 32 / 255, 36 / 255, 48 / 255, 64 / 255)
CLOSING = ("clean_acc", "gen_fd", "gen_cond_acc", "energy_clean_mean", "energy_gen_mean", "energy_gap_gen")


def run_one(job: dict) -> dict:
    """``measure(job)`` with its progress (the training bar, the closing evaluation's lines)
    in ``<folder>.log`` beside the run folder, so that runs side by side keep the terminal
    to one line per finished run."""
    folder = Path(job["folder"])
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.log", "x") as log, contextlib.redirect_stderr(log):
        return measure(job)


def measure(job: dict) -> dict:
    """Train one (objective, seed) run into job["folder"] (its closing evaluation gives the
    clean accuracy, generation quality and energies of clean and generated points), then
    attack its checkpoint at every radius of job["grid"] with PGD-20 and AutoAttack; its
    numbers and one generated sample per class (as the model labels them)."""
    from ..data import load_dataset
    from ..energy import logits_of
    from ..evaluate import closing
    from ..evaluate.core import evaluate
    from ..evaluate.landscape import generate, marginal_energies
    from ..evaluate.spec import AttackSpec
    from ..evaluate.trained import load_trained
    from ..train import TrainConfig, Trainer
    torch.set_num_threads(1)
    folder = Path(job["folder"])
    extra = {"steps": job["steps"]} if job["steps"] else {}
    if job.get("train_eps"):   # the training attack at the headline radius (pixels; [-1, 1] units double it)
        extra.update(pgd_eps=2 * job["train_eps"], pgd_alpha=job["train_eps"] / 2)
    cfg = TrainConfig.preset("sadajem", objective=job["objective"], seed=job["seed"], out=str(folder),
                             threads=1, device="cpu", **extra)
    t0 = time.perf_counter()
    summary = Trainer(cfg).fit(closing=closing.evaluate)
    train_s = time.perf_counter() - t0
    run = load_trained(folder)
    model = run["model"].eval()
    test = load_dataset("digits", "test")
    curve = []
    for eps in job["grid"]:
        spec = AttackSpec(eps=eps, steps=20, autoattack=job["autoattack"], protocol="standard", seed=job["seed"],
                          batch_size=512)
        res, x_adv = evaluate(model, test.x, test.y, spec, return_adv=True)
        e_adv = float(marginal_energies(model, x_adv).mean())
        curve.append({"eps": eps, "pgd_acc": res["pgd_acc"], "autoattack_acc": res.get("autoattack_acc"),
                      "energy_adv_mean": e_adv, "energy_gap_adv": e_adv - summary["energy_clean_mean"],
                      "sanity": res["sanity"]})
    x = generate(run["model"], run["config"], run["buffer"][:200], seed=job["seed"])
    with torch.no_grad():
        y = logits_of(model, x).argmax(1)
    picks = [int((y == k).nonzero()[0]) if (y == k).any() else -1 for k in range(10)]
    samples = torch.stack([x[i] if i >= 0 else torch.full_like(x[0], float("nan")) for i in picks])
    row = {"objective": job["objective"], "seed": job["seed"], **{k: summary[k] for k in CLOSING},
           "closing_pgd_acc": summary["pgd_acc"], "closing_eps": cfg.eval_eps,   # the default run's check
           "n_test": len(test.y), "train_eps": cfg.pgd_eps / 2 if cfg.w_pxadv or cfg.w_pyxadv else None,
           "curve": curve, "train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - t0, 1)}
    return {**row, "samples": samples}


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder; results are never written over "
                         f"another experiment's, name a new folder")


def _seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]: distinct seeds in [0, 2**63)."""
    try:
        seeds = [int(t) for t in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= v < 2**63 for v in seeds):
        raise ValueError(f"--seeds {text}: distinct whole numbers in [0, 2**63), comma-separated, e.g. 0,1,2")
    return seeds


def parse_grid(text: str) -> tuple[float, ...]:
    """"16/255,0.2" -> (0.0627.., 0.2): radii in (0, 1] pixels, increasing."""
    from ..evaluate.cli import parse_eps
    try:
        grid = tuple(parse_eps(t.strip()) for t in text.split(","))
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"--eps: {e}") from None
    if not all(0 < e <= 1 for e in grid) or list(grid) != sorted(set(grid)):
        raise ValueError(f"--eps {text}: radii in (0, 1] pixel units, increasing, e.g. 16/255,32/255")
    return grid


def _longest_first(job: dict) -> int:
    """The runs that take longest start first, so that the workers finish together (JEM
    samples, standard training does not; EB-JDAT samples and attacks, AT only attacks)."""
    return {"jem": 0, "standard": 1, "ebjdat": 0, "at": 1}[job["objective"]]


def _line(row: dict, done: int, total: int, t0: float) -> str:
    aa = [p["autoattack_acc"] for p in row["curve"]]
    acc = ", ".join(f"{tables.fmt_eps(p['eps'])} {100 * (a if a is not None else p['pgd_acc']):.1f}"
                    for p, a in zip(row["curve"], aa))
    return (f"[{done}/{total}] {row['objective']} seed {row['seed']}: clean {100 * row['clean_acc']:.1f} %, "
            f"{'AutoAttack' if None not in aa else 'PGD-20'} {acc} %, FD {row['gen_fd']:.2f} "
            f"({row['wall_s']:.0f} s; {time.perf_counter() - t0:.0f} s in all)")


def _run_all(jobs: list[dict], workers: int, t0: float, total: int, done: int = 0) -> list[dict]:
    """Every job, a line as each finishes ("[done + k/total]"); the rows in the jobs' order."""
    rows = []
    if workers == 1:
        it = map(run_one, jobs)
    else:
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)))
        it = pool.imap_unordered(run_one, jobs, chunksize=1)
    try:
        for row in it:
            rows.append(row)
            print(_line(row, done + len(rows), total, t0), flush=True)
    finally:
        if workers != 1:
            pool.close()
            pool.join()
    order = {(j["objective"], j["seed"]): i for i, j in enumerate(jobs)}
    return sorted(rows, key=lambda r: order[(r["objective"], r["seed"])])


def charts_of(out: Path, rows: list[dict], eps: float, seeds: list[int]) -> None:
    """robustness_curves.png and tradeoff_scatter.png in ``out`` from the rows (those of
    tradeoff.json's "runs" will do)."""
    from .. import charts  # matplotlib, imported only where a chart is drawn
    head = tables.summarise([tables.at_radius(r, eps) for r in rows], ["gen_fd", "autoattack_acc", "pgd_acc"])
    clean = tables.summarise(rows, ["clean_acc"])
    key = "autoattack_acc" if all(p["autoattack_acc"] is not None for r in rows for p in r["curve"]) else "pgd_acc"
    name = "AutoAttack" if key == "autoattack_acc" else "PGD-20"
    lines = {obj: [(0.0, *clean[obj]["clean_acc"][:2]), *pts] for obj, pts in tables.curves(rows, key).items()}
    charts.save_curves(out / "robustness_curves.png", lines, xlabel="linf radius eps (pixels in [0, 1])",
                       ylabel=f"{name} accuracy", ylim=(0.0, 1.02),
                       title=f"{name} accuracy against eps on the digits (mean ± std over seeds, shaded)",
                       notes=[(f"seeds {', '.join(map(str, seeds))}; eps 0: clean accuracy; AT and EB-JDAT train at the "
                               f"headline radius, {tables.fmt_eps(eps)}")])
    points = {o: (m["gen_fd"][0], m[key][0], m["gen_fd"][1], m[key][1]) for o, m in head.items() if "gen_fd" in m}
    charts.save_scatter(out / "tradeoff_scatter.png", points, xlabel="digits FD of buffer samples (lower is better)",
                        ylabel=f"{name} accuracy at {tables.fmt_eps(eps)}",
                        title="robustness against generation, mean ± std over seeds",
                        notes=[f"seeds {', '.join(map(str, seeds))}; linf {tables.fmt_eps(eps)} in pixel units"])


def _samples_grid(out: Path, rows: list[dict], seeds: list[int]) -> None:
    from .. import plots
    objs = list(dict.fromkeys(r["objective"] for r in rows))
    first = {o: next(r for r in rows if r["objective"] == o and r["seed"] == seeds[0]) for o in objs}
    x = torch.cat([first[o]["samples"] for o in objs])
    y = torch.arange(len(objs)).repeat_interleave(10)
    plots.save_class_grid(out / "tradeoff_samples.png", x, y, len(objs), row_labels=objs,
                          title=f"buffer samples, one per class the model assigns, seed {seeds[0]}")


def main(argv=None) -> int:
    from ..evaluate import autoattack
    p = argparse.ArgumentParser(prog="python -m ebjdat.experiments.tradeoff", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help=f"default {','.join(OBJECTIVES)}")
    p.add_argument("--workers", type=int, default=2, help="runs trained at once, one CPU thread each (default 2)")
    p.add_argument("--steps", type=int, help="iterations per run (default: the digits profile's)")
    p.add_argument("--eps", default=",".join(f"{round(e * 255)}/255" for e in GRID),
                   help="the radii of the curves, pixels in [0, 1] (default %(default)s)")
    p.add_argument("--autoattack", choices=("auto", "on", "off"), default="auto",
                   help="auto: when torchattacks is installed (default)")
    args = p.parse_args(argv)
    try:
        seeds = _seeds(args.seeds)
        objectives = args.objectives.split(",")
        bad = [o for o in objectives if o not in OBJECTIVES]
        if bad or len(set(objectives)) != len(objectives):
            raise ValueError(f"--objectives {args.objectives}: each of {', '.join(OBJECTIVES)} at most once")
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: must be >= 1")
        if args.steps is not None and args.steps < 1:
            raise ValueError(f"--steps {args.steps}: must be >= 1 (unset: the digits profile's)")
        grid = parse_grid(args.eps)
        out = Path(args.out)
        _check_out(out)
        aa = {"auto": autoattack.available(), "on": True, "off": False}[args.autoattack]
        if aa:
            autoattack.torchattacks_module()   # the install command, before any training
    except ValueError as e:
        print(f"tradeoff: {e}", file=sys.stderr)
        return 2
    jobs = [{"objective": o, "seed": s, "folder": str(out / "runs" / f"{o}-s{s}"), "steps": args.steps,
             "autoattack": aa, "grid": grid} for s in seeds for o in objectives]
    t0 = time.perf_counter()
    print(f"tradeoff: {len(jobs)} runs ({', '.join(objectives)} x seeds {args.seeds}), each attacked at "
          f"{', '.join(map(tables.fmt_eps, grid))}, in {min(args.workers, len(jobs))} processes", flush=True)
    # first the objectives that train without an attack: standard training's curve fixes the
    # headline radius, at which AT and EB-JDAT then train
    first = sorted((j for j in jobs if j["objective"] not in ATTACKING), key=_longest_first)
    rows = _run_all(first, args.workers, t0, len(jobs)) if first else []
    eps, why = tables.headline_radius(rows, fallback=DIGITS_EPS, grid=grid)
    then = sorted(({**j, "train_eps": eps} for j in jobs if j["objective"] in ATTACKING), key=_longest_first)
    if then:
        print(f"tradeoff: headline radius {tables.fmt_eps(eps)} ({why}); AT and EB-JDAT train at it", flush=True)
        rows += _run_all(then, args.workers, t0, len(jobs), done=len(rows))
    order = {(j["objective"], j["seed"]): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["objective"], r["seed"])])
    train_eps = eps if then else None
    text = tables.markdown(rows, eps, why, seeds)
    (out / "tradeoff.md").write_text(text)
    at = [tables.at_radius(r, eps) for r in rows]
    summary = tables.summarise(at, [k for k, _ in tables.HEADLINE + tables.LANDSCAPE])
    (out / "tradeoff.json").write_text(json.dumps(
        {"seeds": seeds, "grid": list(grid), "headline_eps": eps, "headline_why": why, "train_eps": train_eps,
         "wall_s": round(time.perf_counter() - t0, 1),
         "options": {k: v for k, v in vars(args).items() if k != "out"},   # no machine path in the results
         "runs": [{k: v for k, v in r.items() if k != "samples"} for r in rows],
         "summary": {o: {k: {"mean": v[0], "std": v[1], "n": v[2]} for k, v in m.items()}
                     for o, m in summary.items()}}, indent=1))
    charts_of(out, rows, eps, seeds)
    _samples_grid(out, rows, seeds)
    print(text, end="")
    print(f"wrote {out}/tradeoff.md, tradeoff.json, robustness_curves.png, tradeoff_scatter.png, "
          f"tradeoff_samples.png in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
