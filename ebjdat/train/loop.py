"""Trainer.fit: the iteration loop with logging, checkpoints, the divergence guard, the
final evaluation and the run folder's files.

<out>/checkpoints/step_XXXXXXXX.pt  every ckpt_every steps and at the end (atomic)
<out>/metrics.jsonl                 one JSON object per log interval
<out>/summary.json                  step, clean_acc, pgd_acc, wall time, config
<out>/samples.png                   a grid of SGLD samples
<out>/energy.png                    energies of clean, adversarial and generated samples
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import plots
from ..attacks import PGD
from ..energy import logits_of, marginal
from . import checkpoint
from . import distributed as dist
from .trainer import TrainingDiverged

METRICS = ("loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv")


def total_steps(trainer) -> int:
    cfg = trainer.cfg
    return cfg.steps if cfg.steps is not None else cfg.epochs * trainer.steps_per_epoch


def fit(trainer) -> dict:
    """Train to total_steps, then evaluate and write the run folder; returns the summary."""
    cfg, out = trainer.cfg, Path(trainer.cfg.out)
    main = dist.is_main()
    ckpts = out / "checkpoints"
    if main:
        ckpts.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out / "metrics.jsonl", trainer.step)
    total, t0 = total_steps(trainer), time.time()
    sums = {k: torch.zeros((), device=trainer.device) for k in METRICS}
    count = 0
    bar = tqdm(total=total, initial=trainer.step, disable=not main, desc=f"{cfg.variant} {cfg.mode}",
               unit="it", dynamic_ncols=True, mininterval=1.0)
    try:
        while trainer.step < total:
            m = trainer.train_step()
            for k in METRICS:
                sums[k] += m[k]
            count += 1
            bar.update(1)
            last = trainer.step == total
            if trainer.step % cfg.log_every == 0 or last:
                trainer.check_finite()
                row = {"step": trainer.step, "lr": m["lr"], **{k: float(v) / count for k, v in sums.items()},
                       "wall_s": round(time.time() - t0, 2)}
                for v in sums.values():
                    v.zero_()
                count = 0
                bar.set_postfix(loss=f"{row['loss']:.3f}", l_pyx=f"{row['l_pyx']:.3f}")
                if main:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
            if trainer.step % cfg.ckpt_every == 0 or last:
                trainer.check_finite()   # never write a checkpoint of a diverged model
                save(trainer, checkpoint.checkpoint_path(ckpts, trainer.step))
    except TrainingDiverged as e:
        bar.close()
        raise _diverged(trainer, out, e) from None
    bar.close()
    summary = {"step": trainer.step, **evaluate(trainer), "wall_time_s": round(time.time() - t0, 2),
               "config": cfg.to_dict()}
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def save(trainer, path: Path) -> None:
    """Checkpoint (every rank takes part in gathering buffer shards; rank 0 writes)."""
    state = trainer.state_dict()
    if dist.is_main():
        checkpoint.save_checkpoint(path, state)
        checkpoint.prune(path.parent, keep=3)
    dist.barrier()


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint we continue from."""
    if not path.exists():
        return
    rows = [r for r in path.read_text().splitlines() if r and json.loads(r)["step"] <= step]
    path.write_text("".join(r + "\n" for r in rows))


def _diverged(trainer, out: Path, err: TrainingDiverged) -> TrainingDiverged:
    """Save a picture of the current samples and name the last good checkpoint."""
    msg = str(err)
    if dist.is_main():
        pic = out / "diverged_samples.png"
        plots.save_grid(pic, trainer.last_samples.detach().float().cpu())
        good = checkpoint.latest_checkpoint(out / "checkpoints")
        msg += (f"; samples at that point: {pic}; last good checkpoint: {good}"
                if good else f"; samples at that point: {pic}; no checkpoint was written yet")
        msg += "; lower the learning rate or raise loss_bound, then resume or restart"
    return TrainingDiverged(msg)


@torch.no_grad()
def evaluate(trainer, n_energy: int = 256) -> dict:
    """Clean and PGD accuracy on the held-out split (eval mode), plus the pictures.

    PGD: linf, eval_pgd_steps steps, eps = cfg.eval_eps in [0, 1] pixel units, so 2 * eps
    in the model's [-1, 1] units, step eps / 4, random start.
    """
    cfg, model = trainer.cfg, trainer.model
    model.eval()
    x, y = trainer.test_set.x.to(trainer.device), trainer.test_set.y.to(trainer.device)
    eps = 2 * cfg.eval_eps
    attack = PGD(model, eps=eps, alpha=eps / 4, steps=cfg.eval_pgd_steps, clamp=(-1.0, 1.0),
                 generator=trainer.philox)
    clean = adv = 0
    for i in range(0, len(x), 500):
        xb, yb = x[i:i + 500], y[i:i + 500]
        clean += (logits_of(model, xb).argmax(1) == yb).sum()
        adv += (logits_of(model, attack(xb, yb)).argmax(1) == yb).sum()
    result = {"clean_acc": float(clean) / len(x), "pgd_acc": float(adv) / len(x)}
    if dist.is_main() and trainer.cfg.out:
        _pictures(trainer, Path(trainer.cfg.out), x[:n_energy], y[:n_energy], attack)
    model.train(True)
    return result


def _pictures(trainer, out: Path, x, y, attack) -> None:
    """samples.png (SGLD samples from the buffer) and energy.png (energy histograms)."""
    model = trainer.model
    saved = [b.clone() for b in model.buffers()]   # train-mode sampling moves BatchNorm stats
    with torch.enable_grad():
        x_adv = attack(x, y)
        x_gen = trainer.sample_q()
    for b, s in zip(model.buffers(), saved):
        b.copy_(s)
    model.eval()
    plots.save_grid(out / "samples.png", x_gen[:64].float().cpu())
    energies = {name: marginal(logits_of(model, v)).float().cpu()
                for name, v in (("clean", x), ("adversarial", x_adv), ("generated", x_gen))}
    plots.save_histograms(out / "energy.png", energies, title=f"E(x) = -logsumexp logits, step {trainer.step}")
