"""``evaluate``: clean, PGD and AutoAttack accuracy of a classifier, under the standard
protocol and the published one, with the sanity checks (sanity.py) built in.

Standard protocol: eps in [0, 1] pixel units; the model is attacked through its own
normalisation (:class:`PixelModel`), iterates clamped to [0, 1]; PGD-k with random start
and restarts, a curve over eps (always including eps = 0), AutoAttack "standard"; clean
top-5 accuracy for 100 classes or more.

Published protocol (the published evaluation), all of it:

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
  5000 queries (APGD-T off), worst case over them (autoattack.published_suite). The
  suite runs in torchattacks on [0, 1] pixels at eps 4/255: the same attacks, since each
  is equivariant under the affine map p -> 2p - 1 (step sizes, random starts and Square's
  patches scale with eps; signs, gradient directions, FAB's projections and the box
  [0, 1] -> [-1, 1] carry over);
* worst case: a point is robust only if it survives PGD and the whole suite.

Each protocol's numbers sit under its own key (``standard_protocol``,
``published_protocol``); the top-level keys repeat the headline protocol's. The settings
of both come in one ``AttackSpec`` (spec.py).

The result of ``evaluate``: n, norm, eps (the headline radius in pixels), steps,
restarts, alpha (pixels), precision, protocol; clean_acc, top5_acc (100 classes or
more), zero_grad_frac; pgd_acc, pgd_curve [{eps, acc}] (eps 0 and every radius),
noise_acc, autoattack_acc and autoattack (when run), worst_case_acc (robust to every
attack run); standard_protocol {...} and published_protocol {...} (each protocol's
numbers, labelled with their settings); sanity_checks {name: {passed, detail}} and
sanity (the failed ones; empty when all passed).
"""
from __future__ import annotations

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
from .spec import (
    DEFAULT_EPS,
    NORMS,
    PROTOCOLS,
    PUBLISHED_EVAL,
    AttackSpec,
    checked,
    eps_list,
)
from .wrapper import PixelModel, from_pixels, kept_modes, to_pixels

__all__ = ["DEFAULT_EPS", "NORMS", "PROTOCOLS", "PUBLISHED_EVAL", "TOP5_MIN_CLASSES", "AttackSpec", "eps_list",
           "evaluate", "published_noise", "published_protocol"]

TOP5_MIN_CLASSES = 100


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


def _run(model, x: Tensor, y: Tensor, clean: Tensor, spec: AttackSpec, *, clamp: tuple[float, float],
         progress: bool, tag: str) -> dict:
    """PGD at every radius of ``spec`` plus 0, random noise at the headline (the first),
    on x (N, ...) in the units ``clamp`` bounds: {"curve": [(eps, robust count)] by eps,
    "mask": (N,) robust at the headline, "adv": its adversarial points, "noise": count}."""
    radii = spec.radii
    headline = radii[0]
    curve, head, adv = [], None, None
    for i, e in enumerate(sorted(set([0.0] + radii))):
        # at eps 0 the attack still takes the headline's steps, so that the check "eps 0
        # equals clean" exercises the projection rather than a step of size 0
        a = spec.alpha if spec.alpha is not None else default_alpha(e if e > 0 else headline, spec.steps)
        mask = pgd_correct(model, x, y, eps=e, norm=spec.norm, steps=spec.steps, alpha=a, restarts=spec.restarts,
                           random_start=spec.random_start, clamp=clamp, batch_size=spec.batch_size,
                           seed=spec.seed + i, clean=clean, progress=progress,
                           desc=f"{tag} PGD-{spec.steps} eps {e:.4g}", return_adv=e == headline)
        if e == headline:
            head, adv = mask
            mask = head
        curve.append((e, int(mask.sum())))
    noise = noise_correct(model, x, y, eps=headline, norm=spec.norm, draws=spec.noise_draws, clamp=clamp,
                          batch_size=spec.batch_size, seed=spec.seed, clean=clean)
    return {"curve": curve, "mask": head, "adv": adv, "noise": int(noise.sum())}


