"""The training-iteration suite: one EB-JDAT iteration (SADA-JEM preset) per method.

Cases, each timed on the same fixed batches and stated against the published baseline
(``published baseline``: ebjdat.published.PublishedLoop, the published loop), then the
trainer's fast mode with one part of its recipe switched on at a time. On a GPU
(GPU_STAGES): ``trainer fast fp32``, ``+bf16``, ``+channels_last``, ``+cuda_graph``,
``+compile``. On the CPU (CPU_STAGES): ``trainer fast fp32``, ``+channels_last``,
``+compile``, ``+bf16`` (channels_last, eager: the CPU default where bf16 units exist) and
``+bf16 +compile``. A compile case runs when ``compile`` is on, not in --quick on the CPU,
and, given a ``deadline``, with at least COMPILE_RESERVE_S seconds left (compiling
WRN-28-10's graphs takes minutes); otherwise its row says why it was skipped.

Each trainer row also says what ran (channels_last, precision, whether compile was in
effect, dynamo's graphs and graph breaks while the case was built and timed) and its first
iteration's loss against the first trainer case's (fp32): ``loss_rel_diff``.

Per case: seconds per iteration (CUDA-event medians on a GPU, perf_counter medians on
the CPU, after warm-up iterations), labelled images per second, model FLOP utilisation
(``formulas.iteration_flops``, the useful FLOPs of an iteration, over the time, as a %
of the matmul rate measured in this run), and the projected hours of the paper's
100-epoch CIFAR-10 schedule (only at CIFAR sizes, not in --quick).

Sizes: on a GPU WRN-28-10 on 32x32 synthetic CIFAR-shaped data, batches 64 + 128, 10 SGLD
steps, 5 attack steps, SAM; on the CPU WRN-10-2 with batches 8 + 16 (CPU_FULL). --quick: the digits SmallCNN (8x8), batches 16 + 16, a 200-row
buffer, 5 SGLD and 5 attack steps.

Then the data loader against the model, at 32x32 and 64x64 (``loader_rows``): images/s of
the device Loader serving labelled batches (random crop from a reflect-padded image, flip,
input noise, on the device) beside the images/s of one plain fp32 forward + backward of
the same model (WRN-28-10; --quick: the SmallCNN) on batches of the same size. An EB-JDAT
iteration spends many forward/backward passes per labelled image (SGLD and attack steps),
so a loader faster than one pass is never what an iteration waits on.
"""
from __future__ import annotations

import copy
import gc
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import compiling
from ..published import PublishedLoop
from . import formulas, profiling, timing

QUICK = {"dataset": "digits", "batch_size": 16, "label_batch_size": 16, "buffer_size": 200,
             "sgld_steps": 5, "pgd_steps": 5}
FULL = {"dataset": "synthetic", "image_size": 32, "model": "wrn", "depth": 28, "width": 10}
# the CPU's full size: what 2 cores iterate in about a second (WRN-10-2, batches 8 + 16)
CPU_FULL = {"dataset": "synthetic", "image_size": 32, "model": "wrn", "depth": 10, "width": 2,
            "batch_size": 8, "label_batch_size": 16, "buffer_size": 1000}
_OFF = {"precision": "fp32", "channels_last": False, "cuda_graph": False, "compile": False}
GPU_STAGES = [  # (name, overrides): each adds one optimisation to the last
    ("trainer fast fp32", _OFF),
    ("+bf16", {**_OFF, "precision": "bf16"}),
    ("+channels_last", {**_OFF, "precision": "bf16", "channels_last": True}),
    ("+cuda_graph", {**_OFF, "precision": "bf16", "channels_last": True, "cuda_graph": True}),
    ("+compile", {"precision": "bf16", "channels_last": True, "cuda_graph": True, "compile": True}),
]
CPU_STAGES = [  # each on the stage before it, except that +bf16 leaves compile off (the CPU default)
    ("trainer fast fp32", _OFF),
    ("+channels_last", {**_OFF, "channels_last": True}),
    ("+compile", {**_OFF, "channels_last": True, "compile": True}),
    ("+bf16", {**_OFF, "channels_last": True, "precision": "bf16"}),
    ("+bf16 +compile", {**_OFF, "channels_last": True, "precision": "bf16", "compile": True}),
]
COMPILE_RESERVE_S = 90.0   # compiling a step region and the model's forward, with headroom


def _cfg(device, quick, mode="published", **over):
    from ebjdat.train import TrainConfig
    sizes = QUICK if quick else FULL if torch.device(device).type == "cuda" else CPU_FULL
    return TrainConfig.preset("sadajem", mode=mode, device=str(device), steps=10_000,
                              **{**sizes, **over})


def _seconds(fn, device, quick, slow=False):
    warm, reps = (1, 2) if (quick or slow) else (3, 10)
    return timing.median_us(fn, device, warmup=warm, reps=reps, do_bench=False) / 1e6


