"""The ``ebjdat`` command: ``train``, ``eval``, ``sample``, ``demo``, ``info``.

``ebjdat train`` with no flags trains SADA-JEM-style EB-JDAT on the embedded digits data,
offline, in a few minutes on 2 CPU cores, and writes checkpoints, metrics.jsonl,
summary.json, samples.png and energy.png into --out (default runs/<time>).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

from . import ops
from .validate import resolve_device


def _classes_arg(value: str):
    """--classes: an int K, or a file of class indices read now, so the run's config (and
    ``ebjdat eval`` of its checkpoints) needs no file."""
    if value.strip().isdigit():
        return int(value)
    from .data.base import read_class_file
    try:
        idx = read_class_file(Path(value), "the dataset")
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not idx:
        raise argparse.ArgumentTypeError(f"classes file {value} lists no class")
    return idx


TRAIN_FLAGS = {  # flag: (config field, type, help)
    "--out": ("out", str, "run folder (default runs/<time>)"),
    "--steps": ("steps", int, "total iterations (overrides --epochs)"),
    "--epochs": ("epochs", int, "epochs of the labelled data"),
    "--ckpt-every": ("ckpt_every", int, "checkpoint every N iterations"),
    "--log-every": ("log_every", int, "a metrics.jsonl row every N iterations"),
    "--threads": ("threads", int, "CPU threads (default: 1 for small models, else torch's)"),
    "--variant": ("variant", str, "jem | jempp | sadajem (default sadajem)"),
    "--objective": ("objective", str, "ebjdat (default) | standard | at | jem: terms switched off"),
    "--dataset": ("dataset", str, "digits (default, offline) | cifar10 | cifar100 | svhn | stl10 | tinyimagenet "
                  "| imagenet32 | imagenet64 | imagefolder | synthetic (layouts: README, Datasets)"),
    "--data-root": ("data_root", str, "the dataset's folder (default $EBJDAT_DATA or ./data; imagefolder: the "
                    "folder holding train/ and val/)"),
    "--image-size": ("image_size", int, "image side: decoded size of tinyimagenet / imagefolder (default 64); "
                     "others: native or larger"),
    "--classes": ("classes", _classes_arg, "class subset (svhn, stl10, tinyimagenet, imagenet32/64, "
                  "imagefolder): K (the first K classes) or a file of 0-based class indices, stored in the run's "
                  "config as the list it holds"),
    "--mode": ("mode", str, "fast (default) | published (the published loop's waste)"),
    "--precision": ("precision", str, "auto (default: bf16 autocast where the device has bf16 units, "
                                      "else fp32) | fp32 | bf16; fast mode"),
    "--backend": ("backend", str, "fused-op backend: auto | torch | triton | cuda"),
    "--device": ("device", str, "auto (default) | cpu | cuda | cuda:N"),
    "--seed": ("seed", int, "random seed"),
}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a JEM-style classifier with EB-JDAT",
                       description="Train with EB-JDAT. Settings: the variant's preset "
                       "(the published settings), then --config, then flags.")
    p.add_argument("--config", help="a TOML file of TrainConfig fields")
    p.add_argument("--resume", metavar="PATH", help="continue from a run folder or checkpoint file (a run "
                   "folder stopped before its first checkpoint starts again at step 0; one stopped during its "
                   "closing evaluation gets it and its summary.json)")
    for flag, (_, typ, text) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, help=text)
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="do not compile (default)")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="fast mode: channels_last model, chains and attack inputs (default)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="fast mode: keep the contiguous (NCHW) layout")
    p.set_defaults(fn=_train)


def _train(args) -> int:
    from .evaluate import closing
    from .runs.config import RESUMABLE, ConfigError
    from .runs.folders import check_run_folder
    from .train import TrainConfig, Trainer, TrainingDiverged
    flags = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in TRAIN_FLAGS.items()}
    flags["compile"] = args.compile
    flags["channels_last"] = args.channels_last
    flags = {k: v for k, v in flags.items() if v is not None}
    given = {field: flag for flag, (field, _, _) in TRAIN_FLAGS.items() if field in flags}   # messages name flags
    try:
        if args.out is not None and not args.out.strip():   # "" would train into the working folder
            raise ValueError(f"--out {args.out!r} is empty: name the run folder (a new one, or leave --out out "
                             f"for runs/<time>)")
        if args.resume:
            if args.config:
                raise ValueError(f"--config cannot be used with --resume: a resumed run keeps its "
                                 f"checkpoint's settings; only {', '.join(RESUMABLE)} may change, by flags; "
                                 f"other settings make a new run: ebjdat train --config FILE --out <new folder>")
            try:
                trainer = Trainer.resume(args.resume, **flags)
            except ConfigError as e:   # a flag's value out of range: name the flag
                raise e.named(given) from None
        else:
            if args.config:
                cfg = TrainConfig.from_toml(args.config, key_names=given, **flags)
            else:
                cfg = TrainConfig.preset(flags.pop("variant", "sadajem"), key_names=given, **flags)
            if cfg.out is None:
                cfg = cfg.with_overrides(out=f"runs/{datetime.datetime.now():%Y%m%d-%H%M%S}")
            check_run_folder(cfg.out)   # before the data and the model are built
            trainer = Trainer(cfg)
        print(f"ebjdat train: {trainer.cfg.variant}, {trainer.cfg.mode} mode, {trainer.cfg.dataset} "
              f"on {trainer.device}; writing to {trainer.cfg.out}", flush=True)
        summary = trainer.fit(closing=closing.evaluate)
    except TrainingDiverged as e:
        print(f"ebjdat train: stopped: {e}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as e:   # OSError: missing files, folders, permissions
        print(f"ebjdat train: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


def _sample(args) -> int:
    """SGLD samples of a trained checkpoint, from fresh chains or from its buffer."""
    try:
        return _draw_samples(args)
    except (ValueError, OSError) as e:   # OSError: missing, unreadable or unwritable files
        print(f"ebjdat sample: {e}", file=sys.stderr)
        return 2


def _check_sample_args(args) -> None:
    """The checks that need no checkpoint: counts, steps, class, device, backend and the output file."""
    from . import plots
    if args.n < 1:
        raise ValueError(f"--n {args.n}: the number of samples must be >= 1")
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps {args.steps}: SGLD steps must be >= 0 (0 pictures the starting points)")
    if args.y is not None and args.y < 0:
        raise ValueError(f"--y {args.y}: a class index must be >= 0")
    from .validate import resolve_device, seed
    seed("--seed", args.seed)
    resolve_device(args.device or "auto")
    ops.check_backend(args.backend)
    from .runs.folders import check_not_training_output
    check_not_training_output(args.out, name="--out")   # never a training run's own picture
    plots.check_image_path(args.out, name="--out", overwrite=args.force, force_flag="--force")


def _draw_samples(args) -> int:
    """The run's sampler (built from its config, on its checkpoint's model) from buffer
    rows or from fresh starts of the run's initial distribution; no dataset is read."""
    from . import build, plots
    from .evaluate.trained import load_trained
    from .sampling import ClassGaussianInit
    _check_sample_args(args)
    dev = resolve_device(args.device or "auto")
    ops.check_backend(args.backend, dev)   # triton on CPU tensors of a GPU machine
    ops.set_backend(args.backend)
    run = load_trained(args.checkpoint, device=dev)
    cfg, model, buf, n_classes = run["config"], run["model"], run["buffer"], run["n_classes"]
    if args.y is not None and args.y >= n_classes:
        raise ValueError(f"--y {args.y}: the run's dataset has {n_classes} classes; pass a class in "
                         f"[0, {n_classes})")
    if not args.fresh and (buf is None or args.n > len(buf)):
        held = 0 if buf is None else len(buf)
        raise ValueError(f"--n {args.n}: the run's replay buffer holds {held} chains; pass --n {held} or "
                         f"less, or --fresh (chains from the run's initial distribution, any number)")
    from .validate import check_fits, item_values, nonfinite_rows
    check_fits("--n", args.n, item_values(run["sample_shape"], model), dev)
    check_fits("--n", args.n, item_values(run["sample_shape"]), torch.device("cpu"))   # starts, the picture
    g = torch.Generator().manual_seed(args.seed)
    y = None if args.y is None else torch.full((args.n,), args.y, dtype=torch.long)
    if not args.fresh:
        x0 = buf[torch.randperm(len(buf), generator=g)[:args.n]]
        start = "buffer rows"
    elif run["init"] is not None:
        init = ClassGaussianInit.from_state_dict(run["init"](), generator=g)
        x0, start = init(args.n, y), "the run's class-Gaussian"
    else:
        x0 = torch.rand((args.n, *run["sample_shape"]), generator=g) * 2 - 1
        start = "uniform noise"
    steps = args.steps if args.steps is not None else cfg.sgld_steps
    sampler = build.sampler(cfg, model, generator=ops.PhiloxGenerator(args.seed, device=dev), n_steps=steps)
    model.train(cfg.sampler_train_mode)
    x = sampler.sample(x_init=x0.to(dev), y=None if y is None else y.to(dev))
    if (bad := nonfinite_rows(x)):   # a picture of them: magenta squares (save_grid's NaN colour)
        raise ValueError(f"{bad} of {len(x)} samples hold non-finite values after {steps} SGLD steps (the "
                         f"sampler diverged); nothing written; try fewer --steps, or an earlier checkpoint")
    plots.save_grid(args.out, x.float().cpu())
    print(f"wrote {x.shape[0]} samples after {steps} SGLD steps from {start} to {args.out}")
    return 0


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw SGLD samples from a trained checkpoint",
                       description="Draw SGLD samples of a checkpoint into a grid picture.")
    p.add_argument("--checkpoint", required=True, help="a run folder or checkpoint file")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64; from the buffer at "
                   "most its size, with --fresh any number)")
    p.add_argument("--steps", type=int, help="SGLD steps (default: the run's sgld_steps; 0: the starting points)")
    p.add_argument("--fresh", action="store_true", help="start fresh chains from the run's initial "
                   "distribution (its class-Gaussian, class --y's with --y; uniform noise for JEM), "
                   "not from the buffer")
    p.add_argument("--seed", type=int, default=0, help="seed of the starts and the sampler noise (default 0)")
    p.add_argument("--y", type=int, help="class-conditional: sample E(x, y) for this class")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--backend", default="auto", choices=ops.backends.NAMES, help="fused-op backend (default auto)")
    p.add_argument("--out", default="samples.png", help="the picture, in the format its suffix names: .png "
                   "(default samples.png), .jpg, .bmp, .tif, .webp; an existing file is kept unless --force, "
                   "and a training run's own pictures always are")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(fn=_sample)


