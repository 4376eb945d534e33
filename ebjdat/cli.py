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

import torch

from . import ops

TRAIN_FLAGS = {  # flag: (config field, type, help)
    "--out": ("out", str, "run folder (default runs/<time>)"),
    "--steps": ("steps", int, "total iterations (overrides --epochs)"),
    "--epochs": ("epochs", int, "epochs of the labelled data"),
    "--ckpt-every": ("ckpt_every", int, "checkpoint every N iterations"),
    "--variant": ("variant", str, "jem | jempp | sadajem (default sadajem)"),
    "--dataset": ("dataset", str, "digits (default, offline) | cifar10 | cifar100 | synthetic"),
    "--data-root": ("data_root", str, "folder holding the CIFAR python-pickle batches"),
    "--mode": ("mode", str, "fast (default) | reference (the published loop's waste)"),
    "--precision": ("precision", str, "fp32 (default) | bf16 (fast mode)"),
    "--backend": ("backend", str, "fused-op backend: auto | torch | triton | cuda"),
    "--device": ("device", str, "auto (default) | cpu | cuda | cuda:N"),
    "--seed": ("seed", int, "random seed"),
}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a JEM-style classifier with EB-JDAT",
                       description="Train with EB-JDAT. Settings: the variant's preset "
                       "(REFERENCE.md), then --config, then flags.")
    p.add_argument("--config", help="a TOML file of TrainConfig fields")
    p.add_argument("--resume", metavar="PATH", help="continue from a run folder or checkpoint file")
    for flag, (_, typ, text) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, help=text)
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="do not compile (default)")
    p.set_defaults(fn=_train)


def _train(args) -> int:
    from .train import TrainConfig, Trainer, TrainingDiverged
    flags = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in TRAIN_FLAGS.items()}
    flags["compile"] = args.compile
    flags = {k: v for k, v in flags.items() if v is not None}
    try:
        if args.resume:
            trainer = Trainer.resume(args.resume, **flags)
        else:
            if args.config:
                cfg = TrainConfig.from_toml(args.config, **flags)
            else:
                cfg = TrainConfig.preset(flags.pop("variant", "sadajem"), **flags)
            if cfg.out is None:
                cfg = cfg.with_overrides(out=f"runs/{datetime.datetime.now():%Y%m%d-%H%M%S}")
            trainer = Trainer(cfg)
        print(f"ebjdat train: {trainer.cfg.variant}, {trainer.cfg.mode} mode, {trainer.cfg.dataset} "
              f"on {trainer.device}; writing to {trainer.cfg.out}", flush=True)
        summary = trainer.fit()
    except TrainingDiverged as e:
        print(f"ebjdat train: stopped: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"ebjdat train: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


def _sample(args) -> int:
    """SGLD samples of a trained checkpoint, from fresh chains or from its buffer."""
    from . import plots
    from .train import Trainer
    trainer = Trainer.resume(args.checkpoint, device=args.device or "auto", out=None)
    steps = args.steps if args.steps is not None else trainer.cfg.sgld_steps
    sampler = trainer.sampler
    sampler.n_steps = steps
    if args.fresh:
        x0 = torch.rand(args.n, *trainer.train_set.x.shape[1:], device=trainer.device) * 2 - 1
    else:
        x0, _ = trainer.buffer.sample(min(args.n, len(trainer.buffer)))
    y = None if args.y is None else torch.full((x0.shape[0],), args.y, device=trainer.device)
    trainer.model.train(trainer.cfg.sampler_train_mode)
    x = sampler.sample(x_init=x0.to(trainer.device), y=y)
    plots.save_grid(args.out, x.float().cpu())
    print(f"wrote {x.shape[0]} samples after {steps} SGLD steps to {args.out}")
    return 0


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw SGLD samples from a trained checkpoint",
                       description="Draw SGLD samples of a checkpoint into a PNG grid.")
    p.add_argument("--checkpoint", required=True, help="a run folder or checkpoint file")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=int, help="SGLD steps (default: the run's sgld_steps)")
    p.add_argument("--fresh", action="store_true", help="start from uniform noise, not the buffer")
    p.add_argument("--y", type=int, help="class-conditional: sample E(x, y) for this class")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--out", default="samples.png", help="PNG file (default samples.png)")
    p.set_defaults(fn=_sample)


def _info(args) -> int:
    print(f"torch {torch.__version__}; CUDA GPU: {torch.cuda.is_available()}")
    print(f"backends available: {', '.join(ops.available_backends())} (selected: {ops.get_backend()})")
    from .ops import backends
    for name, why in (("triton", backends.triton_status()), ("cuda", backends.cuda_status())):
        if why:
            print(f"  {name}: {why}")
    return 0


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
