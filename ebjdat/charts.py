"""Charts a run shows a person, drawn with matplotlib: energy and score histograms, the
reliability diagram, scatter plots with error bars and accuracy curves.

Every chart has a title, axis labels and a legend built from the very artists drawn
(so an entry's colour and line style are those of its marks). Each ``*_figure``
function returns the ``matplotlib.figure.Figure`` (tests and callers can inspect it);
each ``save_*`` function writes it in the format the suffix of its path names
(``ebjdat.plots.FORMATS``), through Pillow, as the sample grids are written.

Figures are made with ``Figure`` and the Agg canvas directly, never through pyplot: no
global backend or figure registry is touched, so a program importing ebjdat keeps its
own matplotlib settings and no figure is left open.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from . import validate
from .plots import image_format, save_image

DPI = 100           # pixels per inch: a figure of size (w, h) px is (w / DPI, h / DPI) inches
NOTE_PX = 18        # each line of notes adds this many pixels under the chart
FONT_PX = 9         # the mean width of a title character (11 pt at 100 dpi), for wrapping
# matplotlib's tab10: distinct, colour-blind friendly enough, familiar to readers
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
# reliability diagram: the gap is opaque so it shows in its legend colour even where it lies
# inside an accuracy bar (an under-confident bin); a translucent red over blue reads as purple
ACC_COLOUR, ACC_EDGE, GAP_COLOUR, GAP_EDGE = "#6fa8dc", "#1f4e79", "#f4a3a3", "#d62728"
IDEAL_COLOUR, COUNT_COLOUR = "#3c3c3c", "#7f7f7f"


# -- figures and files ---------------------------------------------------------------

def plain(text) -> str:
    """``text`` with "$" escaped: run names and labels are shown as written, never parsed
    as matplotlib math."""
    return str(text).replace("$", r"\$")


def wrapped(text, width_px: int) -> str:
    """``text`` broken into lines that fit ``width_px`` pixels (a long title wraps rather
    than running off the figure)."""
    return "\n".join(textwrap.wrap(plain(text), max(20, width_px // FONT_PX))) if text else ""


def new_figure(size: tuple[int, int], n_notes: int = 0) -> Figure:
    """A figure of ``size`` (width, height) pixels plus ``NOTE_PX`` per line of notes, on
    an Agg canvas of its own, laid out by matplotlib's constrained layout in the part
    above the notes."""
    width = validate.integer("size[0]", size[0], minimum=200)
    height = validate.integer("size[1]", size[1], minimum=150)
    total = height + NOTE_PX * n_notes
    fig = Figure(figsize=(width / DPI, total / DPI), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(rect=(0, NOTE_PX * n_notes / total, 1, height / total))
    FigureCanvasAgg(fig)
    return fig


def add_notes(fig: Figure, notes) -> None:
    """Lines of text in the strip ``new_figure`` left under the chart, one per ``NOTE_PX``."""
    total = fig.get_figheight() * DPI
    for i, note in enumerate(notes):
        fig.text(0.02, (NOTE_PX * (len(notes) - i) - NOTE_PX / 2) / total, plain(note), va="center", fontsize=9)


def render(fig: Figure) -> Image.Image:
    """The figure drawn to an RGB Pillow image of its size in pixels."""
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")


def save_figure(fig: Figure, path, fmt: str | None = None) -> Path:
    """Write ``fig`` to ``path`` in the format its suffix names; returns the path."""
    return save_image(render(fig), path, fmt or image_format(path))


# -- histograms ----------------------------------------------------------------------

def finite_series(series: dict) -> list[tuple[str, np.ndarray, int]]:
    """[(name, its finite values as a flat float64 array, how many non-finite were dropped)]."""
    if not isinstance(series, dict):
        raise TypeError(f"series must be a dict name -> values, got {type(series).__name__}")
    data = []
    for name, v in series.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().to("cpu", torch.float64).reshape(-1).numpy()
        else:
            v = np.asarray(v, dtype=np.float64).reshape(-1)
        finite = np.isfinite(v)
        data.append((str(name), v[finite], int((~finite).sum())))
    return data


def value_range(data: list) -> tuple[float, float]:
    """(lo, hi): the common bin range of every finite value; (0, 1) without any, a unit
    range around a single value."""
    allv = [v for _, v, _ in data if v.size]
    lo, hi = (min(float(v.min()) for v in allv), max(float(v.max()) for v in allv)) if allv else (0.0, 1.0)
    if hi - lo < 1e-12 * max(1.0, abs(lo)):
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _series_label(name: str, v: np.ndarray, dropped: int) -> str:
    """A series' legend text: its mean and count, or why it is not drawn."""
    if v.size:
        m = float(v.mean())
        text = f"{name}: mean {m:.4g}, n={v.size}" if abs(m) < 1e5 else f"{name}: mean {m:.3e}, n={v.size}"
    else:
        text = f"{name}: no finite values" if dropped else f"{name}: empty"
    return text + (f", {dropped} non-finite dropped" if dropped else "")


