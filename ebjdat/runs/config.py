"""TrainConfig: every setting of an EB-JDAT run, with a preset per JEM variant.

``TrainConfig.preset(variant, **overrides)`` gives the published code's numbers for that
variant (CIFAR-10, WRN-28-10); on the embedded "digits" data the schedule, buffer and
model shrink to fit a few CPU minutes (``DIGITS``). A TOML file and CLI flags override
fields by name (``TrainConfig.from_toml``, ``with_overrides``).

Every setting is checked when a config is made (``validated``): its type, its choices
(CHOICES), its range (RANGES, one row per numeric setting) and the settings that depend on
each other; the message names the setting as the user gave it (a TOML file's key after the
file's path, or a flag through ``key_names``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field, fields

from ..objectives import METRICS, TERMS
from ..validate import SEED_LIMIT

VARIANTS = ("jem", "jempp", "sadajem")
OBJECTIVES = ("ebjdat", "standard", "at", "jem")
MODES = ("fast", "published")
PRECISIONS = ("auto", "fp32", "bf16")
ADV_OBJECTIVES = ("ebjdat", "energy", "ce")


@dataclass
class TrainConfig:
    """One EB-JDAT run. Units: images in [-1, 1]; eps/alpha of the training attack in
    those units (ebjdat/published.py), ``eval_eps`` in [0, 1] pixel units."""

    variant: str = "sadajem"
    objective: str = "ebjdat"          # "standard", "at", "jem": OBJECTIVE_PRESETS' terms switched off
    mode: str = "fast"                 # "published": the published loop's math and waste
    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None      # None: the dataset's own
    classes: int | str | list[int] | None = None   # a class subset: first k, a file or a list of indices
    model: str = "auto"                # "auto" (small_cnn on digits, else wrn), "wrn", "small_cnn"
    depth: int = 28
    width: int = 10
    norm: str | None = "batch"
    # batches and buffer
    batch_size: int = 64               # unlabelled x_pd batch (and SGLD batch)
    label_batch_size: int = 128        # labelled batch (and attack batch)
    holdout: int = 0                   # training images never trained on (JEM++: 5,000)
    pd_augment: bool = True            # crop/flip x_pd (SADA-JEM's code does not)
    buffer_size: int = 10000
    reinit_freq: float = 0.05
    refresh_every: int = 0             # > 0: an extra sampler call on the buffer every N iterations
    init: str = "class_gaussian"       # "uniform" over [-1, 1] or "class_gaussian"
    # generative sampler
    sgld_steps: int = 10
    sgld_step_size: float = 1.0
    sgld_noise: float = 0.0
    sgld_clip: float | None = 1.0
    sgld_clamp: bool = True            # clamp samples to [-1, 1]
    sgld_inner: int = 1                # > 1: JEM++'s PYLD inner steps
    sampler_train_mode: bool = True    # BatchNorm statistics updated while sampling
    pd_first: bool = True              # x_pd's train-mode forward before the sampler (JEM++'s, SADA-JEM's code; JEM's after)
    # adversarial sampler
    pgd_steps: int = 5
    pgd_eps: float = 8 / 255
    pgd_alpha: float = 2 / 255
    pgd_project: bool = False          # the published code does not project
    adv_objective: str = "ebjdat"      # "ebjdat" (the code's), "energy" (the paper's text), "ce"
    adv_micro_batch: int = 2           # published mode's Python loop over micro-batches
    # loss weights: p(x), p(y|x), p(x, x_adv), p(y|x_adv) (ebjdat.objectives.TERMS)
    w_px: float = 1.0
    w_pyx: float = 1.0
    w_pxadv: float = 0.1
    w_pyxadv: float = 1.0
    loss_bound: float = 1e5
    bound_on: str = "loss"             # what loss_bound watches: "loss" or a term, "l_px" (SADA-JEM)
    # optimiser and schedule
    optimizer: str = "sgd"             # "sgd" (momentum) or "adam"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    sam_rho: float = 2.0               # 0: no SAM; adaptive SAM when rho >= 0.5
    warmup_iters: int = 1000
    epochs: int = 200
    decay_epochs: list[int] = field(default_factory=lambda: [50, 100, 150])
    decay_rate: float = 0.2
    sigma: float = 0.03                # input noise std
    noise_on: str = "pd"               # "all" (x_pd and labelled), "pd" (x_pd only)
    # run
    precision: str = "auto"            # fast mode: bf16 autocast where the device has bf16 units
    compile: bool = False
    cuda_graph: bool = True            # fast mode on a GPU: graph-captured sampler/attack
    channels_last: bool = True         # fast mode: NHWC model, chains and attack inputs
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None         # CPU intra-op threads; None: chosen by the trainer
    seed: int = 0
    out: str | None = None
    steps: int | None = None           # total iterations; None: epochs * steps per epoch
    ckpt_every: int = 500
    log_every: int = 50
    eval_eps: float = 8 / 255
    eval_pgd_steps: int = 10

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, variant: str = "sadajem", *, key_names: dict | None = None, **overrides) -> "TrainConfig":
        """The published settings of ``variant``, then DIGITS' (and DIGITS_VARIANT's) on the
        digits data, then the objective's (OBJECTIVE_PRESETS, and DIGITS_OBJECTIVE's on the
        digits), then overrides. key_names:
        {setting: the name its message gives it} for settings the user gave another way
        (a flag: {"steps": "--steps"}; a file: {"steps": "run.toml: steps"})."""
        check_names(overrides)
        try:
            if variant not in VARIANTS:
                raise ConfigError("variant", f" must be one of {VARIANTS}, got {variant!r}")
            objective = overrides.get("objective", cls.objective)
            if objective not in OBJECTIVES:
                raise ConfigError("objective", f" must be one of {OBJECTIVES}, got {objective!r}")
        except ConfigError as e:
            raise e.named(key_names) from None
        values = dict(PRESETS[variant])
        if overrides.get("dataset", cls.dataset) == "digits":
            values.update(DIGITS)
            values.update(DIGITS_VARIANT.get(variant, {}))
        values.update(OBJECTIVE_PRESETS[objective])
        if overrides.get("dataset", cls.dataset) == "digits":
            values.update(DIGITS_OBJECTIVE.get(objective, {}))
        values.update(overrides)
        values["variant"] = variant
        return cls(**values).validated(key_names)

    def with_overrides(self, *, key_names: dict | None = None, **overrides) -> "TrainConfig":
        """A copy with fields replaced (unknown names raise ValueError); a bad value's
        message names the setting as ``key_names`` does (e.g. {"steps": "--steps"})."""
        check_names(overrides)
        return dataclasses.replace(self, **overrides).validated(key_names)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config stored in a checkpoint or summary (fields added since take their
        defaults, except pd_first: runs stored without it sampled before x_pd's forward;
        mode "reference" is the published mode's earlier name)."""
        check_names(values)
        if values.get("mode") == "reference":   # the published mode's earlier name: the same computation
            values = {**values, "mode": "published"}
        return cls(**{"pd_first": False, **values}).validated()

    @classmethod
    def from_toml(cls, path: str, *, key_names: dict | None = None, **overrides) -> "TrainConfig":
        """Fields from a TOML file (top-level keys; ``variant`` picks the preset first), then
        ``overrides``. A bad value's message begins "<path>: <key>" for the file's keys and
        names an override by ``key_names`` (e.g. {"steps": "--steps"}), else by its key."""
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {path} is not valid TOML: {e}") from None
        try:
            check_names(values)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        names = {key: f"{path}: {key}" for key in values if key not in overrides}
        names.update(key_names or {})
        values.update(overrides)
        return cls.preset(values.pop("variant", "sadajem"), key_names=names, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ checks
    def validated(self, key_names: dict | None = None) -> "TrainConfig":
        """Self, after checking every field's type and value; raises ValueError (ConfigError)
        naming the setting: by ``key_names`` (a flag, a file's key) where given, else by its name."""
        try:
            self._check()
        except ConfigError as e:
            raise e.named(key_names) from None
        return self

    def _check(self) -> None:
        """Types, then choices, then RANGES, then the checks that join two settings."""
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
        if self.mode == "reference":
            raise ConfigError("mode", " 'reference' is now called 'published' (the published code's "
                                      "computation): use mode = \"published\" (--mode published)")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f" must be one of {allowed}, got {getattr(self, name)!r}")
        for name, rule in RANGES.items():
            rule.check(name, getattr(self, name))
        for term in TERMS:   # the objective's weights (ebjdat.objectives.TERMS)
            w = getattr(self, term.weight)
            if not (math.isfinite(w) and w >= 0):
                raise ConfigError(term.weight, f" (the weight of {term.name}) must be a finite number >= 0, "
                                               f"got {w!r}")
        if not any(getattr(self, t.weight) for t in TERMS):
            raise ValueError(f"every weight ({', '.join(t.weight for t in TERMS)}) is 0: nothing to train; "
                             f"give at least one a value > 0")
        self._check_joint()

    def _check_joint(self) -> None:
        """The settings whose allowed values depend on another's, or on more than a range."""
        if self.decay_epochs != sorted(set(self.decay_epochs)) or any(e < 0 for e in self.decay_epochs):
            raise ConfigError("decay_epochs", f" must be increasing epoch numbers >= 0, got {self.decay_epochs} "
                                              f"(the epochs at which lr is multiplied by decay_rate; [] for none)")
        if (self.depth - 4) % 6:
            raise ConfigError("depth", f" must be 6n + 4 (10, 16, 22, 28, ...), got {self.depth} "
                                       f"(the WideResNet's depth: n blocks per stage)")
        if self.buffer_size < self.batch_size:
            raise ConfigError("buffer_size", f" must be >= batch_size ({self.batch_size}), got {self.buffer_size} "
                                             f"(each iteration draws batch_size chains from the buffer); raise "
                                             f"buffer_size or lower batch_size")
        if self.mode == "published" and self.precision == "bf16":
            raise ConfigError("precision", f" {self.precision!r} is a fast-mode choice; published mode runs the "
                                           f"published fp32 computation (use mode='fast' for bf16)")
        if isinstance(self.classes, int) and self.classes < 1:
            raise ConfigError("classes", f" must be >= 1 (the first k classes), got {self.classes}")
        if isinstance(self.classes, (str, list)) and not self.classes:
            raise ConfigError("classes", " must not be empty: give a count, a file of class indices or a list "
                                         "of them")


