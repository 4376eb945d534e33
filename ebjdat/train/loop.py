"""Trainer.fit: the iteration loop with logging, checkpoints, the divergence guard, the
final evaluation and the run folder's files.

<out>/checkpoints/step_XXXXXXXX.pt  every ckpt_every steps and at the end (atomic)
<out>/metrics.jsonl                 one JSON object per log interval
<out>/summary.json                  step, clean_acc, pgd_acc, wall time, threads, resumes, config
<out>/samples.png                   a grid of SGLD samples
<out>/energy.png                    energies of clean, adversarial and generated samples
"""
from __future__ import annotations

import contextlib
import copy
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import compiling, plots
from ..energy import logits_of
from ..evaluate import generation
from ..evaluate.core import evaluate as evaluate_model
from ..evaluate.landscape import energy_landscape, generate
from . import checkpoint
from . import distributed as dist
from .runs import METRICS, TrainingDiverged, run_folder_of


def total_steps(trainer) -> int:
    cfg = trainer.cfg
    return cfg.steps if cfg.steps is not None else cfg.epochs * trainer.steps_per_epoch


def check_run_folder(out: Path, resumed_from: Path | None = None) -> None:
    """Before any work: a fresh run writes only into a new or empty folder; a resumed one
    into the folder its checkpoint lies in (if that holds no newer checkpoint) or a new or
    empty one. Never into another run's files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; name a new folder")
    if resumed_from is not None and out.resolve() == run_folder_of(resumed_from):
        newest = checkpoint.latest_checkpoint(Path(resumed_from).parent)
        if newest is not None and newest.resolve() != Path(resumed_from).resolve():
            raise ValueError(f"{newest} is newer than {resumed_from}: continuing the older one in "
                             f"{out} would mix two histories; resume {newest}, or pass --out <new folder>")
        return
    if out.is_dir() and any(out.iterdir()):
        held = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise ValueError(f"--out {out} already holds files ({held}, ...): continue that run with "
                         f"--resume {out}, or name a new folder")


@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op threads set to n inside the block (the trainer's choice)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(trainer) -> dict:
    """Train to total_steps, then evaluate and write the run folder; returns the summary."""
    cfg = trainer.cfg
    if cfg.out is None:
        raise ValueError("out is None: fit writes a run folder; set out (ebjdat train --out)")
    out, main = Path(cfg.out), dist.is_main()
    total = total_steps(trainer)
    if trainer.step >= total:
        raise ValueError(f"nothing to train: the checkpoint is at step {trainer.step} and the run "
                         f"ends at step {total}; give --steps larger than {trainer.step}")
    if main:
        check_run_folder(out, trainer.resumed_from)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        _carry_metrics(trainer, out)
    with num_threads(trainer.threads):
        _train(trainer, out, total, main)
        t_eval = time.time()
        result = evaluate(trainer)
    # wall_time_s: training time of the whole run (across resumes); eval_s: the final evaluation
    summary = {"step": trainer.step, **result, "wall_time_s": round(trainer.wall_s, 2),
               "eval_s": round(time.time() - t_eval, 2),
               "threads": trainer.threads, "threads_reason": trainer.threads_reason,
               "fast_path": fast_path(trainer),
               "resumes": trainer.resumes, "config": cfg.to_dict()}
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def fast_path(trainer) -> dict:
    """What of fast mode's recipe took effect: the model's memory format, the precision
    (and why), and torch.compile (requested, active or why not, dynamo's graph and break counts)."""
    info = dict(trainer.compile_info)
    if info["active"]:
        info.update(compiling.graph_counts())
    return {"channels_last": trainer.memory_format is not None,
            "precision": trainer.precision, "precision_reason": trainer.precision_reason,
            "compile": info}


def _train(trainer, out: Path, total: int, main: bool) -> None:
    """The iteration loop: metrics rows every log_every steps, checkpoints every ckpt_every.
    The log window and the wall time continue from the checkpoint (Trainer.log_sums,
    log_count, wall_s), so a resumed run writes the rows an uninterrupted one would."""
    cfg, ckpts = trainer.cfg, out / "checkpoints"
    base, t0 = trainer.wall_s, time.time()
    sums = trainer.log_sums
    bar = tqdm(total=total, initial=trainer.step, disable=not main, desc=f"{cfg.variant} {cfg.mode}",
               unit="it", dynamic_ncols=True, mininterval=1.0)
    try:
        while trainer.step < total:
            m = trainer.train_step()
            for k in METRICS:
                sums[k] += m[k]
            trainer.log_count += 1
            trainer.wall_s = base + time.time() - t0
            bar.update(1)
            last = trainer.step == total
            if trainer.step % cfg.log_every == 0 or last:
                trainer.check_finite()
                row = {"step": trainer.step, "lr": m["lr"],
                       **{k: float(v) / trainer.log_count for k, v in sums.items()},
                       "window": trainer.log_count, "wall_s": round(trainer.wall_s, 2)}
                for v in sums.values():
                    v.zero_()
                trainer.log_count = 0
                bar.set_postfix(loss=f"{row['loss']:.3f}", l_pyx=f"{row['l_pyx']:.3f}")
                if main:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
            if trainer.step % cfg.ckpt_every == 0 or last:
                trainer.check_finite()   # never write a checkpoint of a diverged model
                save(trainer, checkpoint.checkpoint_path(ckpts, trainer.step))
    except TrainingDiverged as e:
        raise _diverged(trainer, out, e) from None
    finally:
        bar.close()


def save(trainer, path: Path) -> None:
    """Checkpoint (every rank takes part in gathering buffer shards; rank 0 writes), with
    the run's initial distribution beside it (save_init)."""
    state = trainer.state_dict()
    if dist.is_main():
        checkpoint.save_init(run_folder_of(path), trainer.state_dict_init(), trainer.init_state)
        checkpoint.save_checkpoint(path, state)
        checkpoint.prune(path.parent, keep=3)
    dist.barrier()


def _carry_metrics(trainer, out: Path) -> None:
    """On resume: metrics.jsonl keeps the rows up to the checkpoint's step (rows written
    after it are dropped: they are trained again); resumed into a new folder, it starts
    with the source run's rows."""
    if trainer.resumed_from is None:
        return
    source = run_folder_of(trainer.resumed_from) / "metrics.jsonl"
    rows = _metric_rows(source, trainer.step) if source.exists() else []
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _metric_rows(path: Path, step: int) -> list[dict]:
    """The rows of a metrics.jsonl up to ``step``. A last line cut short (a kill while it was
    written) is dropped with a note; a damaged line elsewhere is an error naming it."""
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                print(f"ebjdat: dropped the partial last line of {path} (the run was stopped while "
                      f"writing it)", file=sys.stderr)
                break
            raise ValueError(f"{path} line {i + 1} is not JSON: the file is damaged; repair or "
                             f"remove that line, then resume") from None
        if row.get("step", 0) <= step:
            rows.append(row)
    return rows


def _diverged(trainer, out: Path, err: TrainingDiverged) -> TrainingDiverged:
    """Save a picture of the current samples and name the last good checkpoint."""
    msg = str(err)
    if dist.is_main():
        if trainer.last_samples is not None:   # None: the objective draws no samples
            pic = out / "diverged_samples.png"
            plots.save_grid(pic, trainer.last_samples.detach().float().cpu())
            msg += f"; samples at that point: {pic}"
        good = checkpoint.latest_checkpoint(out / "checkpoints")
        msg += f"; last good checkpoint: {good}" if good else "; no checkpoint was written yet"
        msg += "; lower the learning rate or raise loss_bound, then resume or restart"
    return TrainingDiverged(msg)


def evaluate(trainer, n_gen: int = 2000) -> dict:
    """The closing evaluation, through ``ebjdat.evaluate`` on a copy of the model with
    generators of its own, so the training state is untouched (the state after ``fit``
    equals that of the same iterations without it): clean and PGD accuracy on the test
    split (linf, eps = cfg.eval_eps in [0, 1] pixels, cfg.eval_pgd_steps steps of eps / 4,
    random start); n_gen generated points (buffer rows continued by the run's sampler for
    its sgld_steps); on the digits their quality (``gen_fd``, ``gen_cond_acc`` against the
    model's own labels: ebjdat.evaluate.generation) and that of n_gen fresh chains from the
    run's initial distribution (``gen_fd_fresh``, ``gen_cond_acc_fresh``); the energy landscape of the test
    points, their adversarial points and the generated ones; and on the main rank
    samples.png (one labelled row per class) and energy.png in the run folder."""
    cfg = trainer.cfg
    model = copy.deepcopy(trainer.model).eval()
    x, y = trainer.test_set.x.to(trainer.device), trainer.test_set.y.to(trainer.device)
    seed = cfg.seed + 7919
    res, x_adv = evaluate_model(model, x, y, eps=cfg.eval_eps, steps=cfg.eval_pgd_steps, alpha=cfg.eval_eps / 4,
                                batch_size=500, seed=seed, return_adv=True)
    rows = trainer.buffer.data
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:n_gen]
    x_gen = generate(model, cfg, rows[pick.to(rows.device)].to(trainer.device), seed=seed)
    with torch.no_grad():
        y_gen = torch.cat([logits_of(model, c).argmax(1) for c in x_gen.split(256)])
    out = {"clean_acc": res["clean_acc"], "pgd_acc": res["pgd_acc"], "noise_acc": res["noise_acc"]}
    ds = trainer.test_set
    if generation.applies_to(tuple(ds.x.shape[1:]), ds.n_classes):
        out.update(generation.generation_metrics(x_gen, ds.x, y_gen))
        starts = generation.fresh_starts(trainer.init, n_gen, tuple(ds.x.shape[1:]), seed, trainer.device)
        out.update(generation.labelled_metrics(model, generate(model, cfg, starts, seed=seed + 1), ds.x,
                                               suffix="_fresh"))
    main_out = Path(cfg.out) if dist.is_main() and cfg.out else None
    png = main_out / "energy.png" if main_out else None
    title = f"{Path(cfg.out).name if cfg.out else 'run'}: {cfg.variant} ({cfg.objective}), step {trainer.step}"
    landscape = energy_landscape(model, x, x_adv, x_gen, png=png, title=f"E(x) = -logsumexp logits: {title}")
    out.update({k: landscape[k] for k in ("energy_gap_adv", "energy_gap_gen")})
    if main_out:
        sampler = f"{'PYLD' if cfg.sgld_inner > 1 else 'SGLD'} {cfg.sgld_steps} steps from buffer rows"
        plots.save_class_grid(main_out / "samples.png", x_gen, y_gen, ds.n_classes,
                              title=f"{title}; {sampler}; rows: the model's class")
    out["sanity"] = res["sanity"]
    return out

