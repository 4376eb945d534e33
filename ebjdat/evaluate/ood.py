"""Out-of-distribution detection with the JEM scores (Grathwohl et al. 2020; JEM++).

Each score is a function s(x) that should be HIGHER on in-distribution points:

* ``log_px``: ``log p(x) + log Z = logsumexp_k logits(x)_k = -E(x)``;
* ``max_py``: ``max_k p(k|x) = max_k softmax(logits(x))_k``;
* ``neg_grad_norm``: ``-|| d log p(x) / dx ||_2``, the gradient taken with respect to the
  model's [-1, 1] input, per sample. JEM++'s convention: points the model has learned to
  sit at modes of p(x) (the data) have a small gradient, so the score is the *negative*
  norm. (Under the opposite sign its AUROC would be 1 - this one.)

AUROC of a score, in-distribution points positive, OOD points negative:

    AUROC = P(s(X_in) > s(X_out)) + 1/2 P(s(X_in) = s(X_out))
          = (R_in - n_in (n_in + 1) / 2) / (n_in n_out),

R_in the sum of the in-distribution points' ranks in the pooled scores (ranks 1..n,
tied scores share their mean rank): the Mann-Whitney U statistic, computed here (no
scikit-learn needed). 1: perfect separation, 0.5: none, below 0.5: the score ranks OOD
points as more in-distribution.

OOD sets (``ebjdat eval --ood a,b,...``):

* ``noise``: uniform noise U(-1, 1)^(C, H, W);
* ``interp``: midpoints ``(x_i + x_j) / 2`` of two different random test images (the JEM
  protocol; JEM's code mixes consecutive shuffled batches with weight 1/2);
* any name ``ebjdat.data.load_dataset`` knows: its test split, converted to the run's
  image shape by :func:`to_shape`: channels grey -> RGB by repeating the channel, RGB ->
  grey by luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601; weights summing to 1,
  so [-1, 1] maps to [-1, 1] and the result equals the luminance of the [0, 1] pixels,
  mapped to [-1, 1]); size by bilinear interpolation (``align_corners=False``,
  antialiased when shrinking) to the run's H x W. For an upscale by a whole factor this
  is exactly ``ebjdat.data.base.fit_size``, the rule the run's own images went through.

Every set holds ``n`` points (fewer when the dataset is smaller): a seeded random subset,
the same for the same seed. The in-distribution points are the evaluation's test points,
without test-time noise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..energy import logits_of
from .robustness import batches
from .wrapper import kept_modes

BUILTIN = ("noise", "interp")
SCORES = ("log_px", "max_py", "neg_grad_norm")
SCORE_LABELS = {"log_px": "log p(x) = logsumexp logits",
                "max_py": "max p(y|x)",
                "neg_grad_norm": "-||d log p(x) / dx||_2"}
LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------- AUROC
def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Rank-based AUROC (the Mann-Whitney formula above) of (n_in,) in-distribution and
    (n_out,) OOD scores, higher = more in-distribution; ties count 1/2. Infinite scores
    rank as the extremes they are; NaN raises ValueError."""
    a, b = _scores("scores_in", scores_in), _scores("scores_out", scores_out)
    s = torch.cat([a, b])
    order = torch.argsort(s, stable=True)
    _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True, return_counts=True)
    # a run of tied values occupying ranks start..end gets their mean, end - (count - 1) / 2
    mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = mean_rank[inverse]
    n_in, n_out = len(a), len(b)
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_out))


def _scores(name: str, v) -> Tensor:
    if not isinstance(v, Tensor):
        v = torch.as_tensor(v)
    v = v.detach().reshape(-1).double().cpu()
    if len(v) == 0:
        raise ValueError(f"{name} is empty: AUROC needs at least one score on each side")
    if bool(torch.isnan(v).any()):
        raise ValueError(f"{name} holds NaN scores; AUROC is undefined for them")
    return v