class ConfigError(ValueError):
    """A setting's bad value. ``key``: the setting; the message is the name the user gave
    it (``named``: a flag, a file's key; else the key) followed by ``rest``."""

    def __init__(self, key: str, rest: str, name: str | None = None):
        self.key, self.rest = key, rest
        super().__init__(f"{name or key}{rest}")

    def named(self, key_names: dict | None) -> ConfigError:
        """The same error, naming the setting as ``key_names`` does (unchanged when it has no entry)."""
        return ConfigError(self.key, self.rest, (key_names or {}).get(self.key))


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: finite, lo <= v (lo < v when lo_open), v <= hi
    (v < hi when hi_open), and None where the field's type allows it. ``why`` says what the
    setting is or what to do, for the message."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""
    hi_text: str | None = None   # hi as the message writes it (2**63 rather than its digits)

    def holds(self, v) -> bool:
        if not isinstance(v, int) and not math.isfinite(v):   # an int of any size is finite
            return False
        lo_ok = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        hi_ok = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return lo_ok and hi_ok

    def text(self, real: bool) -> str:
        """">= 1 and <= 1024", "a finite number > 0", ..."""
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi_text or format(self.hi, 'g')}")
        return ("a finite number " if real else "") + " and ".join(parts)

    def check(self, key: str, v) -> None:
        """ConfigError naming ``key`` unless v (already of the field's type) is None or in range."""
        if v is None or self.holds(v):
            return
        kinds = FIELD_TYPES[key]
        none = " or none" if "None" in kinds else ""
        raise ConfigError(key, f" must be {self.text('float' in kinds)}{none}, got {v!r} ({self.why})")