def evaluate(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec | None = None, *, progress: bool = False,
             return_adv: bool = False):
    """Accuracy and robustness of ``model`` (which reads [-1, 1] images, returns logits)
    on x (N, C, H, W) in [-1, 1], y (N,) integer labels, as ``spec`` says (None: the
    defaults of AttackSpec: PGD-20 at 8/255 linf, standard protocol).

    Returns the dict the module docstring lists; with ``return_adv`` also the (N, ...)
    PGD adversarial points of the headline radius in [-1, 1] units: (results, x_adv).
    The model's mode is left as it was (attacks run in eval mode).
    """
    spec = checked(spec, AttackSpec)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module returning logits, got {type(model).__name__}")
    _check_data(x, y)
    if spec.autoattack:
        aa.torchattacks_module()  # fail before any work, with the install command
    with kept_modes(model):
        model.eval()  # attacks see running BatchNorm statistics, as at test time
        out, adv = _evaluate(model, x, y.long(), spec, progress)
    return (out, adv) if return_adv else out


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, progress: bool) -> tuple[dict, Tensor]:
    """``evaluate`` on checked inputs, the model in eval mode: (results, adversarial points)."""
    pm = PixelModel(model, precision=spec.precision)
    p = to_pixels(x).clamp(0, 1)
    out = _settings(spec, len(x))
    clean, zero_count, part = _clean(pm, p, y, spec)
    out.update(part)
    checks, adv = {}, None
    if spec.protocol in ("standard", "both"):
        part, std_checks, adv = _standard(pm, p, y, clean, spec, progress)
        out.update(part)
        out["standard_protocol"] = _standard_summary(out, spec)
        checks.update(std_checks)
    if spec.protocol in ("published", "both"):
        ref, ref_checks, ref_adv = published_protocol(model, x, y, spec, progress=progress)
        out["published_protocol"] = ref
        checks.update({"published_" + k: v for k, v in ref_checks.items()})
        if spec.protocol == "published":   # the published numbers are the headline
            out.update(_published_headline(ref))
            adv = ref_adv
    checks["gradients_nonzero"] = sanity.run_checks(len(x), int(clean.sum()), [],
                                                    zero_grad=zero_count)["gradients_nonzero"]
    out["sanity_checks"], out["sanity"] = checks, sanity.failed(checks)
    return out, adv


def _settings(spec: AttackSpec, n: int) -> dict:
    """The settings that head the results (eps and alpha of the headline, in pixels)."""
    eps = spec.radii[0]
    return {"n": n, "norm": spec.norm, "eps": eps, "steps": spec.steps, "restarts": spec.restarts,
            "alpha": default_alpha(eps, spec.steps) if spec.alpha is None else spec.alpha,
            "precision": spec.precision, "protocol": spec.protocol}


def _clean(pm: PixelModel, p: Tensor, y: Tensor, spec: AttackSpec) -> tuple[Tensor, int, dict]:
    """On pixels p (N, ...) in [0, 1]: the (N,) clean-correct mask, how many correct points
    have an exactly zero input gradient, and {clean_acc, top5_acc (100 classes or more),
    zero_grad_frac}."""
    clean = correct(pm, p, y, batch_size=spec.batch_size)
    out = {"clean_acc": accuracy(clean)}
    with torch.no_grad():
        n_classes = int(pm(p[:1]).shape[1])
    if n_classes >= TOP5_MIN_CLASSES:
        out["top5_acc"] = accuracy(topk_correct(pm, p, y, k=5, batch_size=spec.batch_size))
    # only correctly classified points matter: the others need no attack
    zero_count = int((zero_gradient(pm, p, y, batch_size=spec.batch_size) & clean).sum())
    out["zero_grad_frac"] = zero_count / max(int(clean.sum()), 1)
    return clean, zero_count, out


def _standard(pm: PixelModel, p: Tensor, y: Tensor, clean: Tensor, spec: AttackSpec,
              progress: bool) -> tuple[dict, dict, Tensor]:
    """The standard protocol on pixels p (N, ...): ({pgd_acc, pgd_curve, noise_acc,
    autoattack_acc and autoattack when asked, worst_case_acc}, sanity checks, the PGD
    adversarial points of the headline radius in [-1, 1] units)."""
    n, headline = len(p), spec.radii[0]
    r = _run(pm, p, y, clean, spec, clamp=(0.0, 1.0), progress=progress, tag="standard")
    out = {"pgd_acc": accuracy(r["mask"]), "pgd_curve": [{"eps": e, "acc": c / n} for e, c in r["curve"]],
           "noise_acc": r["noise"] / n}
    worst, aa_count = r["mask"], None
    if spec.autoattack:
        m, info = aa.autoattack_correct(pm, p, y, eps=headline, norm=spec.norm, steps=spec.autoattack_steps,
                                        n_queries=spec.autoattack_queries, clean=clean, batch_size=spec.batch_size,
                                        seed=spec.seed, progress=progress)
        out["autoattack_acc"], out["autoattack"] = accuracy(m), info
        worst, aa_count = worst & m, int(m.sum())
    out["worst_case_acc"] = accuracy(worst)
    checks = sanity.run_checks(n, int(clean.sum()), r["curve"], pgd=int(r["mask"].sum()), autoattack=aa_count,
                               noise=r["noise"])
    return out, checks, from_pixels(r["adv"])


def _standard_summary(out: dict, spec: AttackSpec) -> dict:
    """The standard protocol's numbers in ``out``, labelled with its settings."""
    return {"space": "[0, 1] pixels", "eps_pixels": out["eps"], "norm": spec.norm, "steps": spec.steps,
            "alpha_pixels": out["alpha"], "restarts": spec.restarts, "test_time_noise": None,
            **{k: out[k] for k in ("clean_acc", "pgd_acc", "noise_acc", "worst_case_acc", "top5_acc",
                                   "autoattack_acc") if k in out}}


