"""Turn ``ebjdat bench --json`` results into the README's performance table and a plot.

``python -m ebjdat.bench.report bench/results/*.json --markdown OUT.md --plot OUT.png``

The markdown has, per result file, a line naming where it was measured (device, GPU or
CPU, driver, CUDA, torch, triton, commit, date and the ceilings measured in that run),
the table of ``ebjdat bench`` (cli.table_lines) and, for GPU results, which rows meet the
ops' targets (cli.target_lines). The PNG draws one horizontal bar per
row: its speed-up over the row's baseline on a log2 axis, with a line at 1x. Drawn
with PIL (no matplotlib).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from ..plots import font, text_size
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
    """A PNG bar chart of every timed row's speed-up (log2 axis); returns the path."""
    bars = [(f"{r['suite']}: {r['case']} | {r['ours']} vs {r.get('baseline', '-')}", r["speedup"])
            for res in results for r in res["rows"] if r.get("speedup")]
    if not bars:
        raise ValueError("no timed rows with a speed-up to plot")
    title_font, small = font(13), font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = min(560, max(text_size(probe, b[0], small)[0] for b in bars) + 12)
    bar_h, top, bottom = 18, 40, 40
    height = top + bottom + bar_h * len(bars)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), "ebjdat bench: speed-up over each row's baseline (log scale)", fill="black", font=title_font)
    x0, x1 = label_w, width - 60
    logs = [math.log2(max(s, 1e-3)) for _, s in bars]
    lo, hi = min(0.0, math.floor(min(logs))), max(1.0, math.ceil(max(logs)))
    px = lambda v: x0 + (v - lo) / (hi - lo) * (x1 - x0)
    for k in range(int(lo), int(hi) + 1):
        x = px(k)
        d.line([(x, top - 4), (x, height - bottom)], fill=(225, 225, 225))
        d.text((x - 8, height - bottom + 4), f"{2.0 ** k:.3g}x", fill="black", font=small)
    for i, ((label, s), v) in enumerate(zip(bars, logs)):
        y = top + i * bar_h
        d.text((4, y + 2), label[:95], fill="black", font=small)
        a, b = sorted((px(0), px(v)))
        d.rectangle([a, y + 3, max(b, a + 1), y + bar_h - 3], fill=(60, 120, 200) if s >= 1 else (210, 90, 70))
        d.text((min(max(a, b) + 4, width - 56), y + 2), f"{s:.2f}x", fill="black", font=small)
    d.line([(px(0), top - 4), (px(0), height - bottom)], fill="black", width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


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