MAX_THREADS = 1024    # more CPU threads than this only spin and wait on any machine
CHOICES = {"variant": VARIANTS, "objective": OBJECTIVES, "mode": MODES, "precision": PRECISIONS,
           "adv_objective": ADV_OBJECTIVES, "optimizer": ("sgd", "adam"),
           "init": ("uniform", "class_gaussian"), "noise_on": ("all", "pd"),
           "model": ("auto", "wrn", "small_cnn"), "norm": (None, "none", "batch"),
           "bound_on": METRICS}
# every numeric setting's range (the loss weights are TERMS', classes and decay_epochs are
# checked in _check_joint); units as TrainConfig's docstring says
RANGES = {
    "image_size": Range(1, why="the image side in pixels; leave it unset for the dataset's own"),
    "depth": Range(4, why="the WideResNet's depth, 6n + 4: 10, 16, 22, 28, ..."),
    "width": Range(1, why="the WideResNet's widening factor k: stages of 16k, 32k and 64k channels"),
    "batch_size": Range(1, why="unlabelled images (and SGLD chains) per iteration"),
    "label_batch_size": Range(1, why="labelled images per iteration"),
    "holdout": Range(0, why="training images held out; 0 for none"),
    "buffer_size": Range(1, why="chains in the replay buffer"),
    "reinit_freq": Range(0, 1, why="the probability a drawn chain restarts from the initial distribution"),
    "refresh_every": Range(0, why="iterations between extra sampler calls on the buffer; 0 for none"),
    "sgld_steps": Range(0, why="SGLD steps per iteration"),
    "sgld_step_size": Range(0, why="the SGLD step on the energy's gradient, in [-1, 1] image units"),
    "sgld_noise": Range(0, why="the SGLD noise's standard deviation; 0 for none"),
    "sgld_clip": Range(0, lo_open=True, why="the bound on each gradient entry of an SGLD step; none for no clip"),
    "sgld_inner": Range(1, why="SGLD steps per chain update; > 1: JEM++'s PYLD inner steps"),
    "pgd_steps": Range(0, why="the training attack's steps"),
    "pgd_eps": Range(0, 2, why="the training attack's radius in [-1, 1] image units (8/255 pixels: 16/255)"),
    "pgd_alpha": Range(0, 2, why="the training attack's step in [-1, 1] image units"),
    "adv_micro_batch": Range(1, why="published mode's micro-batches of the attack"),
    "loss_bound": Range(0, lo_open=True, why="a loss above this stops the run as diverged"),
    "lr": Range(0, lo_open=True, why="the learning rate; a negative one climbs the loss"),
    "momentum": Range(0, 1, why="SGD's momentum"),
    "weight_decay": Range(0, why="the optimizer's weight decay; 0 for none"),
    "sam_rho": Range(0, why="SAM's radius; 0 for no SAM"),
    "warmup_iters": Range(0, why="iterations of linear learning-rate warm-up; 0 for none"),
    "epochs": Range(1, why="epochs of the labelled data"),
    "decay_rate": Range(0, 1, lo_open=True, why="the factor of lr at each of decay_epochs; 1 for no decay"),
    "sigma": Range(0, why="the input noise's standard deviation; 0 for none"),
    "threads": Range(1, MAX_THREADS, why="CPU threads; leave it unset for the trainer's choice"),
    "seed": Range(0, SEED_LIMIT, hi_open=True, hi_text="2**63", why="the random seed"),
    "steps": Range(1, why="total iterations; unset: epochs times the iterations of an epoch"),
    "ckpt_every": Range(1, why="iterations between checkpoints"),
    "log_every": Range(1, why="iterations between rows of metrics.jsonl"),
    "eval_eps": Range(0, 1, why="the closing evaluation's PGD radius in [0, 1] pixel units, e.g. 8/255"),
    "eval_pgd_steps": Range(0, why="the closing evaluation's PGD steps"),
}


