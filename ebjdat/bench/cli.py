"""``ebjdat bench [SUITE ...] [--device D] [--quick] [--json F] [--profile DIR] [--budget-s S]
[--no-compile]``, SUITE in ops, loops, overhead, attack, step, threads (CPU), all (the
default).

Runs the suites (suite_ops, suite_loops, suite_step), measures the ceilings first in the
same run (timing.ceilings), prints one table and, with --json, writes
``{"environment", "device", "quick", "suite", "ceilings", "wall_s", "rows"}``. --profile
DIR writes a Chrome trace per training-iteration case (step suite) with ranges around the
sampler, attack and optimizer phases (record_function; NVTX too on a GPU). --budget-s:
the step suite runs its torch.compile case only if that much time is left for it;
--no-compile drops the compile cases (their rows say so).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from ..validate import resolve_device

SUITES = ("ops", "loops", "overhead", "attack", "step", "threads")


def _suites(suite) -> list[str]:
    names = [suite] if isinstance(suite, str) else list(suite) or ["all"]
    for name in names:
        if name != "all" and name not in SUITES:
            raise ValueError(f"suite must be 'all' or one of {SUITES}, got {name!r}")
    return list(SUITES) if "all" in names else list(dict.fromkeys(names))


def _check_json_path(json_path) -> Path | None:
    """The --json path, checked before any work: never overwrites an existing file."""
    if json_path is None:
        return None
    path = Path(json_path)
    if path.exists():
        raise ValueError(f"--json {path} already exists: name a new file")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"--json {path}: {path.parent} is not a folder")
    return path


def _check_budget(budget_s) -> float | None:
    """--budget-s: None, or a finite number of seconds >= 0 (NaN would compare false with
    every deadline and let the compile case run whatever the budget)."""
    if budget_s is None:
        return None
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not (
            math.isfinite(budget_s) and budget_s >= 0):
        raise ValueError(f"--budget-s {budget_s}: must be a finite number of seconds >= 0; "
                         f"leave it out for no budget")
    return float(budget_s)


def _check_profile_dir(profile) -> Path | None:
    """The --profile folder, checked before any work: a folder or a path that can become
    one (no existing file on the way)."""
    if profile is None:
        return None
    path = Path(profile)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"--profile {path}: {part} is a file, not a folder; name a folder for the traces")
    return path


def run_bench(suite="all", device: str | None = None, quick: bool = False,
              json_path=None, profile=None, out=None, budget_s: float | None = None,
              compile: bool = True) -> dict:
    """Run ``suite`` ("all", one of SUITES or a list of them); print the table to ``out``;
    return the result."""
    from . import suite_loops, suite_ops, suite_step, timing
    out = out or sys.stdout
    names = _suites(suite)
    path = _check_json_path(json_path)
    budget_s, profile = _check_budget(budget_s), _check_profile_dir(profile)
    dev = resolve_device(device or "auto")
    t0 = time.perf_counter()
    deadline = None if budget_s is None else t0 + budget_s
    ceil = timing.ceilings(dev)
    runners = {"ops": lambda: suite_ops.run(dev, quick, ceil),
               "loops": lambda: suite_loops.run_loops(dev, quick, ceil),
               "overhead": lambda: suite_loops.run_overhead(dev, quick, ceil),
               "attack": lambda: suite_loops.run_attack(dev, quick, ceil),
               "step": lambda: suite_step.run(dev, quick, ceil, profile, deadline=deadline,
                                              compile=compile),
               "threads": lambda: suite_step.run_threads(dev, quick, ceil)}
    result = {"environment": timing.environment(), "device": str(dev), "quick": quick,
              "suite": " ".join(names), "ceilings": ceil, "rows": []}
    for name in names:
        result["rows"] += runners[name]()
        result["wall_s"] = time.perf_counter() - t0
        if path is not None:   # after each suite: a run killed later keeps the suites done
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
    print(format_table(result), file=out)
    if path is not None:
        print(f"wrote {path}", file=out)
    return result


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table_lines(rows: list[dict]) -> list[list[str]]:
    """Header + one line per timed row: the columns of the table and the report."""
    head = ["suite", "case", "baseline", "ours", "baseline ms", "ours ms", "speed-up",
            "vs compile", "GB/s or TFLOP/s", "% of ceiling", "proj. h (100 ep)"]
    lines = [head]
    for r in rows:
        if "ours_us" not in r:
            continue
        rate = (f"{r['GBps']:.1f} GB/s" if r.get("GBps") is not None
                else f"{r['model_TFLOPs']:.3g} TFLOP/s" if r.get("model_TFLOPs") is not None else "-")
        pct = "-" if r.get("pct_ceiling") is None else f"{r['pct_ceiling']:.1f}% {r.get('ceiling', '')}"
        lines.append([r["suite"], r["case"], r.get("baseline", "-"), r["ours"],
                      _fmt(r.get("baseline_us") and r["baseline_us"] / 1e3, ".4g"),
                      _fmt(r["ours_us"] / 1e3, ".4g"), _fmt(r.get("speedup"), ".2f") + "x",
                      _fmt(r.get("speedup_vs_compile"), ".2f") + ("x" if r.get("speedup_vs_compile") else ""),
                      rate, pct, _fmt(r.get("projected_hours"), ".2f")])
    return lines


def target_lines(rows: list[dict]) -> list[str]:
    """A summary of the rows' ``targets`` (the ops suite's GPU targets): how many rows meet
    every one, then each miss with its figure; nothing when no row carries targets."""
    judged = [r for r in rows if r.get("targets")]
    if not judged:
        return []
    met = sum(all(t["met"] for t in r["targets"]) for r in judged)
    out = [f"targets: {met} of {len(judged)} GPU rows meet every target (suite_ops.targets)"]
    for r in judged:
        for t in r["targets"]:
            if not t["met"]:
                got = "not measured" if t["value"] is None else f"{t['value']:.3g}"
                out.append(f"target missed: {r['case']} {r['ours']}: {t['target']} (got {got})")
    return out


def recipe_lines(rows: list[dict]) -> list[str]:
    """Per trainer row of the step suite, what of the fast recipe ran: layout, precision,
    compile (graphs and breaks dynamo made in the case) and the first loss against fp32."""
    out = []
    for r in rows:
        if "precision" not in r:
            continue
        comp = (f"compiled ({r['graphs']} graphs, {r['graph_breaks']} breaks)" if r["compiled"]
                else f"eager ({r['compile_why_not']})" if r.get("compile_why_not") else "eager")
        agree = f", first loss {r['loss_rel_diff']:.1e} rel. from fp32" if "loss_rel_diff" in r else ""
        out.append(f"recipe: {r['ours']}: {'channels_last' if r['channels_last'] else 'NCHW'}, "
                   f"{r['precision']}, {comp}{agree}")
    return out


def format_table(result: dict) -> str:
    env, ceil = result["environment"], result["ceilings"]
    lines = table_lines(result["rows"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [f"ebjdat bench on {result['device']} ({env.get('gpu') or env.get('cpu')}; torch "
            f"{env['torch']}, triton {env.get('triton')}, commit {env['commit'][:8]}); ceilings: "
            f"copy {ceil['copy_GBps']:.1f} GB/s, {ceil['matmul_dtype']} matmul "
            f"{ceil['matmul_TFLOPs']:.3g} TFLOP/s; {result['wall_s']:.1f} s"
            + (" (--quick)" if result["quick"] else "")]
    for i, line in enumerate(lines):
        text.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    skipped = [r for r in result["rows"] if "skipped" in r]
    text += [f"skipped: {r['case']} {r['ours']}: {r['skipped']}" for r in skipped]
    notes = dict.fromkeys(f"note: {r['case']}: {r['note']}" for r in result["rows"] if r.get("note"))
    text += list(notes)
    text += recipe_lines(result["rows"])
    text += target_lines(result["rows"])
    return "\n".join(text)


def _bench(args) -> int:
    try:
        run_bench(args.suite, args.device, args.quick, args.json, args.profile,
                  budget_s=args.budget_s, compile=args.compile)
    except (ValueError, OSError) as e:   # OSError: a --json or --profile path that cannot be written
        print(f"ebjdat bench: {e}", file=sys.stderr)
        return 2
    return 0


def add_parser(sub) -> None:
    """Register ``bench`` on an argparse subparsers object (as ebjdat/demo.py does)."""
    p = sub.add_parser("bench", help="benchmark ops, loops, attack and training step against baselines",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("suite", nargs="*", default=["all"], choices=(*SUITES, "all"),
                   help="suites to run (default: all)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when present)")
    p.add_argument("--quick", action="store_true", help="small sizes: digits model, tiny tensors")
    p.add_argument("--json", metavar="F", help="write the environment and rows to this JSON file")
    p.add_argument("--profile", metavar="DIR", help="write Chrome traces of the training-step cases here")
    p.add_argument("--budget-s", type=float, metavar="S",
                   help="time budget: the step suite's compile case runs only if it fits")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip the torch.compile cases of the step suite")
    p.set_defaults(fn=_bench)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ebjdat")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
