"""Pictures of images a run shows a person: sample grids with a title strip and, for
class-conditional grids, the class at each row's left; the image formats they are
written in (chosen by the file's suffix: .png, .jpg, ...); and the checks of output
paths that every command runs before its work starts.

Grids are drawn pixel for pixel with Pillow (no resampling blur). Charts (histograms,
reliability diagrams, scatter plots, curves) are drawn with matplotlib in
``ebjdat.charts``, which callers import where they draw one, so that commands drawing no
chart never import matplotlib.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont, features

from . import validate

NAN_COLOUR = (255, 0, 255)  # magenta: no image in [-1, 1] maps to it by accident in grey
PAD_COLOUR = (80, 80, 80)  # visible against both black digit backgrounds and white
MIN_GRID_WIDTH = 256  # small images (8x8 digits) are enlarged to at least this
MIN_TITLE_WIDTH = 320  # a narrow grid still gets a title strip wide enough to read
TITLE_LINE, TITLE_MARGIN, LABEL_MARGIN = 20, 8, 14  # pixels: one title line, space around, beside labels
NOISE_FACTOR = 2.0  # accuracy at most this multiple of chance: the samples carry no class

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


def save_image(img: Image.Image, path, fmt: str) -> Path:
    """Write ``img`` to ``path`` in Pillow format ``fmt`` (``image_format``), creating
    missing folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **SAVE_OPTIONS.get(fmt, {}))
    return path


# -- titles and labels ---------------------------------------------------------------

def looks_like_noise(cond_acc: float | None, n_classes: int) -> bool:
    """Whether samples whose intended class a classifier recovers with accuracy
    ``cond_acc`` carry no class: at most ``NOISE_FACTOR`` times chance (1 / n_classes).
    False when there is no accuracy (None or NaN: nothing to judge by)."""
    if cond_acc is None or not math.isfinite(cond_acc):
        return False
    return cond_acc <= NOISE_FACTOR / validate.integer("n_classes", n_classes)


def flag_noise(title: str, cond_acc: float | None, n_classes: int) -> str:
    """``title``, ending in "(looks like noise: conditional accuracy 0.11, chance 0.10)"
    when ``looks_like_noise``: a grid of noise must not pass for samples at a glance."""
    if not looks_like_noise(cond_acc, n_classes):
        return title
    flag = f"(looks like noise: conditional accuracy {cond_acc:.2f}, chance {1 / n_classes:.2f})"
    return f"{title} {flag}" if title else flag


def class_row_labels(n_classes: int) -> list[str]:
    """The row labels of a grid with one row per class: "class 0", "class 1", ..."""
    return [f"class {k}" for k in range(validate.integer("n_classes", n_classes))]


def grid_text(title: str, row_labels, nrows: int) -> tuple[str, list[str]]:
    """(title, row labels) a grid of ``nrows`` rows is drawn with: the labels as strings,
    one per row ([] for none); ValueError when their count differs from the rows'."""
    labels = [] if row_labels is None else [str(r) for r in row_labels]
    if labels and len(labels) != nrows:
        raise ValueError(f"row_labels has {len(labels)} labels for a grid of {nrows} rows; pass one per row")
    return str(title), labels


