"""The settings of an evaluation, as two small frozen objects checked when they are made.

``AttackSpec``: what ``evaluate`` measures on given points (radii, norm, PGD, AutoAttack,
protocol, batch size, precision, seed, the published protocol's budget).
``EvalSpec``: what ``evaluate_checkpoint`` (``ebjdat eval``) measures of a training
checkpoint: its ``attack`` (an AttackSpec, the standard protocol by default: the
published one, whose AutoAttack suite takes minutes on a CPU, is asked for), how many test
points, the generated points and sample grids, OOD sets, calibration, the published FID's
buffer filter and the RobustBench card.

A bad field raises TypeError or ValueError naming it, before any model or data is
touched. ``spec.with_overrides(steps=2, n=16)`` (or ``dataclasses.replace``) returns a
changed copy, checked again. The defaults are those of ``ebjdat eval``'s flags.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from ..validate import SEED_LIMIT
from . import ood
from .buffer_fid import DEFAULT_RATIO, check_ratio
from .wrapper import PRECISIONS

NORMS = ("linf", "l2")
PROTOCOLS = ("standard", "published", "both")
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}
# the published evaluation: eps, alpha in [-1, 1] model units (core.py's module docstring says why)
PUBLISHED_EVAL = {"eps": 8 / 255, "alpha": 1 / 255, "steps": 20, "noise_sigma": 0.03, "aa_steps": 20,
             "aa_queries": 5000}


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


def _flag(name: str, v) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return v


def _choice(name: str, v, choices: tuple) -> str:
    if v not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {v!r}")
    return v


def _seed(v) -> int:
    """A seed in [0, 2**63): torch.Generator.manual_seed and the Philox generator take those."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {v!r}")
    return int(v)


def _alpha(v) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"alpha must be a finite number >= 0 or None (None: eps * max(1/4, 2.5/steps)), "
                         f"got {v!r}")
    return float(v)


def _sigma(v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"published_noise_sigma must be a finite number >= 0 (0: no test-time noise), got {v!r}")
    return float(v)


def _set(spec, **values) -> None:
    """Store checked (normalised) values on a frozen dataclass, from its __post_init__."""
    for name, v in values.items():
        object.__setattr__(spec, name, v)