def draw_histograms(ax, series: dict, *, bins: int, xlabel: str, title: str, width_px: int) -> None:
    """Each series on ``ax`` as fractions of its finite values (series of different sizes
    compare) in common bins: a translucent fill with a solid outline in its colour, one
    legend entry per series with its mean and count. Series without finite values are
    named in a note on the axes instead (they have no marks to match a legend entry)."""
    bins = validate.integer("bins", bins)
    data = finite_series(series)
    edges = np.linspace(*value_range(data), bins + 1)
    missing = []
    for k, (name, v, dropped) in enumerate(data):
        label = plain(_series_label(name, v, dropped))
        if not v.size:
            missing.append(label)
            continue
        colour = PALETTE[k % len(PALETTE)]
        ax.hist(v, bins=edges, weights=np.full(v.size, 1.0 / v.size), histtype="stepfilled",
                facecolor=to_rgba(colour, 0.25), edgecolor=colour, linewidth=1.6, label=label)
    if missing:
        ax.text(0.01, 0.98, "not drawn: " + "; ".join(missing), transform=ax.transAxes, va="top", fontsize=8)
    if len(missing) < len(data):
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(plain(xlabel))
    ax.set_ylabel("fraction of the series")
    ax.set_title(wrapped(title or "histogram", width_px), fontsize=11)
    ax.grid(alpha=0.3)


def histogram_figure(series: dict, *, bins: int = 60, title: str = "", xlabel: str = "energy",
                     size: tuple[int, int] = (640, 420), notes=()) -> Figure:
    """The figure ``save_histograms`` writes (see there)."""
    notes = [str(n) for n in notes]
    fig = new_figure(size, len(notes))
    draw_histograms(fig.add_subplot(), series, bins=bins, xlabel=xlabel, title=title, width_px=size[0])
    add_notes(fig, notes)
    return fig


def save_histograms(path, series: dict, *, bins: int = 60, title: str = "", xlabel: str = "energy",
                    size: tuple[int, int] = (640, 420), notes=()) -> Path:
    """Overlapping histograms of each series (e.g. ``{"data": E(x), "samples": E(x_q)}``)
    in its own colour, on one common bin range, as a picture of ``size`` pixels (plus
    ``NOTE_PX`` per line of ``notes``, written under the chart) in the format the suffix
    of ``path`` names. Non-finite values are dropped and counted in the legend. Returns
    the path."""
    fmt = image_format(path)
    return save_figure(histogram_figure(series, bins=bins, title=title, xlabel=xlabel, size=size, notes=notes),
                       path, fmt)


def histogram_panels_figure(panels: dict, *, bins: int = 40, title: str = "", xlabel: str = "score",
                            panel_size: tuple[int, int] = (640, 300), notes=()) -> Figure:
    """The figure ``save_histogram_panels`` writes (see there)."""
    if not isinstance(panels, dict) or not panels:
        raise ValueError("panels must be a non-empty dict: panel title -> series dict")
    notes = [str(n) for n in notes]
    head = 30 if title else 0
    fig = new_figure((panel_size[0], head + panel_size[1] * len(panels)), len(notes))
    for ax, (name, series) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels.items()):
        draw_histograms(ax, series, bins=bins, xlabel=xlabel, title=str(name), width_px=panel_size[0])
    if title:
        fig.suptitle(wrapped(title, panel_size[0]), fontsize=12)
    add_notes(fig, notes)
    return fig