def _compile_skip(compile: bool, deadline: float | None, quick: bool, gpu: bool) -> str | None:
    """Why a compile case is not run, or None to run it."""
    if not compile:
        return "--no-compile"
    if quick and not gpu:
        return "--quick on the CPU: compiling takes longer than the quick suite"
    if deadline is not None and deadline - time.perf_counter() < COMPILE_RESERVE_S:
        left = max(0.0, deadline - time.perf_counter())
        return f"{left:.0f} s of the budget left, the compile case needs {COMPILE_RESERVE_S:.0f} s"
    return None


def run(device, quick: bool, ceil: dict, profile_dir=None, deadline: float | None = None,
        compile: bool = True, report=None) -> list[dict]:
    """One training iteration per case, then the loader rows (the module docstring);
    ``report`` gets each row as it is measured."""
    from ebjdat.train import Trainer
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    ref_trainer = Trainer(_cfg(dev, quick))
    ds, cfg = ref_trainer.train_set, ref_trainer.cfg
    x_lab, y_lab = next(ref_trainer.lab_loader)
    x_pd, _ = next(ref_trainer.pd_loader)
    shape = tuple(ds.x.shape[1:])
    flops = formulas.iteration_flops(formulas.model_flops(ref_trainer.model, shape, device=dev), cfg)
    model0 = copy.deepcopy(ref_trainer.model)

    def baseline(cls):
        init = ref_trainer.buffer.init   # reuse the fitted class Gaussians (construction is not timed)
        gauss = (init.mean, init.chol) if cfg.init == "class_gaussian" else None
        return cls(cfg, copy.deepcopy(model0), ds.x, ds.y, ds.n_classes, dev, ref_trainer.steps_per_epoch,
                   gaussian=gauss)

    stages = GPU_STAGES if gpu else CPU_STAGES
    cases = [("published baseline", lambda: baseline(PublishedLoop))]
    cases += [(name, lambda o=o: Trainer(_cfg(dev, quick, "fast", **o))) for name, o in stages]
    case = f"sadajem/{_size_name(cfg, quick)}/b{cfg.batch_size}+{cfg.label_batch_size}"
    rows, ref_s, fp32_loss = timing.Rows(report), None, None
    for name, make in cases:
        why = _compile_skip(compile, deadline, quick, gpu) if "+compile" in name else None
        if why is not None:
            rows.append({"suite": "step", "case": case, "ours": name, "skipped": why})
            continue
        before = compiling.graph_counts()
        obj = make()
        first = {}
        profiling.instrument(obj)
        if isinstance(obj, PublishedLoop):
            fn = lambda o=obj: o.step(x_lab, y_lab, x_pd)
        else:
            fn = _first_loss(lambda o=obj: o.train_step(x_lab, y_lab, x_pd), first)
        s = _seconds(fn, dev, quick, slow="published" in name)
        ref_s = ref_s or s
        if profile_dir is not None:
            slug = name.replace(" ", "_").replace("+", "plus_")
            profiling.trace(Path(profile_dir) / f"step-{slug}.json", dev, fn, n=1)
        rate = flops / s
        row = {"suite": "step", "case": case, "baseline": "published baseline",
               "ours": name, "baseline_us": ref_s * 1e6, "ours_us": s * 1e6, "speedup": ref_s / s,
               "s_per_iter": s, "images_per_s": cfg.label_batch_size / s,
               "iteration_TFLOP": flops / 1e12, "model_TFLOPs": rate / 1e12,
               "mfu_pct": 100 * rate / (ceil["matmul_TFLOPs"] * 1e12),
               "pct_ceiling": 100 * rate / (ceil["matmul_TFLOPs"] * 1e12),
               "ceiling": f"{ceil['matmul_dtype']} matmul",
               "projected_hours": None if quick or not gpu else formulas.projected_hours(s, cfg.label_batch_size)}
        if not isinstance(obj, PublishedLoop):
            row.update(_fast_path(obj, first, fp32_loss, before))
            fp32_loss = fp32_loss if fp32_loss is not None else first["loss"]
        rows.append(row)
        del obj, fn  # fn holds the case too: free its model and optimiser before the next
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()
    return [*rows, *loader_rows(dev, quick, report)]


def _size_name(cfg, quick: bool) -> str:
    return "digits" if quick else f"wrn{cfg.depth}-{cfg.width} cifar-shape"


def _first_loss(fn, first: dict):
    """fn, recording the loss of its first call (the same batches and initial weights in
    every case, so the cases' first losses are comparable) in first["loss"]."""
    def call():
        m = fn()
        if "loss" not in first:
            first["loss"] = float(m["loss"])
        return m
    return call