def _info(args) -> int:
    print(f"torch {torch.__version__}; CUDA GPU: {torch.cuda.is_available()}")
    print(f"backends available: {', '.join(_backend_labels())} (selected: {ops.get_backend()})")
    from .ops import backends
    for name, status in backends.STATUS.items():
        if (why := status()):
            print(f"  {name}: {why}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        name, why = backends.auto_choice(dev)
        print(f"auto on {dev.upper() if dev == 'cpu' else 'CUDA'} tensors: {name} ({why})")
    return 0


def _backend_labels() -> list[str]:
    """The available backends, each with what it can run when no GPU is visible."""
    if torch.cuda.is_available():
        return ops.available_backends()
    notes = {"cuda": "cuda (host path only: CPU tests; no GPU here)",
             "triton": "triton (interpreter only: TRITON_INTERPRET=1, CPU tests; no GPU here)"}
    return [notes.get(name, name) for name in ops.available_backends()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ebjdat", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    _train_parser(sub)
    from .evaluate.cli import add_parser as add_eval
    add_eval(sub)
    _sample_parser(sub)
    from .bench.cli import add_parser as add_bench
    add_bench(sub)
    from .demo import add_parser as add_demo
    add_demo(sub)
    p = sub.add_parser("info", help="list the backends this machine can run")
    p.set_defaults(fn=_info)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