@dataclass(frozen=True, kw_only=True)
class AttackSpec:
    """How ``evaluate`` attacks a classifier (core.py's module docstring: both protocols).

    eps: a radius in [0, 1] pixel units, or several (the first is the headline: pgd_acc,
    AutoAttack, the adversarial points; all of them and 0 form the PGD curve; a radius of 0
    measures the clean accuracy); None: 8/255
    for linf, 0.5 for l2. Stored as None or a tuple of floats; ``radii`` resolves it.
    alpha: the PGD step (None: eps * max(1/4, 2.5/steps)). restarts: a point is robust
    only if it survives all. autoattack_steps / autoattack_queries: AutoAttack standard's
    iterations and Square queries. protocol: "standard", "published" (the published
    setting alone; its numbers become the top-level ones) or "both". precision "bf16" runs
    the model under autocast. noise_draws: random-noise draws per point (noise_acc).
    published_aa_steps / published_aa_queries: the published suite's iterations and Square
    queries; published_noise_sigma: its test-time noise (0 = off).
    """
    eps: float | tuple[float, ...] | None = None
    norm: str = "linf"
    steps: int = 20
    alpha: float | None = None
    restarts: int = 1
    random_start: bool = True
    autoattack: bool = False
    autoattack_steps: int = 100
    autoattack_queries: int = 5000
    protocol: str = "standard"
    batch_size: int = 256
    precision: str = "fp32"
    seed: int = 0
    noise_draws: int = 16
    published_aa_steps: int = PUBLISHED_EVAL["aa_steps"]
    published_aa_queries: int = PUBLISHED_EVAL["aa_queries"]
    published_noise_sigma: float = PUBLISHED_EVAL["noise_sigma"]

    def __post_init__(self):
        norm = _choice("norm", self.norm, NORMS)
        radii = eps_list(self.eps, norm)
        _set(self, norm=norm, eps=None if self.eps is None else tuple(radii),
             protocol=_choice("protocol", self.protocol, PROTOCOLS),
             precision=_choice("precision", self.precision, PRECISIONS),
             random_start=_flag("random_start", self.random_start), autoattack=_flag("autoattack", self.autoattack),
             alpha=_alpha(self.alpha), seed=_seed(self.seed), published_noise_sigma=_sigma(self.published_noise_sigma))
        for name, minimum in (("steps", 0), ("restarts", 1), ("autoattack_steps", 1), ("autoattack_queries", 1),
                              ("batch_size", 1), ("noise_draws", 1), ("published_aa_steps", 1),
                              ("published_aa_queries", 1)):
            _set(self, **{name: _int(name, getattr(self, name), minimum)})

    @property
    def radii(self) -> list[float]:
        """The radii in [0, 1] pixel units, the headline first (eps resolved for the norm)."""
        return eps_list(self.eps, self.norm)

    def with_overrides(self, **changes) -> AttackSpec:
        """A copy with ``changes`` (field names), checked again."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """What ``evaluate_checkpoint`` measures of a training checkpoint (trained.py).

    attack: the accuracy and robustness settings (the standard protocol by default, as
    ``ebjdat eval``'s --protocol; "published" or "both" add the published one). n: test
    points (the first n of the test split). samples: write the sample grids. n_gen:
    generated points for the energy landscape and FID (None: min(2000, buffer size)).
    sample_steps: SGLD steps of fresh chains. ood_sets: OOD sets (names, or "a,b";
    ood.parse_names), stored as a tuple of names. calibration: ECE and the reliability
    diagram. topk_ratio: the published FID's per-class filter of the replay buffer (a
    fraction in (0, 1) or a whole count). robustbench_entry: the RobustBench-style card.
    """
    attack: AttackSpec = field(default_factory=AttackSpec)
    n: int = 1000
    samples: bool = True
    n_gen: int | None = None
    sample_steps: int = 100
    ood_sets: tuple[str, ...] = ()
    calibration: bool = False
    topk_ratio: float = DEFAULT_RATIO
    robustbench_entry: bool = False

    def __post_init__(self):
        if not isinstance(self.attack, AttackSpec):
            raise TypeError(f"attack must be an AttackSpec, got {type(self.attack).__name__}")
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise ValueError(f"n (test points) must be an integer >= 1, got {self.n!r}")
        _set(self, n=int(self.n), samples=_flag("samples", self.samples),
             n_gen=None if self.n_gen is None else _int("n_gen", self.n_gen, 1),
             sample_steps=_int("sample_steps", self.sample_steps, 0), ood_sets=_ood_names(self.ood_sets),
             calibration=_flag("calibration", self.calibration), topk_ratio=_ratio(self.topk_ratio),
             robustbench_entry=_flag("robustbench_entry", self.robustbench_entry))

    def with_overrides(self, **changes) -> EvalSpec:
        """A copy with ``changes``, checked again: EvalSpec's fields, or AttackSpec's,
        which change ``attack`` (``with_overrides(n=16, steps=2)``)."""
        mine = {f.name for f in dataclasses.fields(self)}
        theirs = {f.name for f in dataclasses.fields(AttackSpec)}
        unknown = sorted(set(changes) - mine - theirs)
        if unknown:
            raise TypeError(f"{', '.join(unknown)}: no such field of EvalSpec or AttackSpec")
        attack = {k: v for k, v in changes.items() if k in theirs}
        if attack:
            changes = {k: v for k, v in changes.items() if k in mine}
            changes["attack"] = changes.get("attack", self.attack).with_overrides(**attack)
        return dataclasses.replace(self, **changes)


def _ood_names(v) -> tuple[str, ...]:
    if not v:   # None, "" or (): no OOD detection
        return ()
    try:
        return tuple(ood.parse_names(v))
    except ValueError as e:
        raise ValueError(f"ood_sets: {e}") from None


def _ratio(v) -> float:
    try:
        return check_ratio(v)
    except ValueError as e:
        raise ValueError(f"topk_ratio: {e}") from None


def checked(spec, kind: type):
    """``spec`` itself when it is a ``kind`` (AttackSpec or EvalSpec), ``kind()`` for None;
    TypeError for anything else."""
    if spec is None:
        return kind()
    if not isinstance(spec, kind):
        hint = " (an EvalSpec's attack settings are its .attack)" if isinstance(spec, EvalSpec) else ""
        raise TypeError(f"spec must be an {kind.__name__} or None, got {type(spec).__name__}{hint}")
    return spec
