"""Trainer.fit: the iteration loop with logging, checkpoints, the divergence guard, the
closing evaluation it is handed (``ebjdat.evaluate.closing``) and the run folder's files.

<out>/checkpoints/step_XXXXXXXX.pt  every ckpt_every steps and at the end (atomic)
<out>/metrics.jsonl                 one JSON object per log interval
<out>/summary.json                  step, clean_acc, pgd_acc, wall time, threads, resumes, config
<out>/samples.png                   a grid of SGLD samples (the closing evaluation)
<out>/energy.png                    energies of clean, adversarial and generated samples (idem)
<out>/config.json                   the run's settings, written when it starts (``runs.folders``)
<out>/.lock                         held by the one process writing into the folder (idem)
<out>/retry.toml                    after a divergence: the run's settings with lr halved

Recovery: a run stopped before its first checkpoint starts again at step 0 with
``ebjdat train --resume <out>`` (Trainer.resume); one stopped during its closing evaluation
(last checkpoint at the final step, no summary.json) gets its evaluation and summary from
the same command.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import compiling, plots, progress
from ..objectives import METRICS
from ..runs import checkpoint
from ..runs.checkpoint import CheckpointWriteError, run_folder_of
from ..runs.config import TrainConfig
from ..runs.folders import SUMMARY, check_run_folder, hold_run_folder, write_run_config
from . import distributed as dist
from .watch import TrainingDiverged


def total_steps(trainer) -> int:
    cfg = trainer.cfg
    return cfg.steps if cfg.steps is not None else cfg.epochs * trainer.steps_per_epoch


@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op threads set to n inside the block (the trainer's choice)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(trainer, closing=None) -> dict:
    """Train to total_steps, then evaluate and write the run folder; returns the summary.

    closing(trainer, folder) -> dict: the closing evaluation, its metrics merged into the
    summary; ``folder`` the run folder for its pictures (None on ranks other than the main
    one). ``ebjdat train`` passes ``ebjdat.evaluate.closing.evaluate``; None: no evaluation.
    """
    cfg = trainer.cfg
    if cfg.out is None:
        raise ValueError("out is None: fit writes a run folder; set out (ebjdat train --out)")
    out, main = Path(cfg.out), dist.is_main()
    total = total_steps(trainer)
    _check_steps_left(trainer, out, total, main)
    with contextlib.ExitStack() as held:
        if main:   # one writer per run folder, for the whole run (hold_run_folder)
            held.enter_context(hold_run_folder(out))
            check_run_folder(out, trainer.resumed_from, restart=trainer.restarted_in)
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            write_run_config(out, cfg.to_dict())
            _carry_metrics(trainer, out)
        with num_threads(trainer.threads):
            _train(trainer, out, total, main)
            t_eval = time.time()
            result = {} if closing is None else _closing(trainer, closing, out, main)
        # wall_time_s: training time of the whole run (across resumes); eval_s: the final evaluation
        summary = {"step": trainer.step, **result, "wall_time_s": round(trainer.wall_s, 2),
                   "eval_s": round(time.time() - t_eval, 2),
                   "threads": trainer.threads, "threads_reason": trainer.threads_reason,
                   "fast_path": fast_path(trainer),
                   "resumes": trainer.resumes, "config": cfg.to_dict()}
        if main:
            (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def _closing(trainer, closing, out: Path, main: bool) -> dict:
    """closing(trainer, folder), with a line on stderr as each of its parts finishes (main rank)."""
    if not main:
        return closing(trainer, None)
    with progress.lines(sys.stderr, f"closing evaluation of {out.name}"):
        return closing(trainer, out)


def _check_steps_left(trainer, out: Path, total: int, main: bool) -> None:
    """ValueError when there is nothing to do, naming the command that trains further. A
    resumed run at its last step without summary.json (stopped during its closing
    evaluation) is not refused: fit runs the closing evaluation and writes the summary."""
    step = trainer.step
    if step < total:
        return
    if step == total and trainer.resumed_from is not None and not (out / SUMMARY).exists():
        if main:
            print(f"ebjdat: {trainer.resumed_from} is at the run's last step ({total}) and {out} holds no "
                  f"{SUMMARY} (the run was stopped during its closing evaluation): running the closing "
                  f"evaluation only", file=sys.stderr)
        return
    if step == total:
        raise ValueError(f"nothing to train: the checkpoint is at step {step}, where the run ends, and its "
                         f"summary is written ({out / SUMMARY}); to train further: ebjdat train --resume {out} "
                         f"--steps N with N > {step}")
    raise ValueError(f"nothing to train: the checkpoint is at step {step} and the run "
                     f"ends at step {total}; give --steps larger than {step}")


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
        folder = run_folder_of(path, resolve=False)   # the folder named, never where a link leads
        try:
            checkpoint.save_init(folder, trainer.state_dict_init(), trainer.init_state)
            checkpoint.save_checkpoint(path, state)
        except CheckpointWriteError as e:
            raise _write_failed(e, path, folder) from None
        checkpoint.prune(path.parent, keep=3)
    dist.barrier()


def _write_failed(err: CheckpointWriteError, path: Path, folder: Path) -> CheckpointWriteError:
    """The one-line error of a failed checkpoint write: what failed, what was kept, what to do."""
    kept = checkpoint.latest_checkpoint(path.parent)
    if kept is not None:
        then = f"the earlier checkpoints are kept: {kept} is the newest; free disk space, then continue"
    else:
        then = "no earlier checkpoint was written; free disk space, then start it again"
    return CheckpointWriteError(f"{err}; {then} with ebjdat train --resume {folder}")


def _carry_metrics(trainer, out: Path) -> None:
    """On resume: metrics.jsonl keeps the rows up to the checkpoint's step (rows written
    after it are dropped: they are trained again); resumed into a new folder, it starts
    with the source run's rows; restarted at step 0 (Trainer.restarted_in), it starts empty."""
    if trainer.resumed_from is not None:
        source = run_folder_of(trainer.resumed_from, resolve=False) / "metrics.jsonl"
    elif trainer.restarted_in is not None:   # step 0: every row is trained again
        source = Path(trainer.restarted_in) / "metrics.jsonl"
    else:
        return
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
            plots.save_grid(pic, trainer.last_samples.detach().float().cpu(),
                            title=f"last samples before the run diverged: {err}")
            msg += f"; samples at that point: {pic}"
        good = checkpoint.latest_checkpoint(out / "checkpoints")
        msg += f"; last good checkpoint: {good}" if good else "; no checkpoint was written yet"
        msg += "; " + _retry_advice(trainer.cfg, out)
    return TrainingDiverged(msg)