# ---------------------------------------------------------------- scores
def ood_scores(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> dict[str, Tensor]:
    """{score name: (N,) float64 CPU scores} (the three scores above) of x (N, C, H, W) in
    the model's [-1, 1] units. One forward and one backward per batch: the input
    gradient of ``sum_i log p(x_i)`` is every sample's own gradient, as long as samples
    do not interact (eval-mode BatchNorm; the caller sets the mode)."""
    out = {k: [] for k in SCORES}
    for s in batches(len(x), batch_size):
        with torch.enable_grad():
            xb = x[s].detach().clone().requires_grad_(True)
            logits = logits_of(model, xb).float()
            lse = torch.logsumexp(logits, dim=1)
            (g,) = torch.autograd.grad(lse.sum(), xb)
        lse, logits = lse.detach(), logits.detach()
        out["log_px"].append(lse.double().cpu())
        # max softmax = exp(max logit - logsumexp): no overflow for large logits
        out["max_py"].append((logits.max(dim=1).values - lse).exp().double().cpu())
        out["neg_grad_norm"].append(-g.flatten(1).double().norm(dim=1).cpu())
    return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in out.items()}


# ---------------------------------------------------------------- OOD sets
def parse_names(text) -> list[str]:
    """"svhn,noise" (or a list) -> ["svhn", "noise"], each a built-in (noise, interp) or a
    dataset name ``load_dataset`` knows; ValueError naming the bad entry otherwise."""
    from ..data import DATASETS
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(t).strip().lower() for t in items]
    known = BUILTIN + tuple(DATASETS)
    if not names or any(not t for t in names):
        raise ValueError(f"{text!r}: give a comma-separated list of OOD sets, e.g. svhn,noise,interp "
                         f"(known: {', '.join(known)})")
    for t in names:
        if t not in known:
            raise ValueError(f"{t!r} is not an OOD set; known: {', '.join(known)}")
    dup = sorted({t for t in names if names.count(t) > 1})
    if dup:
        raise ValueError(f"{', '.join(dup)} named twice")
    return names


