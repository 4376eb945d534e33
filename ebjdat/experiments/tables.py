"""The trade-off's numbers as tables: mean and standard deviation over seeds, the headline
radius, the verdicts and the energy-landscape table beside the paper's figures.

A run's row (``tradeoff.run_one``): objective, seed, clean_acc, gen_fd, gen_cond_acc, the
mean energies energy_clean_mean / energy_gen_mean and energy_gap_gen, and ``curve``: one
entry per radius eps (pixels in [0, 1]) with pgd_acc, autoattack_acc (None without
torchattacks), energy_adv_mean and energy_gap_adv (the PGD-20 points of that radius).
"""
from __future__ import annotations

import statistics

# standard training's AutoAttack accuracy at the headline radius is at most this
HEADLINE_MAX_STANDARD = 0.20
# (key, column): the headline table's columns; accuracies end in _acc
HEADLINE = (("clean_acc", "clean"), ("pgd_acc", "PGD-20"), ("autoattack_acc", "AutoAttack"),
            ("gen_fd", "digits FD (lower is better)"), ("gen_cond_acc", "cond. acc."),
            ("energy_gap_adv", "gap adv - clean"), ("energy_gap_gen", "gap gen - clean"))
LANDSCAPE = (("energy_clean_mean", "E(clean)"), ("energy_adv_mean", "E(adversarial)"),
             ("energy_gen_mean", "E(generated)"), ("energy_gap_adv", "gap adv - clean"),
             ("energy_gap_gen", "gap gen - clean"))
# The paper's energy-landscape figures on CIFAR-10 (arXiv 2505.19459, Table 1), as quoted by
# a summary of the paper (en.papernotes.org, "Your Classifier Can Do More"): the mean
# energy difference between adversarial and clean test points. The table's other cells
# are not quoted there and are left out rather than guessed.
PAPER_GAP_ADV = {"standard": 10.18, "at": 1.46}


def at_radius(row: dict, eps: float) -> dict:
    """The row's numbers with those of radius ``eps`` from its curve (KeyError: not measured)."""
    point = next(p for p in row["curve"] if abs(p["eps"] - eps) < 1e-9)
    return {**{k: v for k, v in row.items() if k != "curve"}, **point}


def mean_std(values: list) -> tuple[float, float, int] | None:
    """(mean, population standard deviation, n) of the values that are not None."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0, len(vals)


def summarise(rows: list[dict], keys) -> dict:
    """{objective: {key: (mean, std, n)}} over the seeds, in the rows' objective order."""
    out = {}
    for obj in dict.fromkeys(r["objective"] for r in rows):
        mine = [r for r in rows if r["objective"] == obj]
        stats = {k: mean_std([r.get(k) for r in mine]) for k in keys}
        out[obj] = {k: v for k, v in stats.items() if v is not None}
    return out


def curves(rows: list[dict], key: str) -> dict:
    """{objective: [(eps, mean, std), ...]} of ``key`` (pgd_acc, autoattack_acc) over the grid."""
    grid = radii(rows)
    out = {}
    for obj in dict.fromkeys(r["objective"] for r in rows):
        pts = []
        for e in grid:
            s = mean_std([at_radius(r, e).get(key) for r in rows if r["objective"] == obj])
            if s is not None:
                pts.append((e, s[0], s[1]))
        out[obj] = pts
    return out


def radii(rows: list[dict]) -> list[float]:
    """The grid: every radius of the rows' curves, increasing."""
    return sorted({p["eps"] for r in rows for p in r["curve"]})


def headline_radius(rows: list[dict], fallback: float | None = None, grid=None) -> tuple[float, str]:
    """The smallest radius of the grid (``grid``, else that of the rows' curves) where
    standard training's mean AutoAttack accuracy (PGD-20 without torchattacks) is at most
    HEADLINE_MAX_STANDARD, and why. Without a standard run: ``fallback`` when the grid
    holds it, else the grid's largest radius; when standard training never falls that low,
    the largest radius; each saying so."""
    grid = sorted(grid) if grid is not None else radii(rows)
    std = [r for r in rows if r["objective"] == "standard"]
    if not std:
        held = [e for e in grid if fallback is not None and abs(e - fallback) < 1e-9]
        return (held[0], "no standard run: the digits' budget") if held else (
            grid[-1], "no standard run: the grid's largest radius")
    key = "autoattack_acc" if all(p["autoattack_acc"] is not None for r in std for p in r["curve"]) else "pgd_acc"
    name = "AutoAttack" if key == "autoattack_acc" else "PGD-20"
    for e in grid:
        m = mean_std([at_radius(r, e)[key] for r in std])[0]
        if m <= HEADLINE_MAX_STANDARD:
            return e, (f"the smallest radius of the grid where standard training's {name} accuracy "
                       f"({100 * m:.1f} %) is at most {100 * HEADLINE_MAX_STANDARD:.0f} %")
    return grid[-1], (f"standard training's {name} accuracy stays above {100 * HEADLINE_MAX_STANDARD:.0f} % on "
                      f"the whole grid: the largest radius")