def _published_headline(ref: dict) -> dict:
    """The top-level numbers when the published protocol runs alone (its eps and alpha in pixels)."""
    out = {"clean_acc": ref["clean_acc"], "pgd_acc": ref["pgd_acc"], "eps": ref["eps_pixels"],
           "worst_case_acc": ref["worst_case_acc"], "alpha": ref["alpha_pixels"]}
    if ref.get("autoattack_acc") is not None:
        out["autoattack_acc"] = ref["autoattack_acc"]
    return out


def published_noise(x: Tensor, sigma: float, seed: int) -> Tensor:
    """``clamp(x + sigma z, -1, 1)``, z ~ N(0, I) of x's shape from a CPU generator seeded
    with ``seed`` (device-independent), on x's device; x itself when sigma is 0."""
    if sigma == 0:
        return x
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return (x + sigma * z.to(device=x.device, dtype=x.dtype)).clamp(-1.0, 1.0)


def _published_pgd(spec: AttackSpec) -> AttackSpec:
    """``spec`` with the published PGD: linf, eps 8/255 and alpha 1/255 in [-1, 1] model
    units, 20 steps, one run (random start, seed, batch size and noise draws kept)."""
    return spec.with_overrides(eps=PUBLISHED_EVAL["eps"], norm="linf", steps=PUBLISHED_EVAL["steps"],
                               alpha=PUBLISHED_EVAL["alpha"], restarts=1)


def published_protocol(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec | None = None, *,
                       progress: bool = False) -> tuple[dict, dict, Tensor]:
    """The published evaluation (module docstring) on x (N, ...) in [-1, 1], y (N,):
    test-time noise (``spec.published_noise_sigma``, seeded by ``spec.seed``), PGD-20
    (eps 8/255, alpha 1/255 in [-1, 1] units, projected, clamped to [-1, 1]) and the
    published attack suite (``spec.published_aa_steps`` iterations,
    ``spec.published_aa_queries`` Square queries). Of ``spec`` it reads those, precision,
    random_start, batch_size and noise_draws; eps, norm, steps, alpha, restarts and
    protocol are the standard protocol's and play no part.

    Returns (numbers, sanity checks, the PGD adversarial points in [-1, 1] units). The
    numbers: clean_acc (of the noisy inputs), pgd_acc, noise_acc, autoattack_acc and
    autoattack {attacks, steps, n_queries, robust_after} (autoattack_acc None and
    autoattack_note when torchattacks is missing: the protocol was not asked for by
    name), worst_case_acc, and the settings (eps, alpha in both units, steps,
    noise_sigma). The model's mode is the caller's."""
    spec = checked(spec, AttackSpec)
    sigma, cfg = spec.published_noise_sigma, PUBLISHED_EVAL
    ident = PixelModel(model, mean=0.0, std=1.0, precision=spec.precision)  # model units, no rescale
    xt = published_noise(x, sigma, spec.seed)
    clean = correct(ident, xt, y, batch_size=spec.batch_size)
    r = _run(ident, xt, y, clean, _published_pgd(spec), clamp=(-1.0, 1.0), progress=progress, tag="published")
    out = {"eps_model_units": cfg["eps"], "eps_pixels": cfg["eps"] / 2, "alpha_model_units": cfg["alpha"],
           "alpha_pixels": cfg["alpha"] / 2, "steps": cfg["steps"], "norm": "linf", "noise_sigma": sigma,
           "test_time_noise": f"N(0, {sigma:g}^2), seed {spec.seed}" if sigma else None,
           "clean_acc": accuracy(clean), "pgd_acc": accuracy(r["mask"]), "noise_acc": r["noise"] / len(x)}
    part, suite = _published_suite(model, xt, y, clean, spec, progress)
    out.update(part)
    out["worst_case_acc"] = accuracy(r["mask"] if suite is None else r["mask"] & suite)
    checks = sanity.run_checks(len(x), int(clean.sum()), r["curve"], pgd=int(r["mask"].sum()),
                               autoattack=None if suite is None else int(suite.sum()), noise=r["noise"])
    return out, checks, r["adv"]


def _published_suite(model: nn.Module, xt: Tensor, y: Tensor, clean: Tensor, spec: AttackSpec,
                     progress: bool) -> tuple[dict, Tensor | None]:
    """The published attack suite on the noisy inputs xt (N, ...) in [-1, 1], run by
    torchattacks on [0, 1] pixels at eps 4/255 (module docstring): ({autoattack_acc,
    autoattack}, the (N,) robust mask), or ({autoattack_acc: None, autoattack_note}, None)
    without torchattacks."""
    if not aa.available():
        return {"autoattack_acc": None, "autoattack_note": aa.MISSING}, None
    pm = PixelModel(model, precision=spec.precision)
    m, info = aa.published_autoattack_correct(pm, to_pixels(xt).clamp(0, 1), y, eps=PUBLISHED_EVAL["eps"] / 2,
                                              steps=spec.published_aa_steps, n_queries=spec.published_aa_queries,
                                              clean=clean, batch_size=spec.batch_size, seed=spec.seed,
                                              progress=progress)
    info["space"] = "[0, 1] pixels at eps 4/255 (= 8/255 in [-1, 1] units)"
    return {"autoattack_acc": accuracy(m), "autoattack": info}, m
