"""``evaluate``: clean, PGD and AutoAttack accuracy of a classifier, under the standard
protocol and the published one, with the sanity checks (sanity.py) built in.

Standard protocol: eps in [0, 1] pixel units; the model is attacked through its own
normalisation (:class:`PixelModel`), iterates clamped to [0, 1]; PGD-k with random start
and restarts, a curve over eps (always including eps = 0), AutoAttack "standard"; clean
top-5 accuracy for 100 classes or more.

Reference protocol (the published evaluation), all of it:

* test-time noise: ``x' = clamp(x + 0.03 z, -1, 1)``, z ~ N(0, I) drawn on the CPU from a
  generator seeded with ``seed`` (the same noise on every device), added to the [-1, 1]
  test inputs before anything else: clean accuracy, PGD and the attack suite all see x'.
  The published transform does not clamp; its PGD clamps every iterate, its random start
  included, to [-1, 1], and torchattacks refuses inputs outside the box, so the clamp
  changes only the centre of the eps-ball at saturated pixels, and keeps the check
  "PGD at eps 0 equals clean" exact;
* PGD-20, linf, random start, eps = 8/255 and **alpha = 1/255, both in the model's
  [-1, 1] units** (4/255 and 0.5/255 in pixels). Why those units: the published code says
  "PGD-20 with alpha 1/255" and, for the same code, "eps = 8/255 in the [-1, 1] space".
  The published script hands both numbers unchanged to the PGD of its own torchattacks
  copy, which adds them to the normalised [-1, 1] tensors and clamps to [-1, 1]: eps and
  alpha live in one space. (ebjdat used 2/255 before, reading alpha alone as pixels.)
  20 steps of 1/255 can still cross the 16/255-wide ball;
* its "AutoAttack": APGD-CE and APGD-DLR at 20 steps, FAB-T at 20 steps and Square with
  5000 queries (APGD-T off), worst case over them (autoattack.reference_suite). The
  suite runs in torchattacks on [0, 1] pixels at eps 4/255: the same attacks, since each
  is equivariant under the affine map p -> 2p - 1 (step sizes, random starts and Square's
  patches scale with eps; signs, gradient directions, FAB's projections and the box
  [0, 1] -> [-1, 1] carry over);
* worst case: a point is robust only if it survives PGD and the whole suite.

Each protocol's numbers sit under its own key (``standard_protocol``,
``reference_protocol``); the top-level keys repeat the headline protocol's.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from . import autoattack as aa
from . import sanity
from .robustness import (
    accuracy,
    correct,
    default_alpha,
    noise_correct,
    pgd_correct,
    topk_correct,
    zero_gradient,
)
from .wrapper import PRECISIONS, PixelModel, from_pixels, kept_modes, to_pixels

NORMS = ("linf", "l2")
PROTOCOLS = ("standard", "reference", "both")
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}
# the published evaluation: eps, alpha in [-1, 1] model units (see the module docstring)
REFERENCE = {"eps": 8 / 255, "alpha": 1 / 255, "steps": 20, "noise_sigma": 0.03, "aa_steps": 20,
             "aa_queries": 5000}
TOP5_MIN_CLASSES = 100


def eps_list(eps, norm: str) -> list[float]:
    """eps (a number or a sequence; None: 8/255 linf, 0.5 l2) as a list of finite floats >= 0,
    at most 1 for linf (a radius in [0, 1] pixels: larger ones are unit mistakes, 8 for 8/255)."""
    if eps is None:
        return [DEFAULT_EPS[norm]]
    seq = list(eps) if isinstance(eps, (list, tuple)) else [eps]
    if not seq:
        raise ValueError("eps must name at least one radius")
    out = []
    for e in seq:
        if isinstance(e, bool) or not isinstance(e, numbers.Real) or not math.isfinite(e):
            raise ValueError(f"eps must be finite real numbers (pixel units, e.g. 8/255), got {e!r}")
        if e < 0:
            raise ValueError(f"eps must be >= 0 (a radius in [0, 1] pixel units), got {e}")
        if norm == "linf" and e > 1:
            raise ValueError(f"eps must be <= 1 for linf (a radius in [0, 1] pixel units, e.g. 8/255 = 0.0314), "
                             f"got {e}")
        out.append(float(e))
    return out


def _int(name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _check_data(x, y) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a float tensor (N, C, H, W) of images in the model's [-1, 1] units")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError("y must be an (N,) integer tensor of labels")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same number (> 0) of points, got {len(x)} and {len(y)}")
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - 1e-5 or hi > 1 + 1e-5:
        raise ValueError(f"x must be in the model's [-1, 1] units (ebjdat datasets are), got values in "
                         f"[{lo:.3g}, {hi:.3g}]; for [0, 1] pixel images pass from_pixels(x)")


def _run(model, x, y, clean, *, eps: list[float], headline: float, norm, steps, alpha, restarts,
         random_start, clamp, batch_size, seed, noise_draws, progress, tag) -> dict:
    """PGD at every eps of the curve (plus 0), noise at the headline: counts and adv points."""
    curve, head, adv = [], None, None
    for i, e in enumerate(sorted(set([0.0] + eps))):
        # at eps 0 the attack still takes the headline's steps, so that the check "eps 0
        # equals clean" exercises the projection rather than a step of size 0
        a = alpha if alpha is not None else default_alpha(e if e > 0 else headline, steps)
        mask = pgd_correct(model, x, y, eps=e, norm=norm, steps=steps, alpha=a, restarts=restarts,
                           random_start=random_start, clamp=clamp, batch_size=batch_size, seed=seed + i,
                           clean=clean, progress=progress, desc=f"{tag} PGD-{steps} eps {e:.4g}",
                           return_adv=e == headline)
        if e == headline:
            head, adv = mask
            mask = head
        curve.append((e, int(mask.sum())))
    noise = noise_correct(model, x, y, eps=headline, norm=norm, draws=noise_draws, clamp=clamp,
                          batch_size=batch_size, seed=seed, clean=clean)
    return {"curve": curve, "mask": head, "adv": adv, "noise": int(noise.sum())}


def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, eps=None, norm: str = "linf", steps: int = 20,
             alpha: float | None = None, restarts: int = 1, random_start: bool = True,
             autoattack: bool = False, autoattack_steps: int = 100, autoattack_queries: int = 5000,
             protocol: str = "standard", batch_size: int = 256, precision: str = "fp32", seed: int = 0,
             noise_draws: int = 16, progress: bool = False, return_adv: bool = False,
             reference_aa_steps: int = REFERENCE["aa_steps"], reference_aa_queries: int = REFERENCE["aa_queries"],
             reference_noise_sigma: float = REFERENCE["noise_sigma"]):
    r"""Accuracy of ``model`` (which reads [-1, 1] images) on x (N, C, H, W) in [-1, 1], y (N,).

    eps: the radius in [0, 1] pixel units, or a list: the first is the headline
    (``pgd_acc``, AutoAttack, the adversarial energies), all of them and 0 form
    ``pgd_curve``. alpha: PGD step (default ``eps * max(1/4, 2.5/steps)``). restarts: a
    point is robust only if it survives all. protocol: "standard", "reference" (only the
    published setting; its numbers become the top-level ones) or "both".
    precision "bf16" runs the model under autocast; attacks stay fp32 otherwise.
    reference_aa_steps / reference_aa_queries: the published suite's iterations (20) and
    Square queries (5000); reference_noise_sigma: its test-time noise (0.03; 0 = off).

    Returns a dict: clean_acc, top5_acc (100 classes or more), pgd_acc, pgd_curve
    [{eps, acc}], noise_acc, zero_grad_frac, autoattack_acc and autoattack (when run),
    worst_case_acc (robust to every attack run), standard_protocol {...} and
    reference_protocol {...} (each protocol's numbers, labelled), sanity_checks {name:
    {passed, detail}} and sanity (the failed ones; empty when all passed). With
    ``return_adv`` also the (N, ...) PGD adversarial points of the headline eps in
    [-1, 1] units: (results, x_adv).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module returning logits, got {type(model).__name__}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    eps = eps_list(eps, norm)
    steps, restarts = _int("steps", steps, 0), _int("restarts", restarts, 1)
    batch_size, noise_draws = _int("batch_size", batch_size, 1), _int("noise_draws", noise_draws, 1)
    reference_aa_steps = _int("reference_aa_steps", reference_aa_steps, 1)
    reference_aa_queries = _int("reference_aa_queries", reference_aa_queries, 1)
    reference_noise_sigma = _sigma(reference_noise_sigma)
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha >= 0):
        raise ValueError(f"alpha must be a number >= 0 or None, got {alpha!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    _check_data(x, y)
    if autoattack:
        aa.torchattacks_module()  # fail before any work, with the install command
    y = y.long()
    with kept_modes(model):
        model.eval()  # attacks see running BatchNorm statistics, as at test time
        out = {"n": len(x), "norm": norm, "eps": eps[0], "steps": steps, "restarts": restarts,
               "alpha": default_alpha(eps[0], steps) if alpha is None else float(alpha),
               "precision": precision, "protocol": protocol}
        pm = PixelModel(model, precision=precision)
        p = to_pixels(x).clamp(0, 1)
        clean = correct(pm, p, y, batch_size=batch_size)
        n, common = len(x), dict(batch_size=batch_size, seed=seed, progress=progress)
        out["clean_acc"] = accuracy(clean)
        with torch.no_grad():
            n_classes = int(pm(p[:1]).shape[1])
        if n_classes >= TOP5_MIN_CLASSES:
            out["top5_acc"] = accuracy(topk_correct(pm, p, y, k=5, batch_size=batch_size))
        # only correctly classified points matter: the others need no attack
        zero_count = int((zero_gradient(pm, p, y, batch_size=batch_size) & clean).sum())
        out["zero_grad_frac"] = zero_count / max(int(clean.sum()), 1)
        checks, adv = {}, None
        if protocol in ("standard", "both"):
            r = _run(pm, p, y, clean, eps=eps, headline=eps[0], norm=norm, steps=steps, alpha=alpha,
                     restarts=restarts, random_start=random_start, clamp=(0.0, 1.0),
                     noise_draws=noise_draws, tag="standard", **common)
            adv = from_pixels(r["adv"])
            out["pgd_acc"] = accuracy(r["mask"])
            out["pgd_curve"] = [{"eps": e, "acc": c / n} for e, c in r["curve"]]
            out["noise_acc"] = r["noise"] / n
            worst, aa_count = r["mask"], None
            if autoattack:
                m, info = aa.autoattack_correct(pm, p, y, eps=eps[0], norm=norm, steps=autoattack_steps,
                                                n_queries=autoattack_queries, clean=clean, **common)
                out["autoattack_acc"], out["autoattack"] = accuracy(m), info
                worst, aa_count = worst & m, int(m.sum())
            out["worst_case_acc"] = accuracy(worst)
            out["standard_protocol"] = {
                "space": "[0, 1] pixels", "eps_pixels": eps[0], "norm": norm, "steps": steps,
                "alpha_pixels": out["alpha"], "restarts": restarts, "test_time_noise": None,
                **{k: out[k] for k in ("clean_acc", "pgd_acc", "noise_acc", "worst_case_acc", "top5_acc",
                                       "autoattack_acc") if k in out}}
            checks.update(sanity.run_checks(n, int(clean.sum()), r["curve"], pgd=int(r["mask"].sum()),
                                            autoattack=aa_count, noise=r["noise"]))
        if protocol in ("reference", "both"):
            ref, ref_checks, ref_adv = reference_protocol(
                model, x, y, precision=precision, random_start=random_start, noise_draws=noise_draws,
                noise_sigma=reference_noise_sigma, aa_steps=reference_aa_steps, aa_queries=reference_aa_queries,
                **common)
            out["reference_protocol"] = ref
            checks.update({"reference_" + k: v for k, v in ref_checks.items()})
            if protocol == "reference":
                out.update(clean_acc=ref["clean_acc"], pgd_acc=ref["pgd_acc"], eps=ref["eps_pixels"],
                           worst_case_acc=ref["worst_case_acc"], alpha=ref["alpha_pixels"])
                if ref.get("autoattack_acc") is not None:
                    out["autoattack_acc"] = ref["autoattack_acc"]
                adv = ref_adv
        checks["gradients_nonzero"] = sanity.run_checks(n, int(clean.sum()), [],
                                                        zero_grad=zero_count)["gradients_nonzero"]
        out["sanity_checks"], out["sanity"] = checks, sanity.failed(checks)
    return (out, adv) if return_adv else out


def _sigma(v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"reference_noise_sigma must be a finite number >= 0 (0: no test-time noise), got {v!r}")
    return float(v)


def published_noise(x: Tensor, sigma: float, seed: int) -> Tensor:
    """``clamp(x + sigma z, -1, 1)``, z ~ N(0, I) of x's shape from a CPU generator seeded
    with ``seed`` (device-independent), on x's device; x itself when sigma is 0."""
    if sigma == 0:
        return x
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return (x + sigma * z.to(device=x.device, dtype=x.dtype)).clamp(-1.0, 1.0)


def reference_protocol(model: nn.Module, x: Tensor, y: Tensor, *, precision: str = "fp32",
                       random_start: bool = True, batch_size: int = 256, seed: int = 0,
                       progress: bool = False, noise_draws: int = 16,
                       noise_sigma: float = REFERENCE["noise_sigma"], aa_steps: int = REFERENCE["aa_steps"],
                       aa_queries: int = REFERENCE["aa_queries"]) -> tuple[dict, dict, Tensor]:
    """The published evaluation (module docstring) on x (N, ...) in [-1, 1], y (N,):
    test-time noise (``noise_sigma``, seeded by ``seed``), PGD-20 (eps 8/255, alpha 1/255
    in [-1, 1] units, projected, clamped to [-1, 1]) and the published attack suite
    (``aa_steps`` iterations, ``aa_queries`` Square queries).

    Returns (numbers, sanity checks, the PGD adversarial points in [-1, 1] units). The
    numbers: clean_acc (of the noisy inputs), pgd_acc, noise_acc, autoattack_acc and
    autoattack {attacks, steps, n_queries, robust_after} (autoattack_acc None and
    autoattack_note when torchattacks is missing: the protocol was not asked for by
    name), worst_case_acc, and the settings (eps, alpha in both units, steps,
    noise_sigma). The model's mode is the caller's."""
    noise_sigma = _sigma(noise_sigma)
    ident = PixelModel(model, mean=0.0, std=1.0, precision=precision)  # model units, no rescale
    xt = published_noise(x, noise_sigma, seed)
    clean = correct(ident, xt, y, batch_size=batch_size)
    n, cfg = len(x), REFERENCE
    r = _run(ident, xt, y, clean, eps=[cfg["eps"]], headline=cfg["eps"], norm="linf", steps=cfg["steps"],
             alpha=cfg["alpha"], restarts=1, random_start=random_start, clamp=(-1.0, 1.0),
             batch_size=batch_size, seed=seed, noise_draws=noise_draws, progress=progress, tag="reference")
    out = {"eps_model_units": cfg["eps"], "eps_pixels": cfg["eps"] / 2, "alpha_model_units": cfg["alpha"],
           "alpha_pixels": cfg["alpha"] / 2, "steps": cfg["steps"], "norm": "linf", "noise_sigma": noise_sigma,
           "test_time_noise": f"N(0, {noise_sigma:g}^2), seed {seed}" if noise_sigma else None,
           "clean_acc": accuracy(clean), "pgd_acc": accuracy(r["mask"]), "noise_acc": r["noise"] / n}
    aa_count, worst = None, r["mask"]
    if aa.available():
        pm = PixelModel(model, precision=precision)
        m, info = aa.reference_autoattack_correct(pm, to_pixels(xt).clamp(0, 1), y, eps=cfg["eps"] / 2,
                                                  steps=aa_steps, n_queries=aa_queries, clean=clean,
                                                  batch_size=batch_size, seed=seed, progress=progress)
        aa_count, worst = int(m.sum()), worst & m
        info["space"] = "[0, 1] pixels at eps 4/255 (= 8/255 in [-1, 1] units)"
        out["autoattack_acc"], out["autoattack"] = accuracy(m), info
    else:
        out["autoattack_acc"], out["autoattack_note"] = None, aa.MISSING
    out["worst_case_acc"] = accuracy(worst)
    checks = sanity.run_checks(n, int(clean.sum()), r["curve"], pgd=int(r["mask"].sum()),
                               autoattack=aa_count, noise=r["noise"])
    return out, checks, r["adv"]