def fmt_eps(e: float) -> str:
    """32/255 for whole 255ths, else 3 decimals."""
    k = e * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{e:.3f}"


def cell(key: str, s) -> str:
    if s is None:
        return "-"
    if key.endswith("_acc"):
        return f"{100 * s[0]:.1f} ± {100 * s[1]:.1f}"
    return f"{s[0]:.2f} ± {s[1]:.2f}"


def table(summary: dict, columns) -> list[str]:
    """Markdown rows: one per objective, the columns that any objective has."""
    cols = [(k, name) for k, name in columns if any(k in m for m in summary.values())]
    lines = ["| objective | " + " | ".join(name for _, name in cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {obj} | " + " | ".join(cell(k, m.get(k)) for k, _ in cols) + " |" for obj, m in summary.items()]
    return lines


def overlap(a, b) -> bool:
    """Whether mean +- std of a and of b overlap (the seeds cannot tell them apart)."""
    return abs(a[0] - b[0]) <= a[1] + b[1]


def verdicts(summary: dict) -> list[str]:
    """EB-JDAT against AT on robustness and against JEM on FD, in words."""
    e = summary.get("ebjdat", {})
    out = []
    for other, key, what, higher in (("at", "autoattack_acc", "AutoAttack accuracy", True),
                                     ("at", "pgd_acc", "PGD-20 accuracy", True),
                                     ("jem", "gen_fd", "digits FD", False)):
        o = summary.get(other, {})
        if key not in e or key not in o:
            continue
        a, b = e[key], o[key]
        scale, unit = (100, " points") if key.endswith("_acc") else (1, "")
        if overlap(a, b):
            word = "within"
        else:
            better = (a[0] > b[0]) == higher
            word = "outside (better than)" if better else "outside (worse than)"
        out.append(f"- EB-JDAT's {what} is **{word}** the seeds' spread of {other.upper()}'s: "
                   f"{scale * a[0]:.2f} ± {scale * a[1]:.2f} against {scale * b[0]:.2f} ± {scale * b[1]:.2f} "
                   f"(difference {scale * (a[0] - b[0]):+.2f}{unit}).")
    return out


def markdown(rows: list[dict], eps: float, why: str, seeds: list[int]) -> str:
    """tradeoff.md: the headline table, the verdicts, the energy landscape beside the paper's
    figures, the curves as a table."""
    at = [at_radius(r, eps) for r in rows]
    head = summarise(at, [k for k, _ in HEADLINE])
    land = summarise(at, [k for k, _ in LANDSCAPE])
    n = rows[0].get("n_test", "?")
    lines = [f"## Headline: linf eps {fmt_eps(eps)} in [0, 1] pixels", "",
             f"{why[0].upper()}{why[1:]}.", ""]
    trained = sorted({r["train_eps"] for r in rows if r.get("train_eps")})
    if trained:
        lines[-2] += f" AT and EB-JDAT train with attacks of radius {', '.join(map(fmt_eps, trained))} (pixels)."
    lines += table(head, HEADLINE)
    lines += ["", (f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))}; accuracies in % on the "
                   f"{n} test digits; PGD-20 and AutoAttack (standard) at {fmt_eps(eps)}; energy gaps in "
                   f"E = -logsumexp logits, the adversarial points being PGD-20's."), ""]
    if any(abs(t - eps) > 1e-9 for t in trained):
        lines += [(f"**The headline radius differs from the training budget ({', '.join(map(fmt_eps, trained))})**: "
                   f"AT is not evaluated at the budget it trained at."), ""]
    lines += ["Within the seeds' spread means that mean ± standard deviation of the two overlap.", ""]
    lines += verdicts(head) + [""]
    lines += [f"## Energy landscape at {fmt_eps(eps)}", ""] + table(land, LANDSCAPE)
    paper = ", ".join(f"{o} {v}" for o, v in PAPER_GAP_ADV.items())
    lines += ["", (f"The paper's figures (CIFAR-10, WRN-28-10, 8/255): mean energy of adversarial minus clean "
                   f"points, {paper} (the paper's Table 1 as quoted by a summary of the paper; its other cells "
                   f"are not quoted here)."), ""]
    grid = radii(rows)
    lines += ["## Robustness curves", "", "| objective | attack | " + " | ".join(map(fmt_eps, grid)) + " |",
              "|---|---|" + "---:|" * len(grid)]
    for key, name in (("pgd_acc", "PGD-20"), ("autoattack_acc", "AutoAttack")):
        for obj, pts in curves(rows, key).items():
            if pts:
                lines.append(f"| {obj} | {name} | " + " | ".join(f"{100 * m:.1f} ± {100 * s:.1f}" for _, m, s in pts)
                             + " |")
    return "\n".join(lines) + "\n"