def _fast_path(trainer, first: dict, fp32_loss: float | None, before: dict) -> dict:
    """What of the recipe ran in a trainer case: layout, precision, whether compile was in
    effect and dynamo's graphs and breaks in the case, and the first iteration's loss
    beside the first (fp32) case's: ``loss_rel_diff = |loss - loss_fp32| / |loss_fp32|``."""
    from ..train.loop import fast_path
    after, ran = compiling.graph_counts(), fast_path(trainer)
    info = ran["compile"]
    out = {"channels_last": ran["channels_last"], "precision": ran["precision"], "compiled": info["active"], "graphs": after["graphs"] - before["graphs"],
           "graph_breaks": after["graph_breaks"] - before["graph_breaks"], "first_loss": first["loss"]}
    if info["requested"] and not info["active"]:
        out["compile_why_not"] = info["why"]
    if fp32_loss is not None:
        out["loss_rel_diff"] = abs(first["loss"] - fp32_loss) / max(abs(fp32_loss), 1e-12)
    return out


LOADER_SIZES = (32, 64)
LOADER_BATCHES = 16   # batches of data in the loader: epochs turn over (a randperm each) while timed


def _loader_us(size: int, batch: int, sigma: float, device) -> float:
    """Median microseconds of one Loader batch of synthetic size x size RGB images with
    the augmentation of a real dataset at that size (pad size // 8, flip, input noise)."""
    import dataclasses

    from ..data import Loader, load_dataset
    from ..data.base import default_pad
    ds = load_dataset("synthetic", image_size=size, n=LOADER_BATCHES * batch)
    ds = dataclasses.replace(ds, pad=default_pad(size), flip=True)
    loader = Loader(ds, batch, device=device, augment=True, noise_sigma=sigma,
                    generator=torch.Generator(device).manual_seed(0))
    return timing.median_us(lambda: next(loader), device, warmup=3, reps=20, do_bench=False)


def _model_us(cfg, size: int, batch: int, device, quick: bool) -> float:
    """Median microseconds of one fp32 train-mode forward + backward (cross-entropy) of
    the suite's model on a (batch, 3, size, size) batch."""
    from .. import build
    model = build.model(cfg, 3, 10).to(device).train()
    g = torch.Generator(device).manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device, generator=g) * 2 - 1
    y = torch.randint(0, 10, (batch,), device=device, generator=g)

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return _seconds(step, device, quick) * 1e6


def loader_rows(device, quick: bool, report=None) -> list[dict]:
    """One row per size in LOADER_SIZES: the Loader's batch time ("ours") against the
    model's forward + backward on that batch ("baseline"); images/s of both. ``report``
    gets each row as it is measured."""
    dev = torch.device(device)
    cfg = _cfg(dev, quick)
    batch = cfg.label_batch_size
    model_name = "small_cnn" if quick else f"wrn{cfg.depth}-{cfg.width}"
    rows = timing.Rows(report)
    for size in LOADER_SIZES:
        loader_us = _loader_us(size, batch, cfg.sigma, dev)
        model_us = _model_us(cfg, size, batch, dev, quick)
        ips, model_ips = batch / (loader_us / 1e6), batch / (model_us / 1e6)
        rows.append({"suite": "step", "case": f"loader {size}x{size}x3/b{batch}",
                     "baseline": f"{model_name} fwd+bwd fp32", "ours": "loader (crop+flip+noise)",
                     "baseline_us": model_us, "ours_us": loader_us, "speedup": model_us / loader_us,
                     "images_per_s": ips, "model_images_per_s": model_ips,
                     "note": f"loader {ips:,.0f} images/s, {model_name} forward + backward {model_ips:,.0f} "
                             f"images/s (speed-up: how many times faster the loader serves a batch than the "
                             f"model takes one pass on it)"})
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return list(rows)


def _spin(stop) -> None:
    """A busy process: holds one core until ``stop`` is set (the 'loaded machine')."""
    while not stop.is_set():
        pass


def run_threads(device, quick: bool, ceil: dict, report=None) -> list[dict]:
    """CPU only: one default-run iteration (SADA-JEM, digits) with 1 and 2 intra-op threads,
    on a quiet machine and with one other process spinning on a core. What the trainer's
    thread choice (Trainer._choose_threads) rests on. ``report`` gets each row as it is
    measured."""
    import multiprocessing

    from ebjdat.train import TrainConfig, Trainer
    from ebjdat.train.loop import num_threads
    if torch.device(device).type != "cpu":
        rows = timing.Rows(report)
        rows.append({"suite": "threads", "case": "cpu threads", "ours": "-", "skipped": "a CPU suite"})
        return list(rows)
    trainer = Trainer(TrainConfig.preset("sadajem", device="cpu", steps=10_000))
    rows = timing.Rows(report)
    for load in ("quiet", "one core busy"):
        stop = multiprocessing.Event()
        spinner = multiprocessing.Process(target=_spin, args=(stop,), daemon=True) if load != "quiet" else None
        if spinner:
            spinner.start()
        try:
            t = {}
            for n in (2, 1):
                with num_threads(n):
                    t[n] = _seconds(trainer.train_step, "cpu", quick)
        finally:
            if spinner:
                stop.set()
                spinner.join(5)
        rows.append({"suite": "threads", "case": f"sadajem/digits iteration, {load}", "baseline": "2 threads",
                     "ours": "1 thread", "baseline_us": t[2] * 1e6, "ours_us": t[1] * 1e6,
                     "speedup": t[2] / t[1]})
    return list(rows)
