"""Pictures a run shows a person: sample grids and energy histograms, as image files in
the format their suffix names (.png, .jpg, ...), and the checks of output paths that
every command runs before its work starts.

Drawn with Pillow alone (no matplotlib): small, readable figures for training logs,
``ebjdat sample`` and evaluation reports.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, features

from . import validate

NAN_COLOUR = (255, 0, 255)  # magenta: no image in [-1, 1] maps to it by accident in grey
PAD_COLOUR = (80, 80, 80)  # visible against both black digit backgrounds and white
MIN_GRID_WIDTH = 256  # small images (8x8 digits) are enlarged to at least this

# matplotlib's tab10: distinct, colour-blind friendly enough, familiar to readers
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


# suffix -> Pillow format; each writes the RGB pictures drawn here as they are
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".webp": "WEBP"}
SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}


# -- output paths --------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    """path itself, or its nearest ancestor that exists (the folder that will hold it)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path, *, name: str = "path", folder: bool = False, overwrite: bool = True,
                 force_flag: str | None = None) -> Path:
    """Raise ValueError (naming ``name``) unless ``path`` can be written: a file (or, with
    ``folder``, a folder) that exists and is writable, or one that can be created (its
    nearest existing ancestor is a writable folder; missing parents are created on
    writing). ``overwrite=False`` also refuses an existing file (the message names
    ``force_flag``, the flag that allows it, when there is one). Writes nothing."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise ValueError(f"{name} {path} is a file, not a folder; pass a folder for the output files")
        if not folder and path.is_dir():
            raise ValueError(f"{name} {path} is a folder; pass a file name")
        if not folder and not overwrite:
            how = f"remove it, pass another name or add {force_flag} to replace it" if force_flag else \
                "remove it or pass another name (no command overwrites the files of another run)"
            raise ValueError(f"{name} {path} exists; {how}")
        if not os.access(path, os.W_OK):
            raise ValueError(f"{name} {path} is not writable; pass a path you can write")
        return path
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise ValueError(f"{name} {path} cannot be created: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path} cannot be created: the folder {base} is not writable; "
                         f"pass a path you can write")
    return path


def image_format(path, *, name: str = "path") -> str:
    """The Pillow format that ``path``'s suffix names ("PNG" for .png, "JPEG" for .jpg, ...);
    ValueError naming ``name`` for a missing or unknown suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        what = f"suffix {suffix!r}" if suffix else "no suffix"
        raise ValueError(f"{name} {path} has {what}; name the image format with one of {known} "
                         f"(e.g. samples.png)")
    fmt = FORMATS[suffix]
    if fmt == "WEBP" and not features.check("webp"):
        raise ValueError(f"{name} {path}: this Pillow cannot write WebP; use .png")
    return fmt


def check_image_path(path, *, name: str = "path", overwrite: bool = True, force_flag: str | None = None) -> str:
    """``check_output`` for a picture, plus its format from the suffix (returned)."""
    fmt = image_format(path, name=name)
    check_output(path, name=name, overwrite=overwrite, force_flag=force_flag)
    return fmt


def _save(img: Image.Image, path, fmt: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **SAVE_OPTIONS.get(fmt, {}))
    return path


