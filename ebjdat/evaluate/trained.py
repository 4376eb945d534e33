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
from . import generation
from .core import NORMS, PROTOCOLS, eps_list, evaluate
from .fid import fid_is
from .landscape import energy_landscape, generate, sample_grids
from .wrapper import PRECISIONS

N_GEN = 2000   # generated points by default: a digits FD of 2000 varies by about 0.1 between draws


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
        ds = load_dataset(cfg.dataset, "test", root=cfg.data_root, image_size=cfg.image_size)
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
                        progress: bool = False) -> dict:
    """Evaluate a checkpoint: ``evaluate`` on n test points (see its arguments), then the
    energy landscape (clean, PGD adversarial and generated points; generated = ``n_gen``
    buffer rows, default min(N_GEN, buffer size), continued by the run's sampler for its
    sgld_steps), sample grids (``samples``; fresh chains run ``sample_steps`` steps) and
    FID / IS of the generated points against the test points (``inception_weights``).

    PNGs go to ``out`` (default: ``eval_step_N`` beside the run's checkpoints folder).
    Returns evaluate's dict plus checkpoint, step, variant, dataset, the energy keys
    (energy_gap_adv, energy_gap_gen, ...), on the digits gen_fd and gen_cond_acc of the
    generated points and gen_fd_fresh, gen_cond_acc_fresh of as many fresh chains from the
    run's initial distribution (ebjdat.evaluate.generation; against the whole test split,
    labels from the model), fid / is or fid_note, and files (PNG paths).
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
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    ck = load_for_eval(path, device=dev, data_root=data_root)
    p = ck["path"]
    cfg, model, ds = ck["config"], ck["model"], ck["test_set"]
    k = min(n, len(ds))
    x, y = ds.x[:k].to(dev), ds.y[:k].to(dev)
    res, x_adv = evaluate(model, x, y, eps=eps, norm=norm, steps=steps, alpha=alpha, restarts=restarts,
                          autoattack=autoattack, autoattack_steps=autoattack_steps,
                          autoattack_queries=autoattack_queries, protocol=protocol, batch_size=batch_size,
                          precision=precision, seed=seed, progress=progress, return_adv=True)
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
        x0, gen_steps = (torch.rand((m, *ds.x.shape[1:]), generator=g) * 2 - 1).to(dev), sample_steps
    x_gen = generate(model, cfg, x0, n_steps=gen_steps, batch_size=batch_size, seed=seed)
    res["energy_generated_from"] = "buffer" if gen_steps is None else f"uniform noise, {sample_steps} steps"
    if generation.applies_to(tuple(ds.x.shape[1:]), ds.n_classes):   # digits: FD and the model's labels checked
        res.update(generation.labelled_metrics(model, x_gen, ds.x, batch_size=batch_size))
        starts = generation.fresh_starts(ck["init"]() if ck["init"] else None, len(x_gen),
                                         tuple(ds.x.shape[1:]), seed, dev)
        res.update(generation.labelled_metrics(model, generate(model, cfg, starts, seed=seed + 1), ds.x,
                                               suffix="_fresh", batch_size=batch_size))
    png = out_dir / "energy.png"
    res.update(energy_landscape(model, x, x_adv, x_gen, batch_size=batch_size, precision=precision, png=png,
                                title=f"E(x) = -logsumexp logits, {cfg.variant} step {ck['step']}"))
    files.append(png)
    if samples:
        files += sample_grids(model, cfg, out_dir, n_classes=ds.n_classes, shape=tuple(ds.x.shape[1:]),
                              buffer=buf, fresh_steps=sample_steps, batch_size=batch_size, seed=seed)
    res.update(fid_is(x_gen, x, inception_weights=inception_weights, device=dev))
    res["files"] = [str(f) for f in files]
    return res


def default_out(p: Path, step) -> Path:
    run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run / f"eval_step_{step if step is not None else 'unknown'}"