def to_shape(x: Tensor, shape: tuple) -> Tensor:
    """(N, c, h, w) in [-1, 1] -> (N, C, H, W) = (N, *shape): channels and size converted
    as the module docstring says; ValueError for channel counts other than 1 <-> 3."""
    c, h, w = (int(v) for v in shape)
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(x.shape)}")
    x = x.float()
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and c == 1:
            x = (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {c} channels (only grey <-> RGB)")
    if tuple(x.shape[2:]) != (h, w):
        shrink = x.shape[2] > h or x.shape[3] > w
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return x.clamp(-1.0, 1.0).contiguous()


def ood_set(name: str, shape: tuple, n: int, *, test_x: Tensor | None = None, root=None,
            seed: int = 0) -> Tensor:
    """n OOD images (n, *shape) in [-1, 1] on the CPU (fewer when a dataset is smaller):
    "noise", "interp" (needs ``test_x``, the in-distribution test images (M, *shape), M
    >= 2) or a seeded random subset of a dataset's test split (``root``: its folder, the
    run's data folder in ``ebjdat eval``), loaded at its native size (tinyimagenet and
    imagefolder: the loader's default decode size) and converted by :func:`to_shape`."""
    g = torch.Generator().manual_seed(seed)
    if name == "noise":
        return torch.rand((n, *shape), generator=g) * 2 - 1
    if name == "interp":
        if test_x is None or len(test_x) < 2:
            raise ValueError("the interp OOD set needs at least 2 in-distribution test images")
        m = len(test_x)
        i = torch.randint(0, m, (n,), generator=g)
        j = (i + torch.randint(1, m, (n,), generator=g)) % m   # j != i: two different images
        t = test_x.detach().float().cpu()
        return ((t[i] + t[j]) / 2).contiguous()
    from ..data import load_dataset
    try:   # the loader's own seeded subset: large sets never hold all their images as floats
        ds = load_dataset(name, "test", root=root, n=n, seed=seed)
    except ValueError:   # fewer than n images: all of them
        ds = load_dataset(name, "test", root=root, seed=seed)
    return to_shape(ds.x, shape)


def load_sets(names, shape: tuple, n: int, *, test_x: Tensor, root=None, seed: int = 0) -> dict[str, Tensor]:
    """{name: ood_set(name, ...)} for each name, each with its own seed (seed + index)."""
    return {name: ood_set(name, shape, n, test_x=test_x, root=root, seed=seed + 1000 * (k + 1))
            for k, name in enumerate(names)}


# ---------------------------------------------------------------- the evaluation
def ood_detection(model: nn.Module, x_in: Tensor, sets: dict[str, Tensor], *, batch_size: int = 256,
                  out_dir=None, title: str = "") -> dict:
    """AUROC of each score for x_in (N, C, H, W) against each OOD set (M_k, C, H, W), all
    in [-1, 1] (moved to x_in's device batch by batch), the model in eval mode; with
    ``out_dir`` one histogram picture per set, ``ood_<set>.png`` (in-distribution vs
    OOD distribution of each score, one panel per score).

    Returns {"ood_auroc": {set: {score: AUROC or None}}, "ood_n": {"in": N, set: M_k},
    "ood_notes": [...] (why an AUROC is None: NaN scores), "files": [paths]}."""
    res = {"ood_auroc": {}, "ood_n": {"in": len(x_in)}, "ood_notes": [], "files": []}
    with kept_modes(model):
        model.eval()
        s_in = ood_scores(model, x_in, batch_size=batch_size)
        for name, x_out in sets.items():
            s_out = ood_scores(model, x_out.to(x_in.device), batch_size=batch_size)
            res["ood_n"][name] = len(x_out)
            row = {}
            for k in SCORES:
                try:
                    row[k] = auroc(s_in[k], s_out[k])
                except ValueError as e:
                    row[k] = None
                    res["ood_notes"].append(f"{name} / {k}: {e}")
            res["ood_auroc"][name] = row
            if out_dir is not None:
                res["files"].append(_histograms(out_dir, name, s_in, s_out, row, title))
    return res


def _histograms(out_dir, name: str, s_in: dict, s_out: dict, row: dict, title: str):
    from pathlib import Path
    panels = {}
    for k in SCORES:
        a = "n/a" if row[k] is None else f"{row[k]:.4f}"
        panels[f"{SCORE_LABELS[k]}  (AUROC {a})"] = {"in-distribution (test)": s_in[k], f"OOD: {name}": s_out[k]}
    n_bins = min(60, max(15, int(math.sqrt(min(len(s_in["log_px"]), len(s_out["log_px"]))) * 2)))
    from .. import charts   # matplotlib, imported only where a chart is drawn
    return charts.save_histogram_panels(
        Path(out_dir) / f"ood_{name}.png", panels, bins=n_bins, title=title or f"OOD detection: {name}",
        notes=[direction_note(SCORE_LABELS[k], row[k]) for k in SCORES]
        + ["AUROC: P(score of an in-distribution point > score of an OOD point)"])


def direction_note(label: str, value: float | None) -> str:
    """What the AUROC ``value`` of the score named ``label`` says about its direction: above
    0.5 the score is higher on in-distribution points (as the score intends), below 0.5 it
    is higher on the OOD points, at 0.5 it does not separate them. A caption states what
    the numbers show, never what the score was meant to do."""
    if value is None:
        return f"{label}: no AUROC (NaN scores), no direction"
    if value > 0.5:
        return f"{label}: higher on in-distribution points (AUROC {value:.3f} > 0.5)"
    if value < 0.5:
        return f"{label}: higher on OOD points, the wrong way round (AUROC {value:.3f} < 0.5)"
    return f"{label}: does not separate the two sets (AUROC 0.5)"
