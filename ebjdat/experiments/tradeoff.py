"""The trilemma, measured on the embedded digits: standard training, PGD adversarial
training (AT), JEM and EB-JDAT, each the same trainer with the terms of its objective
(``--objective``) and the same budget, over several seeds, each evaluated as
``ebjdat eval`` evaluates a checkpoint.

    python -m ebjdat.experiments.tradeoff --out runs/tradeoff [--seeds 0,1,2] [--workers 2]

Writes into --out (a new or empty folder): ``runs/<objective>-s<seed>/`` (each run
folder, its evaluation in ``eval/``), ``tradeoff.json`` (every number), ``tradeoff.md``
(mean +- standard deviation over the seeds: clean, PGD-20 and AutoAttack accuracy at
8/255 in pixel units, digits FD and conditional accuracy of buffer samples, the two energy
gaps), ``tradeoff_scatter.png`` (robustness against generation quality, one point per
objective) and ``tradeoff_samples.png`` (generated digits, one row per objective, the
first seed's run). Runs train in ``--workers`` processes of one CPU thread each.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch

OBJECTIVES = ("standard", "at", "jem", "ebjdat")
COLUMNS = (("clean_acc", "clean"), ("pgd_acc", "PGD-20"), ("autoattack_acc", "AutoAttack"),
           ("gen_fd", "digits FD (lower is better)"), ("gen_cond_acc", "cond. acc."),
           ("energy_gap_adv", "gap adv - clean"), ("energy_gap_gen", "gap gen - clean"))


def run_one(job: dict) -> dict:
    """Train one (objective, seed) run into job["folder"], evaluate it; its numbers and
    one generated sample per class (as the model labels them)."""
    from ..data import load_dataset
    from ..energy import logits_of
    from ..evaluate import closing
    from ..evaluate.landscape import generate
    from ..evaluate.spec import AttackSpec, EvalSpec
    from ..evaluate.trained import evaluate_checkpoint, load_trained
    from ..train import TrainConfig, Trainer
    torch.set_num_threads(1)
    folder = Path(job["folder"])
    extra = {"steps": job["steps"]} if job["steps"] else {}
    cfg = TrainConfig.preset("sadajem", objective=job["objective"], seed=job["seed"], out=str(folder),
                             threads=1, device="cpu", **extra)
    t0 = time.perf_counter()
    Trainer(cfg).fit(closing=closing.evaluate)
    train_s = time.perf_counter() - t0
    # the table's protocol is the standard one; the published one costs minutes
    spec = EvalSpec(n=len(load_dataset("digits", "test")), samples=False,
                    attack=AttackSpec(eps=8 / 255, steps=20, autoattack=job["autoattack"], protocol="standard",
                                      seed=job["seed"]))
    res = evaluate_checkpoint(folder, spec, out=folder / "eval", device="cpu")
    run = load_trained(folder)
    x = generate(run["model"], run["config"], run["buffer"][:200], seed=job["seed"])
    with torch.no_grad():
        y = logits_of(run["model"], x).argmax(1)
    picks = [int((y == k).nonzero()[0]) if (y == k).any() else -1 for k in range(10)]
    samples = torch.stack([x[i] if i >= 0 else torch.full_like(x[0], float("nan")) for i in picks])
    keep = {k: res[k] for k, _ in COLUMNS if k in res}
    return {"objective": job["objective"], "seed": job["seed"], **keep, "train_s": round(train_s, 1),
            "samples": samples}


def summarise(rows: list[dict]) -> dict:
    """{objective: {metric: (mean, std, n)}} over the seeds (std 0 for one seed)."""
    out = {}
    for obj in dict.fromkeys(r["objective"] for r in rows):
        mine = [r for r in rows if r["objective"] == obj]
        out[obj] = {}
        for key, _ in COLUMNS:
            vals = [r[key] for r in mine if key in r]
            if vals:
                out[obj][key] = (statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0, len(vals))
    return out


def markdown(summary: dict, seeds: list[int]) -> str:
    cols = [(k, name) for k, name in COLUMNS if any(k in m for m in summary.values())]
    lines = ["| objective | " + " | ".join(name for _, name in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for obj, m in summary.items():
        cells = []
        for k, _ in cols:
            if k not in m:
                cells.append("-")
            elif k.endswith("_acc"):
                cells.append(f"{100 * m[k][0]:.1f} ± {100 * m[k][1]:.1f}")
            else:
                cells.append(f"{m[k][0]:.2f} ± {m[k][1]:.2f}")
        lines.append(f"| {obj} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))}; accuracies in % on the "
                 f"359 test digits, attacks at 8/255 (pixel units); energy gaps in E = -logsumexp logits.")
    return "\n".join(lines) + "\n"


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder; results are never written over "
                         f"another experiment's, name a new folder")


def main(argv=None) -> int:
    from .. import plots
    from ..evaluate import autoattack
    p = argparse.ArgumentParser(prog="python -m ebjdat.experiments.tradeoff", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help=f"default {','.join(OBJECTIVES)}")
    p.add_argument("--workers", type=int, default=2, help="runs trained at once, one CPU thread each")
    p.add_argument("--steps", type=int, help="iterations per run (default: the digits profile's)")
    p.add_argument("--autoattack", choices=("auto", "on", "off"), default="auto",
                   help="auto: when torchattacks is installed (default)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        objectives = args.objectives.split(",")
        bad = [o for o in objectives if o not in OBJECTIVES]
        if bad or not objectives:
            raise ValueError(f"--objectives: {bad or 'none'} not among {OBJECTIVES}")
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: must be >= 1")
        out = Path(args.out)
        _check_out(out)
        aa = {"auto": autoattack.available(), "on": True, "off": False}[args.autoattack]
        if aa:
            autoattack.torchattacks_module()   # the install command, before any training
    except ValueError as e:
        print(f"tradeoff: {e}", file=sys.stderr)
        return 2
    jobs = [{"objective": o, "seed": s, "folder": str(out / "runs" / f"{o}-s{s}"), "steps": args.steps,
             "autoattack": aa} for s in seeds for o in objectives]
    t0 = time.perf_counter()
    if args.workers == 1:
        rows = [run_one(j) for j in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
            rows = pool.map(run_one, jobs, chunksize=1)
    summary = summarise(rows)
    table = markdown(summary, seeds)
    (out / "tradeoff.md").write_text(table)
    (out / "tradeoff.json").write_text(json.dumps(
        {"seeds": seeds, "wall_s": round(time.perf_counter() - t0, 1), "command": " ".join(sys.argv),
         "runs": [{k: v for k, v in r.items() if k != "samples"} for r in rows],
         "summary": {o: {k: {"mean": v[0], "std": v[1], "n": v[2]} for k, v in m.items()}
                     for o, m in summary.items()}}, indent=1))
    points = {o: (m["gen_fd"][0], m["pgd_acc"][0], m["gen_fd"][1], m["pgd_acc"][1])
              for o, m in summary.items() if "gen_fd" in m}
    from .. import charts   # matplotlib, imported only where a chart is drawn
    charts.save_scatter(out / "tradeoff_scatter.png", points, xlabel="digits FD of buffer samples (lower is better)",
                       ylabel="PGD-20 accuracy", title="robustness against generation, mean ± std over seeds",
                       notes=[f"seeds {args.seeds}; 8/255 linf in pixel units; 359 test digits"])
    first = {o: next(r for r in rows if r["objective"] == o and r["seed"] == seeds[0]) for o in summary}
    x = torch.cat([first[o]["samples"] for o in summary])
    y = torch.arange(len(summary)).repeat_interleave(10)
    plots.save_class_grid(out / "tradeoff_samples.png", x, y, len(summary), row_labels=list(summary),
                          title=f"buffer samples, one per class the model assigns, seed {seeds[0]}")
    print(table, end="")
    print(f"wrote {out}/tradeoff.md, tradeoff.json, tradeoff_scatter.png, tradeoff_samples.png "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