def font(size: int):
    """Pillow's bundled scalable font at ``size`` px (its fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn in ``font``."""
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    return r - l, b - t


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, fnt) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` px wide (a longer word keeps
    its own line): a long title grows the strip downwards, never past the picture."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_size(draw, f"{lines[-1]} {word}", fnt)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _frame(body: Image.Image, title: str, labels: list[str], row_centres: list[float]) -> Image.Image:
    """``body`` (the grid itself) on white, a title strip above it and each label
    right-aligned left of its row (``row_centres``: the rows' vertical centres in ``body``)."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_font, title_font = font(14), font(13)
    label_w = max(text_size(measure, t, label_font)[0] for t in labels) + LABEL_MARGIN if labels else 0
    width = label_w + body.width
    lines = _wrap(measure, title, max(width, MIN_TITLE_WIDTH) - 2 * TITLE_MARGIN, title_font) if title else []
    if lines:
        width = max(width, MIN_TITLE_WIDTH, max(text_size(measure, t, title_font)[0] for t in lines) + 2 * TITLE_MARGIN)
    top = TITLE_MARGIN + TITLE_LINE * len(lines) if lines else 0
    img = Image.new("RGB", (width, top + body.height), (255, 255, 255))
    img.paste(body, (label_w, top))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((TITLE_MARGIN, TITLE_MARGIN // 2 + 2 + TITLE_LINE * i), line, fill=(0, 0, 0), font=title_font)
    for text, yc in zip(labels, row_centres):
        lw, lh = text_size(draw, text, label_font)
        draw.text((label_w - LABEL_MARGIN // 2 - lw, top + yc - lh / 2 - 2), text, fill=(0, 0, 0), font=label_font)
    return img


# -- grids ---------------------------------------------------------------------------

def _pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 of images x (B, C, H, W) in [-1, 1]: round((v + 1) * 127.5)
    clamped to 0..255, grey repeated to RGB, NaN pixels (any channel) magenta."""
    b, c, h, w = x.shape
    x = x.detach().to("cpu", torch.float32)
    nan = torch.isnan(x).any(dim=1)
    x = x.expand(b, 3, h, w) if c == 1 else x
    img = ((x.nan_to_num(0.0) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    img = img.permute(0, 2, 3, 1).contiguous()
    img[nan] = torch.tensor(NAN_COLOUR, dtype=torch.uint8)
    return img


def _check_images(x) -> torch.Tensor:
    """x as a (B, C, H, W) float tensor (one (C, H, W) image becomes B = 1); TypeError or
    ValueError saying what is wrong otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (B, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor with values in [-1, 1], got {x.dtype}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x holds no pixels (shape {tuple(x.shape)}); nothing to draw")
    return x


def save_grid(path, x: torch.Tensor, nrow: int | None = None, pad: int = 1, *, title: str | None = None,
              row_labels=None) -> Path:
    """Save images ``x`` (B, C, H, W), C = 1 or 3, values in [-1, 1], as one grid picture.

    Pixel value ``round((v + 1) * 127.5)`` clamped to 0..255 (-1 -> 0, 1 -> 255); NaN
    pixels are magenta. ``nrow`` images per row (default ``ceil(sqrt(B))``), ``pad``
    pixels of grey between and around them. Images are enlarged by an integer factor
    (nearest neighbour, no blur) until the grid is at least 256 px wide.

    ``title``: the strip above the grid (default "<B> samples"; "" draws the grid alone).
    ``row_labels``: one label per grid row, drawn at its left (a class-conditional grid
    with one row per class passes ``class_row_labels(n_classes)``).

    An RGB picture in the format the suffix of ``path`` names (``FORMATS``: .png, .jpg,
    ...; others raise ValueError before anything is drawn); missing folders are created.
    Returns the path.
    """
    fmt = image_format(path)
    x = _check_images(x)
    b, _, h, w = x.shape
    ncol = min(math.ceil(math.sqrt(b)) if nrow is None else validate.integer("nrow", nrow), b)
    nrows = math.ceil(b / ncol)
    pad = validate.integer("pad", pad, minimum=0)
    title, labels = grid_text(f"{b} samples" if title is None else title, row_labels, nrows)
    scale = max(1, math.ceil(MIN_GRID_WIDTH / (ncol * w)))
    img = _pixels(x)
    if scale > 1:
        img = img.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    th, tw = h * scale, w * scale
    grid = torch.tensor(PAD_COLOUR, dtype=torch.uint8).expand(
        nrows * (th + pad) + pad, ncol * (tw + pad) + pad, 3).clone()
    for i in range(b):
        r, q = divmod(i, ncol)
        y0, x0 = pad + r * (th + pad), pad + q * (tw + pad)
        grid[y0:y0 + th, x0:x0 + tw] = img[i]
    body = Image.fromarray(grid.numpy(), "RGB")
    centres = [pad + r * (th + pad) + th / 2 for r in range(nrows)]
    return save_image(_frame(body, title, labels, centres), path, fmt)


def save_class_grid(path, x: torch.Tensor, y: torch.Tensor, n_classes: int, *, per_class: int = 10,
                    title: str | None = None, cell: int = 32, row_labels=None, max_rows: int = 20) -> Path:
    """Images x (B, C, H, W) in [-1, 1] sorted into one labelled row per class y (B,):
    the first ``per_class`` of each class, left to right (a short row stays grey), each
    enlarged to about ``cell`` pixels (nearest neighbour), a title strip above (default
    "samples, one row per class"; "" for none). ``row_labels``: the rows' names (default
    "class 0", "class 1", ...). Only the first ``max_rows`` classes get a row (200 or
    1,000 rows would make a picture nobody can read); the title says so. Returns the path."""
    fmt = image_format(path)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be a (B, C, H, W) tensor with C = 1 or 3, got {getattr(x, 'shape', x)!r}")
    n_classes, per_class = validate.integer("n_classes", n_classes), validate.integer("per_class", per_class)
    title = "samples, one row per class" if title is None else title
    labels = class_row_labels(n_classes) if row_labels is None else [str(r) for r in row_labels]
    if n_classes > validate.integer("max_rows", max_rows):
        title = (title + "; " if title else "") + f"classes 0-{max_rows - 1} of {n_classes}"
        n_classes = max_rows
    title, labels = grid_text(title, labels[:n_classes], n_classes)
    h, w = x.shape[2:]
    scale = max(1, round(cell / max(h, w)))
    th, tw, pad = h * scale, w * scale, 2
    cells = _pixels(x.float()).repeat_interleave(scale, 1).repeat_interleave(scale, 2).numpy()
    body = Image.new("RGB", (per_class * (tw + pad) + pad, n_classes * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(body)
    ys = y.detach().cpu().long()
    for k in range(n_classes):
        y0 = pad + k * (th + pad)
        mine = (ys == k).nonzero().flatten()[:per_class].tolist()
        for j in range(per_class):
            x0 = pad + j * (tw + pad)
            if j < len(mine):
                body.paste(Image.fromarray(cells[mine[j]], "RGB"), (x0, y0))
            else:
                draw.rectangle([x0, y0, x0 + tw - 1, y0 + th - 1], fill=PAD_COLOUR)
    centres = [pad + k * (th + pad) + th / 2 for k in range(n_classes)]
    return save_image(_frame(body, title, labels, centres), path, fmt)
