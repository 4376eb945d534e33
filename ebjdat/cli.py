"""The ``ebjdat`` command: ``train``, ``eval``, ``sample``, ``bench``, ``demo``, ``info``.

``ebjdat train`` with no flags trains SADA-JEM-style EB-JDAT on the embedded digits data,
offline, in a few minutes on 2 CPU cores, and writes checkpoints, metrics.jsonl,
summary.json, samples.png and energy.png into --out (default runs/<time>). It ends with a
short table of the closing evaluation (``format_summary``); the numbers for machines are
in summary.json. Every option's --help states its default and, for a closed set of values,
lists them.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from . import ops
from .data.datasets import DATASETS
from .runs.config import (
    DIGITS,
    MODES,
    OBJECTIVES,
    PRECISIONS,
    PRESETS,
    VARIANTS,
    TrainConfig,
)
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


_EPOCHS = ", ".join(f"{v} {PRESETS[v]['epochs']}" for v in VARIANTS)
TRAIN_FLAGS = {  # flag: (config field, type, help); every help says the default
    "--out": ("out", str, "run folder, new or empty (default: runs/<date>-<time>)"),
    "--steps": ("steps", int, ("total iterations; overrides --epochs (default: the iterations of --epochs "
                               "epochs)")),
    "--epochs": ("epochs", int, (f"epochs of the labelled data (default: {DIGITS['epochs']} on the digits; "
                                 f"elsewhere the variant's published count: {_EPOCHS})")),
    "--ckpt-every": ("ckpt_every", int, (f"write a checkpoint every N iterations (default: {DIGITS['ckpt_every']} "
                                         f"on the digits, {TrainConfig.ckpt_every} elsewhere)")),
    "--log-every": ("log_every", int, (f"write a metrics.jsonl row every N iterations (default: "
                                       f"{TrainConfig.log_every})")),
    "--threads": ("threads", int, "CPU threads (default: 1 for small models, else torch's choice)"),
    "--variant": ("variant", str, (f"which JEM-style model and published settings (default: "
                                   f"{TrainConfig.variant})")),
    "--objective": ("objective", str, (f"ebjdat: the full EB-JDAT objective; standard, at and jem switch terms "
                                       f"off (default: {TrainConfig.objective})")),
    "--dataset": ("dataset", str, (f"the training data; digits is built in and needs no download "
                                   f"(default: {TrainConfig.dataset}; the folder layouts: docs/datasets.md)")),
    "--data-root": ("data_root", str, ("the dataset's folder; imagefolder: the folder holding train/ and val/ "
                                       "(default: $EBJDAT_DATA, else ./data)")),
    "--image-size": ("image_size", int, ("image side in pixels: the decoded size of tinyimagenet and "
                                         "imagefolder images (default: 64 for those, the native size for the "
                                         "others, which may be raised)")),
    "--classes": ("classes", _classes_arg, ("a subset of classes (svhn, stl10, tinyimagenet, imagenet32/64, "
                                            "imagefolder): K for the first K classes, or a file of 0-based "
                                            "class indices, read now and stored in the run's config (default: "
                                            "all classes)")),
    "--mode": ("mode", str, (f"fast, or published: the published training loop with its waste, for comparison "
                             f"(default: {TrainConfig.mode})")),
    "--precision": ("precision", str, (f"fast mode's precision; auto: bf16 autocast where the device has bf16 "
                                       f"units, else fp32 (default: {TrainConfig.precision})")),
    "--backend": ("backend", str, (f"the implementation of the fused SGLD and PGD steps; auto picks the "
                                   f"fastest this machine runs (default: {TrainConfig.backend})")),
    "--device": ("device", str, (f"auto, cpu, cuda or cuda:N; auto: the GPU when there is one (default: "
                                 f"{TrainConfig.device})")),
    "--seed": ("seed", int, f"random seed (default: {TrainConfig.seed})"),
}
# the flags whose values form a closed set: listed by --help, refused by argparse otherwise
TRAIN_CHOICES = {"--variant": VARIANTS, "--objective": OBJECTIVES, "--dataset": DATASETS, "--mode": MODES,
                 "--precision": PRECISIONS, "--backend": ops.backends.NAMES}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a JEM-style classifier with EB-JDAT",
                       description="Train a JEM-style classifier with EB-JDAT and write checkpoints, "
                       "metrics.jsonl, summary.json, samples.png and energy.png into the run folder. With no "
                       "flags it trains on the built-in digits, offline, in a few minutes on 2 CPU cores. "
                       "Settings come from the variant's published settings, then --config, then the flags.")
    p.add_argument("--config", metavar="FILE", help="a TOML file of training settings, named as in a run's "
                   "config.json (e.g. steps = 500)")
    p.add_argument("--resume", metavar="PATH", help="continue from a run folder or checkpoint file (a run "
                   "folder stopped before its first checkpoint starts again at step 0; one stopped during its "
                   "closing evaluation gets it and its summary.json)")
    for flag, (_, typ, text) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, help=text, choices=TRAIN_CHOICES.get(flag))
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="compile the model with torch.compile (default: off)")
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
    print(format_summary(summary, trainer.cfg.out))
    return 0


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def _pgd_setting(cfg: dict) -> str:
    """" (linf eps 8/255, 10 steps)": the closing evaluation's attack, from the run's config."""
    if "eval_eps" not in cfg or "eval_pgd_steps" not in cfg:
        return ""
    from .evaluate.cli import fmt_eps
    return f" (linf eps {fmt_eps(cfg['eval_eps']).split(' =')[0]}, PGD-{cfg['eval_pgd_steps']})"


def format_summary(summary: dict, out) -> str:
    """The few lines ``ebjdat train`` ends with: the closing evaluation's accuracy,
    robustness, generation and energy gaps, the time taken and where the run and its
    summary.json are (every number, in full, is in summary.json; a missing one shows "-")."""
    s = summary.get
    rows = [("clean accuracy", _pct(s("clean_acc"))),
            ("PGD accuracy", _pct(s("pgd_acc")) + _pgd_setting(s("config") or {}))]
    for suffix, what in (("", "buffer samples"), ("_fresh", "fresh samples")):
        if s("gen_fd" + suffix) is not None:
            rows.append((f"generation, {what}", (f"FD {s('gen_fd' + suffix):.2f}, "
                                                 f"{_pct(s('gen_cond_acc' + suffix))} of them the model's class")))
    gaps = [f"{name} {s(key):+.4g}" for name, key in (("adversarial - clean", "energy_gap_adv"),
                                                      ("generated - clean", "energy_gap_gen"))
            if s(key) is not None]
    if gaps:
        rows.append(("energy gaps", ", ".join(gaps)))
    if s("wall_time_s") is not None:
        rows.append(("time", f"{s('wall_time_s'):.1f} s training"
                     + (f", {s('eval_s'):.1f} s closing evaluation" if s("eval_s") is not None else "")))
    rows += [("run folder", str(out)), ("every number", str(Path(out) / "summary.json"))]
    width = max(len(k) for k, _ in rows)
    lines = [f"ebjdat train: done at step {s('step')}"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if s("sanity"):
        lines.append("  WARNING: sanity checks failed; do not trust the robustness numbers:")
        lines += [f"    - {w}" for w in s("sanity")]
    return "\n".join(lines)


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
    x = run_chains(sampler, x0.to(dev), None if y is None else y.to(dev), steps)
    if (bad := nonfinite_rows(x)):   # a picture of them: magenta squares (save_grid's NaN colour)
        raise ValueError(f"{bad} of {len(x)} samples hold non-finite values after {steps} SGLD steps (the "
                         f"sampler diverged); nothing written; try fewer --steps, or an earlier checkpoint")
    from .evaluate import generation
    what = f"{len(x)} samples after {steps} SGLD steps from {start}" + (
        f", class {args.y}" if args.y is not None else "")
    acc = generation.grid_accuracy(model, x, None if y is None else y.to(dev), n_classes)   # None off the digits
    plots.save_grid(args.out, x.float().cpu(), title=plots.flag_noise(what, acc, n_classes))
    print(f"wrote {x.shape[0]} samples after {steps} SGLD steps from {start} to {args.out}")
    return 0


def run_chains(sampler, x0: torch.Tensor, y: torch.Tensor | None, steps: int, *, progress: bool = True):
    """``sampler.sample(x_init=x0, y=y, n_steps=steps)`` one step per call under a tqdm bar
    on stderr (a terminal only: the bar would garble a log or an error message). The
    sampler's generator continues its stream from call to call, so the chains equal those
    of one call of ``steps`` steps."""
    if steps == 0:
        return sampler.sample(x_init=x0, y=y, n_steps=0)
    x = x0
    for _ in tqdm(range(steps), desc="SGLD", unit="step", disable=None if progress else True, leave=False,
                  dynamic_ncols=True, file=sys.stderr):
        x = sampler.sample(x_init=x, y=y, n_steps=1)
    return x


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw SGLD samples from a trained checkpoint",
                       description="Draw SGLD samples of a checkpoint into a grid picture.")
    p.add_argument("--checkpoint", required=True, help="a run folder or checkpoint file")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64; from the buffer at "
                   "most its size, with --fresh any number)")
    p.add_argument("--steps", type=int, help="SGLD steps; 0 pictures the starting points (default: the "
                   "run's own number of SGLD steps)")
    p.add_argument("--fresh", action="store_true", help="start fresh chains from the run's initial "
                   "distribution (its class-Gaussian, class --y's with --y; uniform noise for JEM), "
                   "not from the buffer")
    p.add_argument("--seed", type=int, default=0, help="seed of the starts and the sampler noise (default 0)")
    p.add_argument("--y", type=int, help="sample this class only, from E(x, y) (default: all classes, from "
                   "E(x))")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto, the GPU when there is one)")
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


def build_parser() -> argparse.ArgumentParser:
    """The ``ebjdat`` parser with every subcommand (``main`` runs it; the tests read its help)."""
    parser = argparse.ArgumentParser(prog="ebjdat", description="Energy-based joint distribution adversarial "
                                     "training (EB-JDAT): train, evaluate and sample JEM-style classifiers, "
                                     "and benchmark the fused ops.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _train_parser(sub)
    from .evaluate.cli import add_parser as add_eval
    add_eval(sub)
    _sample_parser(sub)
    from .bench.cli import add_parser as add_bench
    add_bench(sub)
    from .demo import add_parser as add_demo
    add_demo(sub)
    p = sub.add_parser("info", help="list the backends this machine can run",
                       description="Print torch's version, whether a CUDA GPU is visible, the backends of the "
                       "fused ops available here (and why the others are not) and which one auto picks on "
                       "CPU and GPU tensors.")
    p.set_defaults(fn=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