def save_grid(path, x: torch.Tensor, nrow: int | None = None, pad: int = 1) -> Path:
    """Save images ``x`` (B, C, H, W), C = 1 or 3, values in [-1, 1], as one grid picture.

    Pixel value ``round((v + 1) * 127.5)`` clamped to 0..255 (-1 -> 0, 1 -> 255); NaN
    pixels are magenta. ``nrow`` images per row (default ``ceil(sqrt(B))``), ``pad``
    pixels of grey between and around them. Images are enlarged by an integer factor
    (nearest neighbour, no blur) until the grid is at least 256 px wide. An RGB picture
    in the format the suffix of ``path`` names (``FORMATS``: .png, .jpg, ...; others
    raise ValueError before anything is drawn); missing folders are created. Returns the path.
    """
    fmt = image_format(path)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.dim() == 3:  # one image
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (B, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor with values in [-1, 1], got {x.dtype}")
    b, c, h, w = x.shape
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"x holds no pixels (shape {tuple(x.shape)}); nothing to draw")
    ncol = math.ceil(math.sqrt(b)) if nrow is None else validate.integer("nrow", nrow)
    ncol = min(ncol, b)
    nrows = math.ceil(b / ncol)
    pad = validate.integer("pad", pad, minimum=0)
    scale = max(1, math.ceil(MIN_GRID_WIDTH / (ncol * w)))

    x = x.detach().to("cpu", torch.float32)
    nan = torch.isnan(x).any(dim=1)  # (B, H, W): any channel NaN marks the pixel
    x = x.expand(b, 3, h, w) if c == 1 else x
    img = ((x.nan_to_num(0.0) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    img = img.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)
    img[nan] = torch.tensor(NAN_COLOUR, dtype=torch.uint8)
    if scale > 1:
        img = img.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    th, tw = h * scale, w * scale
    grid = torch.tensor(PAD_COLOUR, dtype=torch.uint8).expand(
        nrows * (th + pad) + pad, ncol * (tw + pad) + pad, 3).clone()
    for i in range(b):
        r, q = divmod(i, ncol)
        y0, x0 = pad + r * (th + pad), pad + q * (tw + pad)
        grid[y0:y0 + th, x0:x0 + tw] = img[i]
    return _save(Image.fromarray(grid.numpy(), "RGB"), path, fmt)


def save_class_grid(path, x: torch.Tensor, y: torch.Tensor, n_classes: int, *, per_class: int = 10,
                    title: str = "", cell: int = 32, row_labels=None, max_rows: int = 20) -> Path:
    """Images x (B, C, H, W) in [-1, 1] sorted into one labelled row per class y (B,):
    the first ``per_class`` of each class, left to right (a short row stays grey), each
    enlarged to about ``cell`` pixels (nearest neighbour), a title above. ``row_labels``:
    the rows' names (default the class numbers). Only the first ``max_rows`` classes get a
    row (200 or 1,000 rows would make a picture nobody can read); the title says so.
    Returns the path."""
    fmt = image_format(path)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be a (B, C, H, W) tensor with C = 1 or 3, got {getattr(x, 'shape', x)!r}")
    n_classes, per_class = validate.integer("n_classes", n_classes), validate.integer("per_class", per_class)
    if n_classes > validate.integer("max_rows", max_rows):
        title = (title + "; " if title else "") + f"classes 0-{max_rows - 1} of {n_classes}"
        n_classes = max_rows
    b, c, h, w = x.shape
    scale = max(1, round(cell / max(h, w)))
    labels = [str(k) for k in range(n_classes)] if row_labels is None else [str(r) for r in row_labels]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(text_size(measure, t, font(14))[0] for t in labels) + 14
    th, tw, pad, top = h * scale, w * scale, 2, 28 if title else 4
    x = ((x.detach().float().cpu().nan_to_num(0.0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    x = x.expand(b, 3, h, w) if c == 1 else x
    cells = x.permute(0, 2, 3, 1).repeat_interleave(scale, 1).repeat_interleave(scale, 2).numpy()
    width = label_w + per_class * (tw + pad) + pad
    if title:
        width = max(width, text_size(measure, title, font(13))[0] + 12)
    img = Image.new("RGB", (width, top + n_classes * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    ys = y.detach().cpu().long()
    for k in range(n_classes):
        y0 = top + pad + k * (th + pad)
        label = labels[k]
        lw, lh = text_size(draw, label, font(14))
        draw.text((label_w - 8 - lw, y0 + th / 2 - lh / 2 - 2), label, fill=(0, 0, 0), font=font(14))
        mine = (ys == k).nonzero().flatten()[:per_class].tolist()
        for j in range(per_class):
            x0 = label_w + pad + j * (tw + pad)
            if j < len(mine):
                img.paste(Image.fromarray(cells[mine[j]], "RGB"), (x0, y0))
            else:
                draw.rectangle([x0, y0, x0 + tw - 1, y0 + th - 1], fill=PAD_COLOUR)
    if title:
        draw.text((6, 6), title, fill=(0, 0, 0), font=font(13))
    return _save(img, path, fmt)


# -- histograms ----------------------------------------------------------------------

def font(size: int):
    try:  # Pillow >= 10.1: the bundled scalable font
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, target: int = 6) -> tuple[list[float], float]:
    """Round tick values (1, 2, 2.5 or 5 x 10^k apart) covering [lo, hi]."""
    span = hi - lo
    raw = span / max(target - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    n = math.floor((hi - first) / step + 1e-9) + 1
    return [first + i * step for i in range(n)], step


def _fmt(v: float, step: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or step < 1e-4:
        return f"{v:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10 ** decimals % 1 > 1e-6:  # steps like 2.5 x 10^k need one digit more
        decimals += 1
    return f"{v:.{decimals}f}"


def text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    return r - l, b - t


def save_histograms(path, series: dict, *, bins: int = 60, title: str = "", xlabel: str = "energy",
                    size: tuple[int, int] = (640, 420), notes=()) -> Path:
    """Overlapping histograms of each series (e.g. ``{"data": E(x), "samples": E(x_q)}``)
    in its own colour, on one common bin range, as a picture of ``size`` pixels in the
    format the suffix of ``path`` names (as ``save_grid``).

    Each series is normalised to fractions of its finite values (series of different
    lengths compare), drawn as translucent bars with a solid step outline. Non-finite
    values are dropped and counted in the legend, which names each series with its mean
    and count. Empty or all-NaN series are listed but not drawn. ``notes``: lines of text
    under the axis (the picture grows to hold them). Returns the path.
    """
    fmt = image_format(path)
    return _save(histogram_image(series, bins=bins, title=title, xlabel=xlabel, size=size, notes=notes), path, fmt)


def histogram_image(series: dict, *, bins: int = 60, title: str = "", xlabel: str = "energy",
                    size: tuple[int, int] = (640, 420), notes=()) -> Image.Image:
    """The RGB picture ``save_histograms`` writes (see there), as a Pillow image of
    ``size`` pixels plus 18 rows per note. Drawn back to front: grid and ticks, bars,
    outlines, axes and labels, then the legend over everything."""
    if not isinstance(series, dict):
        raise TypeError(f"series must be a dict name -> values, got {type(series).__name__}")
    bins = validate.integer("bins", bins)
    width = validate.integer("size[0]", size[0], minimum=200)
    height = validate.integer("size[1]", size[1], minimum=150)
    data = _finite_series(series)
    lo, hi = _value_range(data)
    fracs = [np.histogram(v, bins=bins, range=(lo, hi))[0] / v.size if v.size else None for _, v, _ in data]
    notes = [str(n) for n in notes]
    img = Image.new("RGBA", (width, height + 18 * len(notes)), (255, 255, 255, 255))
    left, right, top, bottom = 58, width - 16, 34 if title else 16, height - 48
    legend = _Legend.measure(ImageDraw.Draw(img), _legend_lines(data), plot_width=right - left)
    ymax, legend_x = _place_legend(fracs, legend, bins=bins, left=left, right=right, plot_height=bottom - top)
    plot = _Plot(left, right, top, bottom, lo, hi, ymax)
    edges = np.linspace(lo, hi, bins + 1)
    _draw_grid(ImageDraw.Draw(img), plot)
    _draw_bars(img, plot, fracs, edges)
    _draw_outlines(ImageDraw.Draw(img), plot, fracs, edges)
    _draw_labels(ImageDraw.Draw(img), plot, title=title, xlabel=xlabel, notes=notes, size=(width, height))
    legend.draw(img, legend_x, top + 6)
    return img.convert("RGB")


def _finite_series(series: dict) -> list[tuple[str, np.ndarray, int]]:
    """[(name, its finite values as a flat float64 array, how many non-finite were dropped)]."""
    data = []
    for name, v in series.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().to("cpu", torch.float64).reshape(-1).numpy()
        else:
            v = np.asarray(v, dtype=np.float64).reshape(-1)
        finite = np.isfinite(v)
        data.append((str(name), v[finite], int((~finite).sum())))
    return data


def _value_range(data: list) -> tuple[float, float]:
    """(lo, hi): the common bin range of every finite value; (0, 1) without any."""
    allv = [v for _, v, _ in data if v.size]
    if allv:
        lo, hi = min(float(v.min()) for v in allv), max(float(v.max()) for v in allv)
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12 * max(1.0, abs(lo)):  # one value: a unit-wide range around it
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _legend_lines(data: list) -> list[tuple[str, tuple]]:
    """One (text, colour) per series: its mean and count, or why it is not drawn."""
    lines = []
    for k, (name, v, dropped) in enumerate(data):
        if v.size:
            text = f"{name}: mean {_fmt_mean(v)}, n={v.size}"
        else:
            text = f"{name}: empty" if not dropped else f"{name}: no finite values"
        if dropped:
            text += f", {dropped} non-finite dropped"
        lines.append((text, PALETTE[k % len(PALETTE)]))
    return lines or [("no series", (127, 127, 127))]


class _Legend:
    """The legend box: ``lines`` of (text, colour), each ``line_height`` pixels, in a box
    ``width`` x ``height`` pixels."""

    def __init__(self, lines: list, width: int, line_height: int, height: int):
        self.lines, self.width, self.line_height, self.height = lines, width, line_height, height

    @classmethod
    def measure(cls, draw: ImageDraw.ImageDraw, lines: list, *, plot_width: int) -> _Legend:
        regular = font(13)
        lh = text_size(draw, "Ag", regular)[1] + 6
        lw = min(max(text_size(draw, t, regular)[0] for t, _ in lines) + 34, plot_width - 16)
        return cls(lines, lw, lh, lh * len(lines) + 6)

    def draw(self, img: Image.Image, lx: float, ly: float) -> None:
        """The translucent box at (lx, ly), then a colour swatch and the text per line."""
        box = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ImageDraw.Draw(box).rectangle([lx, ly, lx + self.width, ly + self.height], fill=(255, 255, 255, 215),
                                      outline=(200, 200, 200, 255))
        img.alpha_composite(box)
        draw, regular, lh = ImageDraw.Draw(img), font(13), self.line_height
        for i, (text, colour) in enumerate(self.lines):
            y = ly + 6 + i * lh
            draw.rectangle([lx + 8, y + 2, lx + 20, y + lh - 6], fill=colour)
            draw.text((lx + 26, y), text, fill=(20, 20, 20), font=regular)


def _place_legend(fracs: list, legend: _Legend, *, bins: int, left: int, right: int,
                  plot_height: int) -> tuple[float, float]:
    """(ymax, lx): the top of the fraction axis and the legend's left edge, for ``fracs``
    (per series its (bins,) fractions, None for a series without finite values). The
    legend sits at the top left or top right, whichever needs less headroom above the bars
    it covers (bars never hide under it); the right on a tie."""
    pw, lw = right - left, legend.width
    peak = max([float(f.max()) for f in fracs if f is not None] + [0.0])
    free = max(0.2, 1.0 - (legend.height + 14) / plot_height)  # fraction of the plot height below the legend
    best = None
    for lx in (right - 8 - lw, left + 8):  # right first: preferred on a tie
        i0 = max(0, int((lx - left) / pw * bins))
        i1 = min(bins, math.ceil((lx + lw - left) / pw * bins))
        covered = max([float(f[i0:i1].max()) for f in fracs if f is not None and i1 > i0] + [0.0])
        need = max(peak * 1.08, covered / free)
        if best is None or need < best[0] - 1e-12:
            best = (need, lx)
    ymax, lx = best
    return (ymax if ymax > 0 else 1.0), lx


class _Plot:
    """The plot area (pixel edges left, right, top, bottom) and its axes: values lo..hi
    across, fractions 0..ymax up."""

    def __init__(self, left: int, right: int, top: int, bottom: int, lo: float, hi: float, ymax: float):
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.lo, self.hi, self.ymax = lo, hi, ymax

    def px(self, v: float) -> float:
        return self.left + (v - self.lo) / (self.hi - self.lo) * (self.right - self.left)

    def py(self, f: float) -> float:
        return self.bottom - f / self.ymax * (self.bottom - self.top)


def _draw_grid(draw: ImageDraw.ImageDraw, plot: _Plot) -> None:
    """Grid lines with their tick labels: fractions on the left, values below."""
    small = font(11)
    yticks, ystep = _nice_ticks(0.0, plot.ymax, 5)
    for t in yticks:
        y = plot.py(t)
        draw.line([(plot.left, y), (plot.right, y)], fill=(232, 232, 232))
        label = _fmt(t, ystep)
        tw, th = text_size(draw, label, small)
        draw.text((plot.left - 6 - tw, y - th / 2 - 2), label, fill=(60, 60, 60), font=small)
    xticks, xstep = _nice_ticks(plot.lo, plot.hi, 7)
    for t in xticks:
        x = plot.px(t)
        draw.line([(x, plot.top), (x, plot.bottom)], fill=(240, 240, 240))
        draw.line([(x, plot.bottom), (x, plot.bottom + 5)], fill=(60, 60, 60))
        label = _fmt(t, xstep)
        tw, _ = text_size(draw, label, small)
        draw.text((x - tw / 2, plot.bottom + 7), label, fill=(60, 60, 60), font=small)


def _draw_bars(img: Image.Image, plot: _Plot, fracs: list, edges: np.ndarray) -> None:
    """Translucent bars (bin ``edges``, (bins + 1,)), composited one series at a time so
    that overlaps mix colours."""
    for k, f in enumerate(fracs):
        if f is None:
            continue
        colour = PALETTE[k % len(PALETTE)]
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ld = ImageDraw.Draw(layer)
        for i in range(len(f)):
            if f[i] > 0:
                ld.rectangle([plot.px(edges[i]), plot.py(f[i]), plot.px(edges[i + 1]), plot.bottom],
                             fill=colour + (60,))
        img.alpha_composite(layer)


def _draw_outlines(draw: ImageDraw.ImageDraw, plot: _Plot, fracs: list, edges: np.ndarray) -> None:
    """A solid step outline per series, over all the bars (each stays visible)."""
    for k, f in enumerate(fracs):
        if f is None:
            continue
        pts = [(plot.px(plot.lo), plot.bottom)]
        for i in range(len(f)):
            pts += [(plot.px(edges[i]), plot.py(f[i])), (plot.px(edges[i + 1]), plot.py(f[i]))]
        pts.append((plot.px(plot.hi), plot.bottom))
        draw.line(pts, fill=PALETTE[k % len(PALETTE)], width=2)


def _draw_labels(draw: ImageDraw.ImageDraw, plot: _Plot, *, title: str, xlabel: str, notes: list,
                 size: tuple[int, int]) -> None:
    """The axes, the x label, "fraction" above the y axis, the title and the notes."""
    regular, small = font(13), font(11)
    left, top, bottom = plot.left, plot.top, plot.bottom
    width, height = size
    draw.line([(left, top), (left, bottom), (plot.right, bottom)], fill=(40, 40, 40), width=1)
    tw, _ = text_size(draw, xlabel, regular)
    draw.text((left + (plot.right - left) / 2 - tw / 2, bottom + 26), xlabel, fill=(20, 20, 20), font=regular)
    draw.text((4, top - 16 if title else 2), "fraction", fill=(60, 60, 60), font=small)
    if title:
        big = font(15)
        tw, _ = text_size(draw, title, big)
        draw.text((width / 2 - tw / 2, 8), title, fill=(0, 0, 0), font=big)
    for i, note in enumerate(notes):
        draw.text((left, height - 2 + 18 * i), note, fill=(20, 20, 20), font=regular)


def _fmt_mean(v: np.ndarray) -> str:
    m = float(v.mean())
    return f"{m:.4g}" if abs(m) < 1e5 else f"{m:.3e}"


# -- scatter -------------------------------------------------------------------------

def save_scatter(path, points: dict, *, xlabel: str, ylabel: str, title: str = "",
                 size: tuple[int, int] = (640, 460), notes=()) -> Path:
    """One labelled point per entry of ``points`` {name: (x, y, x_err, y_err)} with error
    bars (errors may be 0), on axes with room around the extremes, in the format the
    suffix of ``path`` names. ``notes``: lines under the axis. Returns the path."""
    fmt = image_format(path)
    if not points:
        raise ValueError("points is empty: nothing to draw")
    width, height = size
    notes = [str(n) for n in notes]
    img = Image.new("RGB", (width, height + 18 * len(notes)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    regular, small, big = font(13), font(11), font(15)
    left, right, top, bottom = 70, width - 20, 40 if title else 16, height - 52
    xs = [v[0] + s * v[2] for v in points.values() for s in (-1, 1)]
    ys = [v[1] + s * v[3] for v in points.values() for s in (-1, 1)]
    (x0, x1), (y0, y1) = [(min(a), max(a)) for a in (xs, ys)]
    pad_x, pad_y = max(x1 - x0, 1e-3) * 0.15, max(y1 - y0, 1e-3) * 0.15
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y

    def px(v):
        return left + (v - x0) / (x1 - x0) * (right - left)

    def py(v):
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)
    for ticks, step, axis in ((*_nice_ticks(x0, x1, 6), "x"), (*_nice_ticks(y0, y1, 6), "y")):
        for t in ticks:
            label = _fmt(t, step)
            tw, th = text_size(draw, label, small)
            if axis == "x":
                draw.line([(px(t), top), (px(t), bottom)], fill=(236, 236, 236))
                draw.text((px(t) - tw / 2, bottom + 6), label, fill=(60, 60, 60), font=small)
            else:
                draw.line([(left, py(t)), (right, py(t))], fill=(236, 236, 236))
                draw.text((left - 8 - tw, py(t) - th / 2 - 2), label, fill=(60, 60, 60), font=small)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(40, 40, 40))
    for k, (name, (x, y, ex, ey)) in enumerate(points.items()):
        colour = PALETTE[k % len(PALETTE)]
        draw.line([(px(x - ex), py(y)), (px(x + ex), py(y))], fill=colour, width=2)
        draw.line([(px(x), py(y - ey)), (px(x), py(y + ey))], fill=colour, width=2)
        draw.ellipse([px(x) - 5, py(y) - 5, px(x) + 5, py(y) + 5], fill=colour)
        draw.text((px(x) + 8, py(y) - 18), str(name), fill=colour, font=regular)
    tw, _ = text_size(draw, xlabel, regular)
    draw.text((left + (right - left) / 2 - tw / 2, bottom + 24), xlabel, fill=(20, 20, 20), font=regular)
    draw.text((6, top - 18 if title else 2), ylabel, fill=(20, 20, 20), font=regular)
    if title:
        tw, _ = text_size(draw, title, big)
        draw.text((width / 2 - tw / 2, 6), title, fill=(0, 0, 0), font=big)
    for i, note in enumerate(notes):
        draw.text((left, height - 2 + 18 * i), note, fill=(20, 20, 20), font=regular)
    return _save(img, path, fmt)


# -- panels of histograms ------------------------------------------------------------

def save_histogram_panels(path, panels: dict, *, bins: int = 40, title: str = "", xlabel: str = "score",
                          panel_size: tuple[int, int] = (640, 300), notes=()) -> Path:
    """Several ``save_histograms`` pictures stacked top to bottom in one file: ``panels``
    maps each panel's title to its series dict (e.g. ``{"log p(x)": {"in": s_in, "out":
    s_out}}``). ``title`` above all panels, ``notes`` (lines of text) below them, in the
    format the suffix of ``path`` names. Returns the path."""
    fmt = image_format(path)
    if not isinstance(panels, dict) or not panels:
        raise ValueError("panels must be a non-empty dict: panel title -> series dict")
    images = [histogram_image(series, bins=bins, title=str(name), xlabel=xlabel, size=panel_size)
              for name, series in panels.items()]
    notes = [str(n) for n in notes]
    head = 30 if title else 0
    width = max(im.width for im in images)
    img = Image.new("RGB", (width, head + sum(im.height for im in images) + 18 * len(notes) + (6 if notes else 0)),
                    (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if title:
        tw, _ = text_size(draw, title, font(16))
        draw.text((width / 2 - tw / 2, 6), title, fill=(0, 0, 0), font=font(16))
    y = head
    for im in images:
        img.paste(im, (0, y))
        y += im.height
    for i, note in enumerate(notes):
        draw.text((12, y + 2 + 18 * i), note, fill=(20, 20, 20), font=font(13))
    return _save(img, path, fmt)


# -- reliability diagram -------------------------------------------------------------

def save_reliability(path, bins: list, *, title: str = "", size: tuple[int, int] = (600, 640), notes=()) -> Path:
    """A reliability diagram: for each confidence bin ``{"lo", "hi", "count", "conf",
    "acc"}`` (equal-width bins covering [0, 1]; empty bins have count 0) a bar of the
    bin's accuracy over [lo, hi], the gap between that accuracy and the bin's mean
    confidence shaded red, the diagonal (perfect calibration) dashed, and under the axis
    a strip with each bin's share of the points. In the format the suffix of ``path``
    names; ``notes``: lines of text under the picture. Returns the path."""
    fmt = image_format(path)
    if not isinstance(bins, (list, tuple)) or not bins:
        raise ValueError("bins must be a non-empty list of {lo, hi, count, conf, acc} dicts")
    width, height = (validate.integer("size[0]", size[0], minimum=300), validate.integer("size[1]", size[1], minimum=300))
    notes = [str(n) for n in notes]
    img = Image.new("RGBA", (width, height + 18 * len(notes)), (255, 255, 255, 255))
    draw = ImageDraw.Draw(img)
    regular, small, big = font(13), font(11), font(15)
    strip = 48                                     # height of the points-per-bin bars
    left, right, top = 58, width - 18, 36 if title else 14
    bottom = height - strip - 96                    # the main plot's x axis
    s_top, s_bottom = bottom + 64, bottom + 64 + strip
    pw, ph = right - left, bottom - top

    def px(v: float) -> float:
        return left + v * pw

    def py(v: float) -> float:
        return bottom - v * ph

    for t in [i / 5 for i in range(6)]:
        draw.line([(left, py(t)), (right, py(t))], fill=(232, 232, 232))
        draw.line([(px(t), top), (px(t), bottom)], fill=(240, 240, 240))
        label = f"{t:.1f}"
        tw, th = text_size(draw, label, small)
        draw.text((left - 6 - tw, py(t) - th / 2 - 2), label, fill=(60, 60, 60), font=small)
        draw.text((px(t) - tw / 2, bottom + 5), label, fill=(60, 60, 60), font=small)
    total = sum(int(b["count"]) for b in bins) or 1
    peak = max(int(b["count"]) for b in bins) or 1
    # bars and gaps on separate layers: drawing on one RGBA layer replaces its pixels, so a
    # gap inside a bar (an under-confident bin) would hide the bar's top instead of tinting it
    bars, gaps = Image.new("RGBA", img.size, (0, 0, 0, 0)), Image.new("RGBA", img.size, (0, 0, 0, 0))
    bd, gd = ImageDraw.Draw(bars), ImageDraw.Draw(gaps)
    for b in bins:
        if int(b["count"]) == 0:
            continue
        x0, x1 = px(float(b["lo"])), px(float(b["hi"]))
        acc, conf = float(b["acc"]), float(b["conf"])
        bd.rectangle([x0, py(acc), x1, bottom], fill=PALETTE[0] + (150,), outline=PALETTE[0] + (255,))
        gd.rectangle([x0, py(max(acc, conf)), x1, py(min(acc, conf))], fill=PALETTE[3] + (90,))
        h = int(b["count"]) / peak * (s_bottom - s_top)
        bd.rectangle([x0, s_bottom - h, x1, s_bottom], fill=(127, 127, 127, 200))
    img.alpha_composite(bars)
    img.alpha_composite(gaps)
    draw = ImageDraw.Draw(img)
    for i in range(0, 20, 2):                      # dashed diagonal: perfect calibration
        a, b = i / 20, (i + 1) / 20
        draw.line([(px(a), py(a)), (px(b), py(b))], fill=(60, 60, 60), width=2)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(40, 40, 40))
    draw.line([(left, s_bottom), (right, s_bottom)], fill=(40, 40, 40))
    xl = "confidence (max softmax probability)"
    tw, _ = text_size(draw, xl, regular)
    draw.text((left + pw / 2 - tw / 2, bottom + 22), xl, fill=(20, 20, 20), font=regular)
    draw.text((4, top - 16 if title else 0), "accuracy", fill=(60, 60, 60), font=small)
    draw.text((left + 4, s_top - 16), f"points per bin (largest bin: {peak} of {total})", fill=(60, 60, 60),
              font=small)
    if title:
        tw, _ = text_size(draw, title, big)
        draw.text((width / 2 - tw / 2, 8), title, fill=(0, 0, 0), font=big)
    legend = [("accuracy of the bin", PALETTE[0]), ("gap to its mean confidence", PALETTE[3]),
              ("perfect calibration (dashed)", (60, 60, 60))]
    for i, (text, colour) in enumerate(legend):
        y = top + 8 + 18 * i
        draw.rectangle([left + 10, y + 3, left + 22, y + 13], fill=colour)
        draw.text((left + 28, y), text, fill=(20, 20, 20), font=regular)
    for i, note in enumerate(notes):
        draw.text((left, height - 2 + 18 * i), note, fill=(20, 20, 20), font=regular)
    return _save(img.convert("RGB"), path, fmt)