def _retry_advice(cfg, out: Path) -> str:
    """What to do after a divergence. lr and loss_bound change what the run computes, so
    --resume cannot change them (config.RESUMABLE): the advice is a new run, from
    ``out/retry.toml`` (this run's settings with lr halved) when that file reproduces them."""
    retry = out / "retry.toml"
    lower = cfg.lr / 2
    want = {**cfg.to_dict(), "lr": lower, "out": None}
    retry.write_text("# the settings of the diverged run in this folder, lr halved: "
                     "ebjdat train --config retry.toml --out <new folder>\n" + _to_toml(want))
    try:
        same = TrainConfig.from_toml(str(retry)).to_dict() == want
    except ValueError:   # a value TOML cannot hold as the run had it
        same = False
    if not same:
        retry.unlink()
        return (f"--resume cannot change lr or loss_bound: start a new run with a lower lr (e.g. lr = {lower:g}) "
                f"or a higher loss_bound in a TOML file: ebjdat train --config FILE --out <new folder>")
    return (f"--resume cannot change lr or loss_bound (they make another run): {retry} holds this run's "
            f"settings with lr halved ({lower:g}; edit loss_bound there to raise it): "
            f"ebjdat train --config {retry} --out <new folder>")


def _to_toml(values: dict) -> str:
    """Top-level TOML of a config dict; None values left out (TOML has no null: the preset's
    value applies, which ``_retry_advice`` checks), ``out`` too (the new run names its own)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)
    return "".join(f"{k} = {value(v)}\n" for k, v in values.items() if v is not None and k != "out")
