"""Per-sample correctness under clean inputs, PGD, random noise; gradient health.

Every function takes a classifier ``model`` of the inputs as given (wrap an ebjdat model
in :class:`~ebjdat.evaluate.wrapper.PixelModel` to attack pixels), x (N, C, H, W) and
y (N,) int labels on one device, and returns an (N,) bool tensor (on the CPU) that says
which points are still classified correctly: accuracies are its mean, and the masks of
different attacks combine with ``&`` into a worst case over attacks. The model's
train/eval mode is the caller's (evaluation uses eval mode).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from .. import ops, progress
from ..attacks import PGD


def batches(n: int, batch_size: int):
    """Slices covering range(n) in chunks of batch_size."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _bar(items, progress: bool, desc: str):
    return tqdm(items, desc=desc, disable=not progress, leave=False, dynamic_ncols=True, unit="batch")


@torch.no_grad()
def predictions(model, x: Tensor, *, batch_size: int = 256) -> Tensor:
    """(N,) int64 arg-max predictions on x's device, batch by batch."""
    return torch.cat([model(x[s]).argmax(1) for s in batches(len(x), batch_size)]) if len(x) else \
        torch.empty(0, dtype=torch.long, device=x.device)


def correct(model, x: Tensor, y: Tensor, *, batch_size: int = 256) -> Tensor:
    """(N,) bool: ``argmax model(x) == y`` (CPU)."""
    return (predictions(model, x, batch_size=batch_size) == y).cpu()


@torch.no_grad()
def topk_correct(model, x: Tensor, y: Tensor, *, k: int = 5, batch_size: int = 256) -> Tensor:
    """(N,) bool (CPU): y_i is among the k largest logits of model(x_i) (ties broken by
    torch.topk). k above the class count counts every point as correct."""
    out = []
    for s in batches(len(x), batch_size):
        logits = model(x[s])
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out.append((top == y[s].view(-1, 1)).any(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def default_alpha(eps: float, steps: int) -> float:
    """PGD step size: ``eps * max(1/4, 2.5/steps)``.

    At least 2.5 eps / k (Madry et al.: k steps can cross the ball from any start) and at
    least eps / 4 (the published code's 2/255 at 8/255, which PGD-20 also uses)."""
    return eps * max(0.25, 2.5 / max(steps, 1))


@progress.reported(lambda r, a, k: f"{k.get('desc') or 'PGD'}: {progress.share(r)} robust")
def pgd_correct(model, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", steps: int = 20,
                alpha: float | None = None, restarts: int = 1, random_start: bool = True,
                clamp: tuple[float, float] = (0.0, 1.0), batch_size: int = 256, seed: int = 0,
                clean: Tensor | None = None, progress: bool = False, desc: str = "PGD",
                return_adv: bool = False):
    r"""(N,) bool: robust to PGD-``steps`` (cross-entropy ascent) within the eps-ball.

    A point counts as robust only if it is classified correctly clean (``clean``, the
    mask of :func:`correct`, computed when None) **and** after every one of ``restarts``
    random-start runs: ``robust_i = clean_i AND_r [argmax f(PGD_r(x_i)) == y_i]``. Without
    a random start all restarts would be the same run, so one is done. Random starts draw
    from a PhiloxGenerator seeded with ``seed`` (reproducible per seed and batch size).

    ``return_adv=True`` also returns the (N, C, H, W) adversarial points (every point is
    attacked, misclassified ones too): the first restart that fooled the model, else the
    last restart's result.
    """
    alpha = default_alpha(eps, steps) if alpha is None else alpha
    if clean is None:
        clean = correct(model, x, y, batch_size=batch_size)
    gen = ops.PhiloxGenerator(seed, device=x.device)
    atk = PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, norm=norm,
              clamp=clamp, loss="ce", generator=gen)
    runs = restarts if random_start else 1
    robust = clean.clone()
    adv = x.clone() if return_adv else None
    for s in _bar(batches(len(x), batch_size), progress, desc):
        xb, yb = x[s], y[s]
        ok = robust[s].to(x.device)
        for r in range(runs):
            if adv is None and not bool(ok.any()):
                break  # every point of the batch is already broken: nothing left to try
            x_adv = atk(xb, yb)
            with torch.no_grad():
                hit = model(x_adv).argmax(1) == yb
            if adv is not None:
                # every point gets run 0's result; later runs replace it only while the
                # point is unbroken, so a success is never overwritten
                keep = ok if r else torch.ones_like(ok)
                adv[s][keep] = x_adv[keep]
            ok &= hit
        robust[s] = ok.cpu()
    return (robust, adv) if return_adv else robust


@progress.reported(lambda r, a, k: f"random noise at eps {k.get('eps', 0):.4g}: {progress.share(r)} correct")
def noise_correct(model, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf", draws: int = 16,
                  clamp: tuple[float, float] = (0.0, 1.0), batch_size: int = 256, seed: int = 0,
                  clean: Tensor | None = None) -> Tensor:
    r"""(N,) bool: correct clean and under each of ``draws`` random perturbations.

    A gradient-free baseline. linf: random corners of the ball, ``x + eps * s``, s_j in
    {-1, +1} uniformly (the ball's farthest points); l2: uniform directions on the sphere,
    ``x + eps * g / ||g||``, g standard normal; then clamped. Any sound gradient attack at
    the same eps must do at least as well; when PGD leaves more points correct than this,
    its gradients are useless (masked, obfuscated or saturated).
    """
    if clean is None:
        clean = correct(model, x, y, batch_size=batch_size)
    g = torch.Generator(x.device).manual_seed(seed)
    robust = clean.clone()
    with torch.no_grad():
        for s in batches(len(x), batch_size):
            xb, yb, ok = x[s], y[s], robust[s].to(x.device)
            for _ in range(draws):
                if norm == "linf":
                    d = torch.randint(0, 2, xb.shape, generator=g, device=x.device).to(xb.dtype) * 2 - 1
                else:
                    d = torch.randn(xb.shape, generator=g, device=x.device, dtype=xb.dtype)
                    d /= d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (xb.dim() - 1))
                ok &= model((xb + eps * d).clamp(*clamp)).argmax(1) == yb
            robust[s] = ok.cpu()
    return robust