def save_histogram_panels(path, panels: dict, *, bins: int = 40, title: str = "", xlabel: str = "score",
                          panel_size: tuple[int, int] = (640, 300), notes=()) -> Path:
    """Several histogram charts (as ``save_histograms``) stacked top to bottom in one file:
    ``panels`` maps each panel's title to its series dict (e.g. ``{"log p(x)": {"in":
    s_in, "out": s_out}}``). ``title`` above all panels, ``notes`` (lines of text) below
    them, in the format the suffix of ``path`` names. Returns the path."""
    fmt = image_format(path)
    fig = histogram_panels_figure(panels, bins=bins, title=title, xlabel=xlabel, panel_size=panel_size, notes=notes)
    return save_figure(fig, path, fmt)


# -- reliability diagram -------------------------------------------------------------

def reliability_figure(bins: list, *, title: str = "", size: tuple[int, int] = (600, 640), notes=()) -> Figure:
    """The figure ``save_reliability`` writes (see there). Its first axes hold the
    diagram and its legend, the second the points per bin."""
    if not isinstance(bins, (list, tuple)) or not bins:
        raise ValueError("bins must be a non-empty list of {lo, hi, count, conf, acc} dicts")
    notes = [str(n) for n in notes]
    fig = new_figure((validate.integer("size[0]", size[0], minimum=300),
                      validate.integer("size[1]", size[1], minimum=300)), len(notes))
    ax, counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    full = [b for b in bins if int(b["count"]) > 0]
    left = [float(b["lo"]) for b in full]
    widths = [float(b["hi"]) - float(b["lo"]) for b in full]
    acc, conf = np.array([float(b["acc"]) for b in full]), np.array([float(b["conf"]) for b in full])
    bars = ax.bar(left, acc, width=widths, align="edge", color=ACC_COLOUR, edgecolor=ACC_EDGE, zorder=2)
    gaps = ax.bar(left, np.abs(conf - acc), bottom=np.minimum(acc, conf), width=widths, align="edge",
                  color=GAP_COLOUR, edgecolor=GAP_EDGE, hatch="//", zorder=3)
    # the accuracy bars' outlines again, over the gaps: each bar's top stays visible
    ax.bar(left, acc, width=widths, align="edge", fill=False, edgecolor=ACC_EDGE, zorder=4)
    (ideal,) = ax.plot([0, 1], [0, 1], linestyle="--", color=IDEAL_COLOUR, linewidth=1.5, zorder=5)
    ax.legend([bars, gaps, ideal], ["accuracy of the bin", "gap to the bin's mean confidence",
                                    "perfect calibration"], loc="upper left", fontsize=9)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    ax.set_title(wrapped(title or "reliability diagram", size[0]), fontsize=11)
    ax.grid(alpha=0.3)
    total = sum(int(b["count"]) for b in bins)
    counts.bar(left, [int(b["count"]) for b in full], width=widths, align="edge", color=COUNT_COLOUR)
    counts.set(xlabel="confidence (max softmax probability)", ylabel="points")
    counts.set_title(f"points per bin ({total} in all)", fontsize=9)
    add_notes(fig, notes)
    return fig


def save_reliability(path, bins: list, *, title: str = "", size: tuple[int, int] = (600, 640), notes=()) -> Path:
    """A reliability diagram: for each confidence bin ``{"lo", "hi", "count", "conf",
    "acc"}`` (equal-width bins covering [0, 1]; empty bins have count 0 and no bar) a blue
    bar of the bin's accuracy over [lo, hi] (dark outline), the gap between that accuracy
    and the bin's mean confidence in hatched red (above the bar's top when over-confident,
    below it when under-confident), the diagonal (perfect calibration) dashed, and under
    it each bin's count of points. ``size`` pixels plus ``NOTE_PX`` per line of ``notes``
    (written under the chart), in the format the suffix of ``path`` names. Returns the path."""
    fmt = image_format(path)
    return save_figure(reliability_figure(bins, title=title, size=size, notes=notes), path, fmt)


# -- scatter and curves --------------------------------------------------------------

