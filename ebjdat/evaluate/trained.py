"""A trained run, loaded for evaluation and sampling: ``load_trained`` (model, config,
replay buffer and initial distribution of a checkpoint, no dataset needed) and
``evaluate_checkpoint``, everything ``ebjdat eval`` reports for one checkpoint.

The checkpoint (a file, or a run folder: its newest ``checkpoints/step_N.pt``) gives the
model weights, the TrainConfig (dataset, model, sampler settings), rank 0's replay buffer
and a record of the run's initial distribution (its file beside checkpoints/).
Evaluation uses the first n points of the dataset's test split.

``evaluate_checkpoint(checkpoint, EvalSpec(...), out=..., device=...)`` returns
``evaluate``'s dict (core.py) plus checkpoint, step, variant, dataset, device, out;
energy_generated_from and the energy keys (energy_gap_adv, energy_gap_gen, ...); on the
digits gen_fd and gen_cond_acc of the generated points (``n_gen`` buffer rows, default
min(N_GEN, buffer size), continued by the run's sampler for its sgld_steps) and
gen_fd_fresh, gen_cond_acc_fresh of as many fresh chains from the run's initial
distribution (ebjdat.evaluate.generation; against the whole test split, labels from the
model); fid / is or fid_note (and fid_fresh ... with Inception weights); under protocols
"published" and "both" the published generation metrics (gen_published {ratio, kept, ...},
then gen_fd_published ... on the digits, fid_published + fid_published_backend elsewhere);
ood_auroc {set: {score: AUROC}}, ece {"15", "20"} and robustbench {...} when asked; and
files (the pictures' paths).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import build, progress, validate
from ..data import load_dataset
from ..runs.checkpoint import load_checkpoint, load_init, resolve_checkpoint
from ..runs.config import TrainConfig
from ..validate import resolve_device
from . import buffer_fid, generation, ood, robustbench
from .calibration import evaluate_calibration
from .core import evaluate
from .fid import fid_is_sets
from .landscape import energy_landscape, generate, sample_grids
from .spec import EvalSpec, checked

# generated points by default: a digits FD of 2000 buffer rows varies by about 0.1 between
# draws of rows; of 2000 fresh chains (new starts and noise) by about 1 (16.4 and 17.3 on one
# checkpoint, the closing evaluation's seeds against ebjdat eval's)
N_GEN = 2000


def load_trained(path, *, device="cpu", data_root=None, test_set: bool = False) -> dict:
    """{"path", "step", "config" (TrainConfig), "model" (eval mode, on device), "buffer"
    ((M, C, H, W) replay-buffer samples in [-1, 1], or None), "n_classes", "sample_shape",
    "init" (a callable returning the class-Gaussian state, or None for a uniform init),
    "test_set" (the dataset's test split when ``test_set``, else None)}.

    Checkpoints of earlier versions, which do not record their data's shape, load the test
    split to learn it. ``data_root`` replaces the run's data folder (the run may have
    trained on another machine)."""
    p = resolve_checkpoint(path)
    sd = load_checkpoint(p)
    missing = [k for k in ("config", "model") if k not in sd]
    if missing:
        raise ValueError(f"checkpoint {p} has no {', '.join(missing)}: not an ebjdat training checkpoint")
    try:
        cfg = TrainConfig.from_dict(sd["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {p} holds a config this ebjdat cannot read: {e}") from None
    if data_root is not None:
        cfg = cfg.with_overrides(data_root=str(data_root))
    ds = None
    if test_set or "data" not in sd:
        ds = load_dataset(cfg.dataset, "test", root=cfg.data_root, image_size=cfg.image_size,
                          classes=cfg.classes)
    n_classes = sd["data"]["n_classes"] if "data" in sd else ds.n_classes
    shape = tuple(sd["data"]["sample_shape"]) if "data" in sd else tuple(ds.x.shape[1:])
    model = build.model(cfg, shape[0], n_classes)
    try:
        model.load_state_dict(sd["model"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {p}: its model does not fit its own config ({cfg.variant} on "
                         f"{cfg.dataset}): {str(e).splitlines()[0]}") from None
    buffer = None
    ranks = sd.get("ranks") or []
    if ranks and isinstance(ranks[0], dict) and "buffer" in ranks[0]:
        buffer = ranks[0]["buffer"]["buffer"]  # rank 0's shard: the whole buffer of 1-GPU runs
    check_finite(p, model, buffer)
    record = sd.get("init")
    init = None if record is None or record.get("kind") == "uniform" else (lambda: load_init(p, record))
    return {"path": p, "step": sd.get("step"), "config": cfg, "model": model.to(device).eval(),
            "buffer": buffer, "n_classes": n_classes, "sample_shape": shape, "init": init,
            "test_set": ds if test_set else None}


def check_finite(path: Path, model: nn.Module, buffer: Tensor | None) -> None:
    """ValueError naming the checkpoint when its model weights (BatchNorm statistics too)
    or its replay buffer's rows hold NaN or inf: a diverged run, whose scores and pictures
    would be NaN (or a linear-algebra failure deep in the Fréchet distance)."""
    where = validate.nonfinite(model.state_dict())
    if where:
        raise ValueError(f"checkpoint {path}: its model weights hold non-finite values ({where}): the run "
                         f"diverged by this step; use an earlier checkpoint of the run")
    if buffer is not None and (bad := validate.nonfinite_rows(buffer)):
        raise ValueError(f"checkpoint {path}: its replay buffer holds non-finite values (in {bad} of "
                         f"{len(buffer)} rows): the chains diverged by this step; use an earlier checkpoint "
                         f"of the run")


def load_for_eval(path, *, device="cpu", data_root=None) -> dict:
    """``load_trained`` with the test split (``test_set``)."""
    return load_trained(path, device=device, data_root=data_root, test_set=True)


@dataclass(frozen=True)
class _Loaded:
    """A checkpoint ready for evaluation: what ``load_for_eval`` gives, the first n test
    points x (n, C, H, W) in [-1, 1] and y (n,) on ``device``, and ``out``, the folder for
    its pictures."""
    path: Path
    step: int | None
    cfg: TrainConfig
    model: nn.Module
    test_set: object          # the test split: x (N, C, H, W) in [-1, 1], y (N,), n_classes
    x: Tensor
    y: Tensor
    buffer: Tensor | None     # (M, C, H, W) replay-buffer rows in [-1, 1]
    init: object              # a callable returning the initial distribution's state, or None
    device: torch.device
    out: Path

    @property
    def shape(self) -> tuple:
        return tuple(self.test_set.x.shape[1:])

    @property
    def digits(self) -> bool:
        """Whether the digits network scores its generated points (generation.py)."""
        return generation.applies_to(self.shape, self.test_set.n_classes)


def evaluate_checkpoint(checkpoint, spec: EvalSpec | None = None, *, out=None, device="auto", data_root=None,
                        inception_weights=None, progress: bool = False) -> dict:
    """Everything ``ebjdat eval`` reports for ``checkpoint`` (a file or a run folder), as
    ``spec`` says (None: EvalSpec's defaults, those of the command's flags): ``evaluate``
    on the first spec.n test points, then the generated points, the energy landscape,
    sample grids, FID / IS, OOD detection, calibration and the RobustBench card, in that
    order (the module docstring lists the result's keys). With several radii
    (spec.attack.eps a sequence) the PGD curve is drawn too (robustness.png).

    out: the folder for the pictures (default ``eval_step_N`` beside the run's checkpoints
    folder); device: "auto", "cpu", "cuda", "cuda:N" or a torch.device; data_root: the
    dataset folder, when not where the run had it; inception_weights: the Inception
    weights file of FID / IS (without it FID is skipped with a note); progress: show the
    attacks' progress.
    """
    spec = checked(spec, EvalSpec)
    ck = _load(checkpoint, spec.n, out=out, device=device, data_root=data_root)
    ood_sets = _ood_sets(ck, spec)   # before the long work: a missing dataset fails in seconds
    res, x_adv = evaluate(ck.model, ck.x, ck.y, spec.attack, progress=progress, return_adv=True)
    res.update(checkpoint=str(ck.path), step=ck.step, variant=ck.cfg.variant, dataset=ck.cfg.dataset,
               device=str(ck.device), out=str(ck.out))
    part, x_gen, x_fresh = _generation(ck, spec, inception_weights)
    res.update(part)
    files = _merge(res, _landscape_and_samples(ck, spec, x_adv, x_gen))
    if len(spec.attack.radii) > 1:   # a curve over several radii: robustness.png
        from .robustness import save_robustness_curves
        files.append(save_robustness_curves(ck.out / "robustness.png", res, title=(
            f"accuracy under PGD-{spec.attack.steps} ({spec.attack.norm}), {ck.cfg.variant} step {ck.step}, "
            f"{len(ck.x)} test points")))
    res.update(_fid(ck, x_gen, x_fresh, inception_weights))
    if ood_sets:
        files += _merge(res, _ood_detection(ck, spec, ood_sets))
    if spec.calibration:
        files += _merge(res, _calibration(ck, spec))
    if spec.robustbench_entry:
        res["robustbench"] = robustbench.entry(res, cfg=ck.cfg,
                                               deterministic=robustbench.deterministic_forward(ck.model, ck.x))
    res["files"] = [str(f) for f in files]
    return res


def _merge(res: dict, step: tuple[dict, list]) -> list[Path]:
    """Add a step's (numbers, pictures) numbers to ``res``; return its pictures' paths."""
    numbers, files = step
    res.update(numbers)
    return files


@progress.reported(lambda r, a, k: f"loaded {r.path} (step {r.step}), {len(r.x)} test points on {r.device}")
def _load(checkpoint, n: int, *, out, device, data_root) -> _Loaded:
    """The checkpoint on ``device`` with its first n test points and its pictures' folder."""
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    ck = load_for_eval(checkpoint, device=dev, data_root=data_root)
    ds = ck["test_set"]
    k = min(n, len(ds))
    return _Loaded(path=ck["path"], step=ck["step"], cfg=ck["config"], model=ck["model"], test_set=ds,
                   x=ds.x[:k].to(dev), y=ds.y[:k].to(dev), buffer=ck["buffer"], init=ck["init"], device=dev,
                   out=Path(out) if out is not None else default_out(ck["path"], ck["step"]))


def _ood_sets(ck: _Loaded, spec: EvalSpec) -> dict:
    """{name: (n, C, H, W) OOD points in the run's image shape} of spec.ood_sets."""
    if not spec.ood_sets:
        return {}
    return ood.load_sets(list(spec.ood_sets), ck.shape, len(ck.x), test_x=ck.test_set.x, root=ck.cfg.data_root,
                         seed=spec.attack.seed)


@progress.reported(lambda r, a, k: "generated points and their quality")
def _generation(ck: _Loaded, spec: EvalSpec, inception_weights) -> tuple[dict, Tensor, Tensor | None]:
    """(numbers, x_gen, x_fresh). x_gen: the buffer's chains continued by the run's sampler
    (fresh chains from uniform noise without a buffer); x_fresh: as many fresh chains from
    the run's initial distribution, drawn on the digits or for FID with Inception weights
    (else None). The numbers: energy_generated_from, on the digits the FD and conditional
    accuracy of both, and the published generation metrics (protocols published, both)."""
    bs, seed = spec.attack.batch_size, spec.attack.seed
    x_gen, source = _continued_chains(ck, spec)
    out, x_fresh = {"energy_generated_from": source}, None
    if ck.digits or inception_weights is not None:
        starts = generation.fresh_starts(ck.init() if ck.init else None, len(x_gen), ck.shape, seed, ck.device)
        x_fresh = generate(ck.model, ck.cfg, starts, seed=seed + 1, batch_size=bs)
    if ck.digits:   # digits: FD and the model's labels checked
        out.update(generation.labelled_metrics(ck.model, x_gen, ck.test_set.x, batch_size=bs))
        out.update(generation.labelled_metrics(ck.model, x_fresh, ck.test_set.x, suffix="_fresh", batch_size=bs))
    if spec.attack.protocol in ("published", "both"):
        out.update(_published_generation(ck.model, ck.buffer, ck.x, ck.test_set.x, digits=ck.digits,
                                         ratio=spec.topk_ratio, inception_weights=inception_weights,
                                         device=ck.device, batch_size=bs))
    return out, x_gen, x_fresh


def _continued_chains(ck: _Loaded, spec: EvalSpec) -> tuple[Tensor, str]:
    """(x_gen (m, C, H, W), where it came from): spec.n_gen (default min(N_GEN, buffer
    size)) random buffer rows continued for the run's sgld_steps, or without a buffer
    spec.n_gen (default N_GEN) chains from U(-1, 1) run for spec.sample_steps."""
    buf, bs, seed = ck.buffer, spec.attack.batch_size, spec.attack.seed
    g = torch.Generator().manual_seed(seed)
    if buf is not None and len(buf):
        m = min(spec.n_gen or N_GEN, len(buf))
        x0, steps = buf[torch.randperm(len(buf), generator=g)[:m]].to(ck.device), None
    else:
        m = spec.n_gen or N_GEN
        x0, steps = (torch.rand((m, *ck.shape), generator=g) * 2 - 1).to(ck.device), spec.sample_steps
    x_gen = generate(ck.model, ck.cfg, x0, n_steps=steps, batch_size=bs, seed=seed)
    return x_gen, "buffer" if steps is None else f"uniform noise, {spec.sample_steps} steps"


def _landscape_and_samples(ck: _Loaded, spec: EvalSpec, x_adv: Tensor, x_gen: Tensor) -> tuple[dict, list]:
    """The energies of the test, adversarial and generated points (energy.png) and, with
    spec.samples, the sample grids: (numbers, pictures)."""
    a = spec.attack
    png = ck.out / "energy.png"
    numbers = energy_landscape(ck.model, ck.x, x_adv, x_gen, batch_size=a.batch_size, precision=a.precision,
                               png=png, title=f"E(x) = -logsumexp logits, {ck.cfg.variant} step {ck.step}")
    files = [png]
    if spec.samples:
        files += sample_grids(ck.model, ck.cfg, ck.out, n_classes=ck.test_set.n_classes, shape=ck.shape,
                              buffer=ck.buffer, fresh_steps=spec.sample_steps, batch_size=a.batch_size, seed=a.seed)
    return numbers, files


@progress.reported(lambda r, a, k: "FID / IS" if any(key.startswith("fid") and "note" not in key for key in r)
                   else "FID / IS: skipped (see the report)")
def _fid(ck: _Loaded, x_gen: Tensor, x_fresh: Tensor | None, inception_weights) -> dict:
    """FID / IS of the generated points against the test points (and of the fresh chains,
    with Inception weights), or the note saying why not."""
    sets = {"": x_gen} if x_fresh is None or inception_weights is None else {"": x_gen, "_fresh": x_fresh}
    return fid_is_sets(sets, ck.x, inception_weights=inception_weights, device=ck.device)


@progress.reported(lambda r, a, k: "OOD detection")
def _ood_detection(ck: _Loaded, spec: EvalSpec, sets: dict) -> tuple[dict, list]:
    """OOD detection of the test points against ``sets`` (ood.py): (numbers, pictures)."""
    numbers = ood.ood_detection(ck.model, ck.x, sets, batch_size=spec.attack.batch_size, out_dir=ck.out)
    files = numbers.pop("files")
    return numbers, files


@progress.reported(lambda r, a, k: "calibration")
def _calibration(ck: _Loaded, spec: EvalSpec) -> tuple[dict, list]:
    """ECE and the reliability diagram of the test points (calibration.py): (numbers, pictures)."""
    png = ck.out / "reliability.png"
    numbers = evaluate_calibration(ck.model, ck.x, ck.y, batch_size=spec.attack.batch_size, png=png,
                                   title=f"reliability, {ck.cfg.variant} step {ck.step}, {len(ck.x)} test points")
    return numbers, [png]


@progress.reported(lambda r, a, k: "published generation metrics (filtered buffer)")
def _published_generation(model, buf, x_real, x_test, *, digits: bool, ratio: float, inception_weights, device,
                          batch_size: int) -> dict:
    """The published generation metrics: the replay buffer after the per-class top-k
    confidence filter, scored with the digits FD (digits) or FID (buffer_fid.py)."""
    if buf is None or not len(buf):
        return {"gen_published": {"note": "the checkpoint holds no replay buffer: the published generation "
                                          "metrics score the buffer"}}
    kept, info = buffer_fid.filter_buffer(model, buf, ratio=ratio, batch_size=batch_size)
    out = {"gen_published": {**info, "source": "replay buffer, per-class top-k confidence filter"}}
    if len(kept) < 2:
        out["gen_published"]["note"] = f"only {len(kept)} buffer rows kept: no Fréchet distance"
    elif digits:
        out.update(generation.labelled_metrics(model, kept.to(device), x_test, suffix="_published",
                                               batch_size=batch_size))
    else:
        out.update(buffer_fid.published_fid(kept.to(device), x_real, inception_weights=inception_weights,
                                               device=device))
    return out


def default_out(p: Path, step) -> Path:
    run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run / f"eval_step_{step if step is not None else 'unknown'}"