def zero_gradient(model, x: Tensor, y: Tensor, *, batch_size: int = 256) -> Tensor:
    r"""(N,) bool: the input gradient of the loss is exactly zero or not finite.

    ``g_i = d CE(f(x_i), y_i) / d x_i`` (per sample: the summed loss separates, so one
    backward gives every sample's own gradient). A point with ``g_i = 0`` cannot be
    attacked by any gradient method (sign(0) = 0): the mark of rounded, quantised or
    saturated inputs, or of logits so large that the softmax is exactly one-hot in fp32.
    """
    out = []
    for s in batches(len(x), batch_size):
        with torch.enable_grad():
            xb = x[s].detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s], reduction="sum")
            (g,) = torch.autograd.grad(loss, xb, allow_unused=True)
        if g is None:  # the output does not depend on the input at all
            out.append(torch.ones(len(xb), dtype=torch.bool))
            continue
        g = g.flatten(1)
        out.append(((g == 0).all(1) | ~torch.isfinite(g).all(1)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(mask: Tensor) -> float:
    """Mean of an (N,) bool mask as a float (nan for N = 0)."""
    return float(mask.float().mean()) if mask.numel() else math.nan


def save_robustness_curves(png, result: dict, *, title: str = ""):
    """The PGD accuracy curve(s) of an ``ebjdat.evaluate.core.evaluate`` result as a
    picture at ``png``: accuracy against the radius eps (pixels in [0, 1]), one line per
    protocol that has a ``pgd_curve`` (the headline one, and ``standard_protocol`` /
    ``published_protocol`` when present), the noise accuracy at the headline radius in
    the notes. Returns the path; ValueError when the result holds no curve."""
    from .. import charts
    curves = {}
    for key, name in (("standard_protocol", "PGD, standard protocol"),
                      ("published_protocol", "PGD, published protocol")):
        if isinstance(result.get(key), dict) and result[key].get("pgd_curve"):
            curves[name] = [(p["eps"], p["acc"]) for p in result[key]["pgd_curve"]]
    if not curves and result.get("pgd_curve"):
        curves["PGD"] = [(p["eps"], p["acc"]) for p in result["pgd_curve"]]
    if not curves:
        raise ValueError("the result holds no pgd_curve: nothing to draw")
    norm, steps = result.get("norm", "?"), result.get("steps", "?")
    noise = result.get("noise_acc")
    notes = [] if noise is None else [f"random noise of the headline radius: accuracy {noise:.3f}"]
    return charts.save_curves(png, curves, xlabel=f"radius eps ({norm}, pixels in [0, 1])", ylabel="accuracy",
                              title=title or f"accuracy under PGD-{steps} ({norm}), {result.get('n', '?')} test points",
                              notes=notes, ylim=(0.0, 1.02))
