"""``ebjdat bench [SUITE ...] [--device D] [--quick] [--json F] [--profile DIR] [--budget-s S]
[--no-compile]``, SUITE in ops, loops, overhead, attack, step, threads (CPU), all (the
default).

Runs the suites (suite_ops.py, suite_loops.py, suite_step.py), measures the ceilings first
in the same run (timing.ceilings), prints a line per row as it is measured (``progress_line``),
then one table and, with --json, writes ``{"environment", "device", "quick", "suite",
"ceilings", "wall_s", "rows"}`` (after each suite, so a run stopped later keeps the suites
done). --profile DIR writes a Chrome trace per training-iteration case (step suite) with
ranges around the sampler, attack and optimizer phases (record_function; NVTX too on a
GPU). --budget-s: the step suite runs its torch.compile case only if that much time is left
for it; --no-compile drops the compile cases (their rows say so). The command's --help
(``DESCRIPTION``) says the same in a user's words.
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
DESCRIPTION = (
    "Time ebjdat's fused ops, sampler and attack loops and training iteration against their baselines "
    "(eager torch, torch.compile, torchattacks and the published training loop), each figure also stated "
    "as a share of this machine's copy bandwidth or matmul rate, measured first in the same run. Suites: "
    "ops (each fused op at a CIFAR batch and 256 MiB; --quick: a small batch), loops (SGLD), overhead (the "
    "sampler's own cost per step), attack (PGD), step (one EB-JDAT training iteration per setting, and the "
    "data loader) and threads (CPU: one or two threads). A line is printed as each row is measured, then the "
    "table; --json keeps every number. --profile writes Chrome traces of the training-iteration cases.")


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

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {text}", file=out, flush=True)

    def report(row: dict) -> None:
        say(progress_line(row))

    say(f"measuring the ceilings on {dev}: copy bandwidth and matmul rate")
    ceil = timing.ceilings(dev)
    say(f"ceilings: copy {ceil['copy_GBps']:.1f} GB/s, {ceil['matmul_dtype']} matmul "
        f"{_num(ceil['matmul_TFLOPs'], 2)} TFLOP/s")
    runners = {"ops": lambda: suite_ops.run(dev, quick, ceil, report=report),
               "loops": lambda: suite_loops.run_loops(dev, quick, ceil, report=report),
               "overhead": lambda: suite_loops.run_overhead(dev, quick, ceil, report=report),
               "attack": lambda: suite_loops.run_attack(dev, quick, ceil, report=report),
               "step": lambda: suite_step.run(dev, quick, ceil, profile, deadline=deadline,
                                              compile=compile, report=report),
               "threads": lambda: suite_step.run_threads(dev, quick, ceil, report=report)}
    result = {"environment": timing.environment(), "device": str(dev), "quick": quick,
              "suite": " ".join(names), "ceilings": ceil, "rows": []}
    for name in names:
        say(f"suite {name}{' (--quick sizes)' if quick else ''}")
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


def _num(v, decimals: int) -> str:
    """v with ``decimals`` decimals, or with 3 significant digits where those decimals would
    hide it (a speed-up of 0.0015 reads "0.00150", not "0.00"); "-" for None."""
    if v is None:
        return "-"
    if v == 0 or not math.isfinite(v) or abs(v) >= 10 ** (1 - decimals):
        return f"{v:.{decimals}f}"
    return f"{v:.{2 - math.floor(math.log10(abs(v)))}f}"


def progress_line(row: dict) -> str:
    """One line for a row just measured: what ran, its time against the baseline's and the
    ratio, a CPU target's verdict, or why the row was skipped."""
    head = f"{row['suite']} {row['case']} {row.get('ours', '')}".rstrip()
    if "skipped" in row:
        return f"{head}: skipped: {row['skipped']}"
    if "hand_us" in row:   # the ops suite's CPU target rows
        verdict = (f" (target {row['cpu_target']}: {'met' if row['cpu_target_met'] else 'MISSED'})"
                   if "cpu_target" in row else "")
        return (f"{head}: {row['fused_us']:.1f} us against {row['hand_us']:.1f} us {row['baseline']}, "
                f"{_num(row['ratio'], 2)}x{verdict}")
    if "ours_us" not in row:
        return head
    return (f"{head}: {_num(row['ours_us'] / 1e3, 3)} ms against {_num(row.get('baseline_us', 0) / 1e3, 3)} ms "
            f"{row.get('baseline', '-')}, {_num(row.get('speedup'), 2)}x")


def table_lines(rows: list[dict]) -> list[list[str]]:
    """Header + one line per timed row: the columns of the table and the report."""
    head = ["suite", "case", "baseline", "ours", "baseline ms", "ours ms", "speed-up",
            "vs compile", "GB/s or TFLOP/s", "% of ceiling", "proj. h (100 ep)"]
    lines = [head]
    for r in rows:
        if "ours_us" not in r:
            continue
        rate = (f"{_num(r['GBps'], 1)} GB/s" if r.get("GBps") is not None
                else f"{r['model_TFLOPs']:.3g} TFLOP/s" if r.get("model_TFLOPs") is not None else "-")
        pct = "-" if r.get("pct_ceiling") is None else f"{_num(r['pct_ceiling'], 1)}% {r.get('ceiling', '')}"
        lines.append([r["suite"], r["case"], r.get("baseline", "-"), r["ours"],
                      _fmt(r.get("baseline_us") and r["baseline_us"] / 1e3, ".4g"),
                      _fmt(r["ours_us"] / 1e3, ".4g"), _num(r.get("speedup"), 2) + "x",
                      _num(r.get("speedup_vs_compile"), 2) + ("x" if r.get("speedup_vs_compile") else ""),
                      rate, pct, _fmt(r.get("projected_hours"), ".2f")])
    return lines


def target_lines(rows: list[dict]) -> list[str]:
    """A summary of the rows' ``targets`` (the ops suite's GPU targets): how many rows meet
    every one, then each miss with its figure; nothing when no row carries targets."""
    judged = [r for r in rows if r.get("targets")]
    if not judged:
        return []
    met = sum(all(t["met"] for t in r["targets"]) for r in judged)
    out = [f"targets: {met} of {len(judged)} GPU rows meet every target of the fused ops"]
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


def _reading_notes(rows: list[dict]) -> list[str]:
    """How to read the ops rows: what the torch backend is, and on the CPU what their % is of."""
    ops_rows = [r for r in rows if r.get("suite") == "ops" and "ours_us" in r]
    out = []
    if any(r["ours"] == "ebjdat[torch]" for r in ops_rows):
        out.append("note: ebjdat[torch] is the ops' specification (their math in torch, the noise drawn on the "
                   "host): the reference the other backends are tested against, not a fast path")
    if any(r.get("ceiling") == "copy of same bytes" for r in ops_rows):
        out.append("note: on the CPU an ops row's % is of a torch copy moving the same bytes, measured in this "
                   "run: a small working set stays in the caches and outruns the memory-sized copy of the "
                   "ceilings")
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
    text += _reading_notes(result["rows"])
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
                       description=DESCRIPTION)
    p.add_argument("suite", nargs="*", default=["all"], choices=(*SUITES, "all"),
                   help="suites to run (default: all)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when a GPU is "
                   "visible, else cpu)")
    p.add_argument("--quick", action="store_true", help="small sizes: the digits model and small tensors, "
                   "a few minutes on a CPU")
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
