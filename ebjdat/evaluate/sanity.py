"""Sanity checks of a robustness evaluation (Carlini et al. 2019, "On evaluating
adversarial robustness"; Athalye et al. 2018, "Obfuscated gradients"), run on every
evaluation and reported with the numbers.

Each check compares counts of robust points among the same n test points. Attacks with
random starts are noisy, so an ordering that must hold in expectation may be broken by
a point or two; ``tolerance(n)`` allows ``max(1, ceil(n / 200))`` points (0.5 %). A
failure means the numbers should not be trusted: usually gradients that do not lead
anywhere (masked, quantised, saturated inputs), a broken attack, or too few steps.
"""
from __future__ import annotations

import itertools
import math

ZERO_GRAD_LIMIT = 0.05  # fraction of clean-correct points with a zero input gradient


def tolerance(n: int) -> int:
    """Points of slack for orderings that hold in expectation: max(1, ceil(n / 200))."""
    return max(1, math.ceil(n / 200))


def _pct(count: int, n: int) -> str:
    return f"{100.0 * count / n:.2f} %" if n else "n/a"


def run_checks(n: int, clean: int, curve: list[tuple[float, int]], *, pgd: int | None = None,
               autoattack: int | None = None, noise: int | None = None,
               zero_grad: int | None = None) -> dict:
    """{check name: {"passed": bool, "detail": str}} for the checks the inputs allow.

    n: points evaluated; clean: points correct clean; curve: [(eps, robust count)] of
    PGD sorted by eps (must contain eps = 0 for that check); pgd / autoattack / noise:
    robust counts at the headline eps under PGD, AutoAttack and random noise; zero_grad:
    clean-correct points whose input gradient is exactly zero.
    """
    tol = tolerance(n)
    out = {}

    def add(name, passed, detail):
        out[name] = {"passed": bool(passed), "detail": detail}

    zero = [c for e, c in curve if e == 0]
    if zero:
        add("eps0_equals_clean", zero[0] == clean,
            f"PGD at eps 0 leaves {_pct(zero[0], n)} correct, clean accuracy {_pct(clean, n)} "
            "(must be equal: an eps-0 attack cannot move a point)")
    rises = [(e0, c0, e1, c1) for (e0, c0), (e1, c1) in itertools.pairwise(curve) if c1 > c0 + tol]
    if len(curve) > 1:
        add("monotone_in_eps", not rises,
            "robust accuracy never rises with eps" if not rises else
            "; ".join(f"rises from {_pct(c0, n)} at eps {e0:.4g} to {_pct(c1, n)} at eps {e1:.4g}"
                      for e0, c0, e1, c1 in rises) + f" (tolerance {tol} point(s))")
    if pgd is not None and autoattack is not None:
        add("autoattack_le_pgd", autoattack <= pgd + tol,
            f"AutoAttack {_pct(autoattack, n)} vs PGD {_pct(pgd, n)} on the same points "
            f"(AutoAttack must not be weaker; tolerance {tol} point(s))")
    if pgd is not None and noise is not None:
        add("pgd_beats_noise", pgd <= noise + tol,
            f"PGD {_pct(pgd, n)} vs random noise of the same size {_pct(noise, n)} (a gradient attack "
            f"weaker than noise has useless gradients; tolerance {tol} point(s))")
    if zero_grad is not None:
        frac = zero_grad / clean if clean else 0.0
        add("gradients_nonzero", frac <= ZERO_GRAD_LIMIT,
            f"{zero_grad} of {clean} correctly classified points ({100 * frac:.1f} %) have an exactly "
            f"zero or non-finite input gradient (limit {100 * ZERO_GRAD_LIMIT:.0f} %): gradient attacks "
            "cannot move them (masked or saturated gradients)")
    return out


def failed(checks: dict) -> list[str]:
    """["name: detail"] of the checks that failed (empty when all passed)."""
    return [f"{k}: {v['detail']}" for k, v in checks.items() if not v["passed"]]
