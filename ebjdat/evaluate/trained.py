"""A trained run, loaded for evaluation and sampling: ``load_trained`` (model, config,
replay buffer and initial distribution of a checkpoint, no dataset needed) and
``evaluate_checkpoint``, everything ``ebjdat eval`` reports for one checkpoint.

The checkpoint (a file, or a run folder: its newest ``checkpoints/step_N.pt``) gives the
model weights, the TrainConfig (dataset, model, sampler settings), rank 0's replay buffer
and a record of the run's initial distribution (its file beside checkpoints/).
Evaluation uses the first n points of the dataset's test split.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import build
from ..checks import resolve_device
from ..data import load_dataset
from ..train.checkpoint import load_checkpoint, load_init, resolve_checkpoint
from ..train.config import TrainConfig
from . import generation, ood, reference_fid, robustbench
from .calibration import evaluate_calibration
from .core import NORMS, PROTOCOLS, REFERENCE, eps_list, evaluate
from .fid import fid_is_sets
from .landscape import energy_landscape, generate, sample_grids
from .wrapper import PRECISIONS

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
    record = sd.get("init")
    init = None if record is None or record.get("kind") == "uniform" else (lambda: load_init(p, record))
    return {"path": p, "step": sd.get("step"), "config": cfg, "model": model.to(device).eval(),
            "buffer": buffer, "n_classes": n_classes, "sample_shape": shape, "init": init,
            "test_set": ds if test_set else None}


def load_for_eval(path, *, device="cpu", data_root=None) -> dict:
    """``load_trained`` with the test split (``test_set``)."""
    return load_trained(path, device=device, data_root=data_root, test_set=True)


def evaluate_checkpoint(path, *, n: int = 1000, eps=None, norm: str = "linf", steps: int = 20,
                        alpha: float | None = None, restarts: int = 1, autoattack: bool = False,
                        autoattack_steps: int = 100, autoattack_queries: int = 5000,
                        protocol: str = "both", batch_size: int = 256, device="auto", precision: str = "fp32",
                        samples: bool = True, out=None, inception_weights=None, data_root=None,
                        n_gen: int | None = None, sample_steps: int = 100, seed: int = 0,
                        progress: bool = False, ood_sets=None, calibration: bool = False,
                        reference_aa_steps: int = REFERENCE["aa_steps"],
                        reference_aa_queries: int = REFERENCE["aa_queries"],
                        topk_ratio: float = reference_fid.DEFAULT_RATIO, robustbench_entry: bool = False) -> dict:
    """Evaluate a checkpoint: ``evaluate`` on n test points (see its arguments), then the
    energy landscape (clean, PGD adversarial and generated points; generated = ``n_gen``
    buffer rows, default min(N_GEN, buffer size), continued by the run's sampler for its
    sgld_steps), sample grids (``samples``; fresh chains run ``sample_steps`` steps) and
    FID / IS of the generated points against the test points (``inception_weights``).

    ``ood_sets``: OOD sets (names or "a,b"; ood.parse_names) for OOD detection (ood.py);
    ``calibration``: ECE and the reliability diagram (calibration.py);
    ``reference_aa_steps`` / ``reference_aa_queries``: the published attack suite's budget;
    ``topk_ratio``: the published per-class top-k filter of the replay buffer
    (reference_fid.py), scored under protocol "reference" / "both";
    ``robustbench_entry``: add the RobustBench-style model card (robustbench.py).

    PNGs go to ``out`` (default: ``eval_step_N`` beside the run's checkpoints folder).
    Returns evaluate's dict plus checkpoint, step, variant, dataset, the energy keys
    (energy_gap_adv, energy_gap_gen, ...), on the digits gen_fd and gen_cond_acc of the
    generated points and gen_fd_fresh, gen_cond_acc_fresh of as many fresh chains from the
    run's initial distribution (ebjdat.evaluate.generation; against the whole test split,
    labels from the model), fid / is or fid_note (and fid_fresh ... with Inception
    weights), the published generation metrics (gen_reference {ratio, kept, ...}, then
    gen_fd_reference ... on the digits, fid_reference + fid_reference_backend elsewhere),
    ood_auroc {set: {score: AUROC}}, ece {"15", "20"}, robustbench {...} when asked, and
    files (PNG paths).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (test points) must be an integer >= 1, got {n!r}")
    # bad arguments fail before the (possibly slow) loading of model and data
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    eps_list(eps, norm)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    ood_names = ood.parse_names(ood_sets) if ood_sets else []
    topk_ratio = reference_fid.check_ratio(topk_ratio)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    ck = load_for_eval(path, device=dev, data_root=data_root)
    p = ck["path"]
    cfg, model, ds = ck["config"], ck["model"], ck["test_set"]
    k = min(n, len(ds))
    x, y = ds.x[:k].to(dev), ds.y[:k].to(dev)
    shape = tuple(ds.x.shape[1:])
    # the OOD sets load before the long work: a missing dataset fails in seconds
    sets = ood.load_sets(ood_names, shape, k, test_x=ds.x, root=cfg.data_root, seed=seed) if ood_names else {}
    res, x_adv = evaluate(model, x, y, eps=eps, norm=norm, steps=steps, alpha=alpha, restarts=restarts,
                          autoattack=autoattack, autoattack_steps=autoattack_steps,
                          autoattack_queries=autoattack_queries, protocol=protocol, batch_size=batch_size,
                          precision=precision, seed=seed, progress=progress, return_adv=True,
                          reference_aa_steps=reference_aa_steps, reference_aa_queries=reference_aa_queries)
    out_dir = Path(out) if out is not None else default_out(p, ck["step"])
    res.update(checkpoint=str(p), step=ck["step"], variant=cfg.variant, dataset=cfg.dataset, device=str(dev),
               out=str(out_dir))
    files = []

    # generated points: the buffer's chains continued by the run's sampler (fresh chains without one)
    buf = ck["buffer"]
    g = torch.Generator().manual_seed(seed)
    if buf is not None and len(buf):
        m = min(n_gen or N_GEN, len(buf))
        x0, gen_steps = buf[torch.randperm(len(buf), generator=g)[:m]].to(dev), None
    else:
        m = n_gen or N_GEN
        x0, gen_steps = (torch.rand((m, *shape), generator=g) * 2 - 1).to(dev), sample_steps
    x_gen = generate(model, cfg, x0, n_steps=gen_steps, batch_size=batch_size, seed=seed)
    res["energy_generated_from"] = "buffer" if gen_steps is None else f"uniform noise, {sample_steps} steps"
    digits = generation.applies_to(shape, ds.n_classes)
    x_fresh = None
    if digits or inception_weights is not None:   # fresh chains from the run's initial distribution
        starts = generation.fresh_starts(ck["init"]() if ck["init"] else None, len(x_gen), shape, seed, dev)
        x_fresh = generate(model, cfg, starts, seed=seed + 1, batch_size=batch_size)
    if digits:   # digits: FD and the model's labels checked
        res.update(generation.labelled_metrics(model, x_gen, ds.x, batch_size=batch_size))
        res.update(generation.labelled_metrics(model, x_fresh, ds.x, suffix="_fresh", batch_size=batch_size))
    if protocol in ("reference", "both"):
        res.update(_published_generation(model, buf, x, ds.x, digits=digits, ratio=topk_ratio,
                                         inception_weights=inception_weights, device=dev, batch_size=batch_size))
    png = out_dir / "energy.png"
    res.update(energy_landscape(model, x, x_adv, x_gen, batch_size=batch_size, precision=precision, png=png,
                                title=f"E(x) = -logsumexp logits, {cfg.variant} step {ck['step']}"))
    files.append(png)
    if samples:
        files += sample_grids(model, cfg, out_dir, n_classes=ds.n_classes, shape=shape,
                              buffer=buf, fresh_steps=sample_steps, batch_size=batch_size, seed=seed)
    gen_sets = {"": x_gen} if x_fresh is None or inception_weights is None else {"": x_gen, "_fresh": x_fresh}
    res.update(fid_is_sets(gen_sets, x, inception_weights=inception_weights, device=dev))
    if sets:
        r = ood.ood_detection(model, x, sets, batch_size=batch_size, out_dir=out_dir)
        files += r.pop("files")
        res.update(r)
    if calibration:
        png = out_dir / "reliability.png"
        res.update(evaluate_calibration(model, x, y, batch_size=batch_size, png=png,
                                  title=f"reliability, {cfg.variant} step {ck['step']}, {k} test points"))
        files.append(png)
    if robustbench_entry:
        res["robustbench"] = robustbench.entry(res, cfg=cfg, deterministic=robustbench.deterministic_forward(model, x))
    res["files"] = [str(f) for f in files]
    return res


def _published_generation(model, buf, x_real, x_test, *, digits: bool, ratio: float, inception_weights, device,
                          batch_size: int) -> dict:
    """The published generation metrics: the replay buffer after the per-class top-k
    confidence filter, scored with the digits FD (digits) or FID (reference_fid.py)."""
    if buf is None or not len(buf):
        return {"gen_reference": {"note": "the checkpoint holds no replay buffer: the published generation "
                                          "metrics score the buffer"}}
    kept, info = reference_fid.filter_buffer(model, buf, ratio=ratio, batch_size=batch_size)
    out = {"gen_reference": {**info, "source": "replay buffer, per-class top-k confidence filter"}}
    if len(kept) < 2:
        out["gen_reference"]["note"] = f"only {len(kept)} buffer rows kept: no Fréchet distance"
    elif digits:
        out.update(generation.labelled_metrics(model, kept.to(device), x_test, suffix="_reference",
                                               batch_size=batch_size))
    else:
        out.update(reference_fid.published_fid(kept.to(device), x_real, inception_weights=inception_weights,
                                               device=device))
    return out


def default_out(p: Path, step) -> Path:
    run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run / f"eval_step_{step if step is not None else 'unknown'}"