def _xy_axes(fig: Figure, ax, *, xlabel: str, ylabel: str, title: str, width_px: int, notes) -> Figure:
    """The labels, the (wrapped) title, legend and grid of an x-y chart, and its notes; returns fig."""
    ax.set_xlabel(plain(xlabel))
    ax.set_ylabel(plain(ylabel))
    ax.set_title(wrapped(title or f"{ylabel} against {xlabel}", width_px), fontsize=11)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    add_notes(fig, notes)
    return fig


def scatter_figure(points: dict, *, xlabel: str, ylabel: str, title: str = "", size: tuple[int, int] = (640, 460),
                   notes=()) -> Figure:
    """The figure ``save_scatter`` writes (see there)."""
    if not points:
        raise ValueError("points is empty: nothing to draw")
    notes = [str(n) for n in notes]
    fig = new_figure(size, len(notes))
    ax = fig.add_subplot()
    for k, (name, (x, y, ex, ey)) in enumerate(points.items()):
        colour = PALETTE[k % len(PALETTE)]
        ax.errorbar([x], [y], xerr=[ex], yerr=[ey], fmt="o", color=colour, capsize=3, label=plain(name))
        ax.annotate(plain(name), (x, y), textcoords="offset points", xytext=(6, 6), color=colour, fontsize=9)
    ax.margins(0.15)
    return _xy_axes(fig, ax, xlabel=xlabel, ylabel=ylabel, title=title, width_px=size[0], notes=notes)


def save_scatter(path, points: dict, *, xlabel: str, ylabel: str, title: str = "",
                 size: tuple[int, int] = (640, 460), notes=()) -> Path:
    """One point per entry of ``points`` {name: (x, y, x_err, y_err)} with error bars
    (errors may be 0), named beside it and in the legend, on axes with room around the
    extremes, in the format the suffix of ``path`` names. ``notes``: lines under the
    chart. Returns the path."""
    fmt = image_format(path)
    return save_figure(scatter_figure(points, xlabel=xlabel, ylabel=ylabel, title=title, size=size, notes=notes),
                       path, fmt)


def curves_figure(curves: dict, *, xlabel: str, ylabel: str, title: str = "", size: tuple[int, int] = (640, 420),
                  notes=(), ylim: tuple[float, float] | None = None) -> Figure:
    """The figure ``save_curves`` writes (see there)."""
    if not isinstance(curves, dict) or not any(len(c) for c in curves.values()):
        raise ValueError("curves must be a dict name -> [(x, y), ...] with at least one point")
    notes = [str(n) for n in notes]
    fig = new_figure(size, len(notes))
    ax = fig.add_subplot()
    styles = ["-", "--", "-.", ":"]
    for k, (name, pts) in enumerate(curves.items()):
        if not len(pts):
            continue
        rows = sorted(tuple(float(v) for v in p) for p in pts)
        xs, ys = [r[0] for r in rows], [r[1] for r in rows]
        colour = PALETTE[k % len(PALETTE)]
        ax.plot(xs, ys, marker="o", linestyle=styles[k % len(styles)], color=colour, label=plain(name))
        if all(len(r) == 3 for r in rows):   # (x, y, spread): y - spread to y + spread, shaded
            ax.fill_between(xs, [r[1] - r[2] for r in rows], [r[1] + r[2] for r in rows], color=colour,
                            alpha=0.18, linewidth=0)
    if ylim is not None:
        ax.set_ylim(*ylim)
    return _xy_axes(fig, ax, xlabel=xlabel, ylabel=ylabel, title=title, width_px=size[0], notes=notes)


def save_curves(path, curves: dict, *, xlabel: str, ylabel: str, title: str = "", size: tuple[int, int] = (640, 420),
                notes=(), ylim: tuple[float, float] | None = None) -> Path:
    """One line with point markers per entry of ``curves`` {name: [(x, y), ...]} (e.g.
    accuracy against attack radius), each in its own colour and line style, named in the
    legend, in the format the suffix of ``path`` names. Points given as (x, y, spread)
    shade the band y +- spread in the line's colour (e.g. the standard deviation over
    seeds). Returns the path."""
    fmt = image_format(path)
    return save_figure(curves_figure(curves, xlabel=xlabel, ylabel=ylabel, title=title, size=size, notes=notes,
                                     ylim=ylim), path, fmt)