# ---------------------------------------------------------------------- checks of names and types
_NAMES = {f.name for f in fields(TrainConfig)}
FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}
_ALIASES = {"learning_rate": "lr", "num_steps": "steps", "iterations": "steps", "output": "out"}
_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_names(values: dict) -> None:
    """ValueError for keys that are no TrainConfig field, suggesting the nearest names."""
    for key in values:
        if key not in _NAMES:
            near = [_ALIASES[key]] if key in _ALIASES else difflib.get_close_matches(str(key), sorted(_NAMES), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else "; `ebjdat train --help` lists the settings"
            raise ValueError(f"unknown setting {key!r}{hint}")


def check_type(name: str, value, annotation: str) -> None:
    """ValueError unless value fits the field's annotation ("int", "float | None",
    "list[int]", ...). bool is no int here, though Python says it is; ints pass as floats."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return
    for kind in kinds:
        if kind == "list[int]":
            if isinstance(value, list) and all(type(v) is int for v in value):
                return
        elif kind in _KINDS and isinstance(value, _KINDS[kind]) and (kind == "bool" or type(value) is not bool):
            return
    want = " or ".join({"list[int]": "a list of integers", "int": "an integer", "float": "a number",
                        "bool": "true or false", "str": "a string", "None": "none"}[k] for k in kinds)
    raise ConfigError(name, f" must be {want}, got {type(value).__name__} {value!r}")


# what ``ebjdat train --resume`` may change: how long, where and how fast the same run goes on
RESUMABLE = ("steps", "epochs", "device", "log_every", "ckpt_every", "out", "data_root", "backend",
             "compile", "channels_last", "threads")


def check_resume(stored: TrainConfig, overrides: dict) -> None:
    """ValueError naming the first override that would change what the run computes."""
    check_names(overrides)
    for key, value in overrides.items():
        if key not in RESUMABLE and getattr(stored, key) != value:
            raise ValueError(
                f"--resume cannot change {key} ({getattr(stored, key)!r} in the checkpoint, {value!r} "
                f"given): that would be another run; start one with --out <new folder>, or resume "
                f"changing only {', '.join(RESUMABLE)}")


# the published code's settings, per variant (CIFAR-10, WRN-28-10)
PRESETS = {
    "jem": dict(norm=None, batch_size=128, label_batch_size=128, init="uniform",
                sgld_steps=10, sgld_step_size=1.0, sgld_noise=0.01, sgld_clip=None,
                sgld_clamp=False, sgld_inner=1, sampler_train_mode=False, pd_first=False,
                w_px=0.45, w_pyx=0.45, w_pxadv=0.05, w_pyxadv=0.45, loss_bound=1e8, refresh_every=100,
                optimizer="adam", lr=1e-5, weight_decay=0.0, sam_rho=0.0, epochs=200,
                decay_epochs=[160, 180], decay_rate=0.3, noise_on="all"),
    "jempp": dict(norm="batch", batch_size=64, label_batch_size=64, init="class_gaussian",
                  sgld_steps=10, sgld_step_size=0.2, sgld_noise=0.0, sgld_clip=1.0,
                  sgld_clamp=True, sgld_inner=5, sampler_train_mode=True, pd_first=True,
                  w_px=1.0, w_pyx=1.0, w_pxadv=0.1, w_pyxadv=1.0, loss_bound=1e8, refresh_every=100,
                  holdout=5000,
                  optimizer="sgd", lr=0.01, weight_decay=4e-4, sam_rho=0.0, epochs=150,
                  decay_epochs=[40, 80, 120], decay_rate=0.2, noise_on="all"),
    "sadajem": dict(norm="batch", batch_size=64, label_batch_size=128, init="class_gaussian",
                    sgld_steps=10, sgld_step_size=1.0, sgld_noise=0.0, sgld_clip=1.0,
                    sgld_clamp=True, sgld_inner=1, sampler_train_mode=True, pd_first=True,
                    w_px=1.0, w_pyx=1.0, w_pxadv=0.1, w_pyxadv=1.0, loss_bound=1e5, bound_on="l_px",
                    pd_augment=False,
                    optimizer="sgd", lr=0.01, weight_decay=5e-4, sam_rho=2.0, epochs=200,
                    decay_epochs=[50, 100, 150], decay_rate=0.2, noise_on="pd"),
}
# the embedded digits data: 1438 training images of 8x8, about 11 labelled batches an epoch;
# none are held out (JEM++'s 5,000 exceed the data). The digits have no augmentation at all
# (ebjdat.data.datasets.load_digits: pad 0, no flip), so pd_augment changes nothing here.
# With one-pixel reflect-padded shifts of the labelled batch and x_pd the buffer's digits
# FD was 27; with shifts of the labelled batch only (x_pd plain, as in SADA-JEM's code) the
# p(x, x_adv) term learned to tell shifted from plain digits and ran away (-55 by step
# 1250); with neither, the buffer reaches 5 (docs/generation-digits.md).
# The digits' attack budget, 36/255 in [0, 1] pixels (2.25 of their 1/16 grey levels): the
# smallest radius of the trade-off's grid where standard training's AutoAttack accuracy
# falls to 20 % or below (mean of three seeds: 22.5 % at 32/255, 12.7 % at 36/255;
# docs/tradeoff.md); at CIFAR's 8/255, half a grey level, even standard training keeps 93 %.
# The training attacks of EB-JDAT and AT and the closing evaluation use it; the training
# attack's radius and step are in [-1, 1] units (doubled), the step a quarter of the
# radius as the published 2/255 in 8/255.
DIGITS_EPS = 36 / 255
_DIGITS_ATTACK = dict(pgd_eps=2 * DIGITS_EPS, pgd_alpha=2 * DIGITS_EPS / 4)
DIGITS = dict(model="small_cnn", holdout=0, buffer_size=2000, warmup_iters=100, epochs=120,
              decay_epochs=[90], ckpt_every=400, log_every=50, eval_eps=DIGITS_EPS, **_DIGITS_ATTACK)
# SADA-JEM's sampler on the digits (measured: docs/generation-digits.md): its CIFAR step of 1.0
# moves an 8x8 digit's pixels by up to half their range per step, the chains saturate and
# the p(x) term drifts without bound (loss -17.6 at step 660); a step of 0.05 and a model
# without BatchNorm (whose train-mode batch statistics let speckled sample batches score as
# data: digits FD 145 with it, 39 without) give recognisable samples.
DIGITS_VARIANT = {"sadajem": dict(norm=None, sgld_step_size=0.05)}

# The objectives EB-JDAT is measured against, as the same trainer with terms switched off
# (a weight of 0 also skips the work behind its term: no SGLD without w_px, no attack
# without the adversarial weights). "at" is PGD adversarial training at the standard
# strength: cross-entropy on x_adv only, 7 projected steps of 2/255 in an 8/255 box (pixel
# units; doubled in the model's [-1, 1] units).
OBJECTIVE_PRESETS = {
    "ebjdat": {},
    "standard": dict(w_px=0.0, w_pyx=1.0, w_pxadv=0.0, w_pyxadv=0.0),
    "at": dict(w_px=0.0, w_pyx=0.0, w_pxadv=0.0, w_pyxadv=1.0, adv_objective="ce", pgd_project=True,
               pgd_eps=16 / 255, pgd_alpha=4 / 255, pgd_steps=7),
    "jem": dict(w_pxadv=0.0, w_pyxadv=0.0),
}
# on the digits AT trains at their budget (DIGITS_EPS), as EB-JDAT does
DIGITS_OBJECTIVE = {"at": _DIGITS_ATTACK}
