"""Turn ``ebjdat bench --json`` results into a markdown table (docs/performance.md's) and a plot.

``python -m ebjdat.bench.report bench/results/*.json --markdown OUT.md --plot OUT.png``

The markdown has, per result file, a line naming where it was measured (device, GPU or
CPU, driver, CUDA, torch, triton, commit, date and the ceilings measured in that run),
the table of ``ebjdat bench`` (cli.table_lines) and, for GPU results, which rows meet the
ops' targets (cli.target_lines). The PNG draws one horizontal bar per
row: its speed-up over the row's baseline on a log2 axis, with a line at 1x, drawn
with matplotlib (ebjdat.charts).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import recipe_lines, table_lines, target_lines


def load(paths) -> list[dict]:
    """The result dicts of these JSON files (each needs "environment" and "rows")."""
    out = []
    for p in paths:
        data = json.loads(Path(p).read_text())
        if not isinstance(data, dict) or "environment" not in data or "rows" not in data:
            raise ValueError(f"{p}: not an ebjdat bench result (needs 'environment' and 'rows')")
        data.setdefault("source", str(p))
        out.append(data)
    return out


def _where(res: dict) -> str:
    env, ceil = res["environment"], res.get("ceilings") or {}
    parts = [f"**{env.get('gpu') or env.get('cpu') or res.get('device', '?')}**"]
    parts += [f"{k} {env[k]}" for k in ("driver", "cuda", "torch", "triton") if env.get(k)]
    parts.append(f"commit `{str(env.get('commit', 'unknown'))[:8]}`")
    if env.get("date"):
        parts.append(env["date"])
    if ceil:
        parts.append(f"ceilings: copy {ceil['copy_GBps']:.1f} GB/s, {ceil.get('matmul_dtype', '')} "
                     f"matmul {ceil['matmul_TFLOPs']:.3g} TFLOP/s")
    if res.get("quick"):
        parts.append("`--quick` sizes")
    return ", ".join(parts)


def markdown(results: list[dict]) -> str:
    """The performance table(s) in GitHub markdown."""
    text = []
    for res in results:
        text.append(f"Measured on {_where(res)}.\n")
        lines = table_lines(res["rows"])
        text.append("| " + " | ".join(lines[0]) + " |")
        text.append("|" + "|".join("---" if i < 4 else "---:" for i in range(len(lines[0]))) + "|")
        text += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in lines[1:]]
        text.append("")
        if recipe := recipe_lines(res["rows"]):
            text += [f"- {line}" for line in recipe] + [""]
        if targets := target_lines(res["rows"]):
            text += [f"- {line}" for line in targets] + [""]
    return "\n".join(text)


def plot(results: list[dict], path, width: int = 1000) -> Path:
    """A bar chart of every timed row's speed-up over its baseline, one horizontal bar
    per row on a log2 axis: blue where ours is faster, red where slower, a dashed line at
    1x, each bar's value at its end; ``width`` pixels wide, 20 pixels per row, in the
    format the suffix of ``path`` names. Returns the path."""
    from matplotlib.ticker import FuncFormatter

    from ..charts import new_figure, save_figure
    from ..plots import image_format
    fmt = image_format(path)
    bars = [(f"{r['suite']}: {r['case']} | {r['ours']} vs {r.get('baseline', '-')}"[:95], r["speedup"])
            for res in results for r in res["rows"] if r.get("speedup")]
    if not bars:
        raise ValueError("no timed rows with a speed-up to plot")
    fig = new_figure((width, 130 + 20 * len(bars)))   # axes, title and legend, plus the rows
    ax = fig.add_subplot()
    rows = list(range(len(bars)))[::-1]          # the first row on top, as in the table
    for faster, colour, label in ((True, "#3c78c8", "faster than the baseline"),
                                  (False, "#d25a46", "slower than the baseline")):
        mine = [(i, s) for i, (_, s) in zip(rows, bars) if (s >= 1) == faster]
        if mine:   # one bar call per side: its legend entry has the colour of its bars
            ax.barh([i for i, _ in mine], [abs(s - 1) for _, s in mine], left=[min(s, 1.0) for _, s in mine],
                    color=colour, label=label, height=0.7)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1.2, label="1x: as fast as the baseline")
    for i, (_, s) in zip(rows, bars):
        ax.annotate(f"{s:.2f}x", (s, i), xytext=(4 if s >= 1 else -4, 0), textcoords="offset points", va="center",
                    ha="left" if s >= 1 else "right", fontsize=8)   # at the bar's far end from 1x
    ax.set_xscale("log", base=2)
    speeds = [s for _, s in bars]
    ax.set_xlim(min(0.5, min(speeds) / 1.5), max(2.0, max(speeds) * 1.5))   # room for the values
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_yticks(rows, [label for label, _ in bars], fontsize=8)
    ax.set_xlabel("speed-up over the row's baseline (log2 scale)")
    ax.set_title("ebjdat bench: speed-up over each row's baseline", fontsize=11)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, fmt)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ebjdat.bench.report", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="JSON files written by ebjdat bench --json")
    p.add_argument("--markdown", metavar="OUT.md", help="write the table here (default: print it)")
    p.add_argument("--plot", metavar="OUT.png", help="write the speed-up bar plot here")
    args = p.parse_args(argv)
    try:
        results = load(args.results)
        md = markdown(results)
        if args.markdown:
            Path(args.markdown).write_text(md)
        else:
            print(md)
        if args.plot:
            plot(results, args.plot)
    except (OSError, ValueError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
