"""The EB-JDAT objective (ebjdat/published.py) and the learning-rate schedule.

With ``f(x) = logsumexp(logits(x)) = -E(x)``:
  L = w_px * -(mean f(x_pd) - mean f(x_q))        p(x): data up, samples down
    + w_pyx * CE(logits(x_lab), y_lab)            p(y | x)
    + w_pxadv * -(mean f(x_pd) - mean f(x_adv))   p(x, x_adv)
    + w_pyxadv * CE(logits(x_adv), y_lab)         p(y | x_adv)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def px_term(logits_data: Tensor, logits_model: Tensor) -> Tensor:
    """``-(mean f(x_data) - mean f(x_model))``: maximum likelihood of p(x) by contrast."""
    return -(torch.logsumexp(logits_data, 1).mean() - torch.logsumexp(logits_model, 1).mean())


def weighted(cfg, terms: dict) -> Tensor:
    """The loss: the four terms weighted by cfg.w_px, w_pyx, w_pxadv, w_pyxadv."""
    return (cfg.w_px * terms["l_px"] + cfg.w_pyx * terms["l_pyx"]
            + cfg.w_pxadv * terms["l_pxadv"] + cfg.w_pyxadv * terms["l_pyxadv"])


def terms_of(logits_pd, logits_q, logits_lab, y_lab, logits_pxadv, logits_pd_adv, logits_pyxadv) -> dict:
    """The four terms from the logits each one reads; a term whose logits are None (its
    weight is 0 and its work skipped) is a 0 tensor."""
    zero = next(t for t in (logits_lab, logits_pyxadv, logits_pd) if t is not None).new_zeros(())
    return {"l_px": zero if logits_q is None else px_term(logits_pd, logits_q),
            "l_pyx": zero if logits_lab is None else F.cross_entropy(logits_lab, y_lab),
            "l_pxadv": zero if logits_pxadv is None else px_term(logits_pd_adv, logits_pxadv),
            "l_pyxadv": zero if logits_pyxadv is None else F.cross_entropy(logits_pyxadv, y_lab)}


def objective(cfg, logits, clean: tuple, x_pd: Tensor, x_adv: Tensor | None, y_lab: Tensor) -> tuple[Tensor, dict]:
    """(loss, terms) of one iteration, forwarding x_adv once (fast mode; the published
    loop's extra forwards are ``ebjdat.published.objective``).

    logits: the model's forward, x -> (B, K) float32 logits (None -> None); clean: the
    (B, K) logits of x_pd, x_q and x_lab from before the attack, None where an objective
    switched their terms off (x_adv too); terms: 0-d tensors, no host sync.
    """
    logits_pd, logits_q, logits_lab = clean
    logits_adv = logits(x_adv)
    pxadv = logits_adv if cfg.w_pxadv else None
    return_terms = terms_of(logits_pd, logits_q, logits_lab, y_lab, pxadv, logits_pd, logits_adv)
    return weighted(cfg, return_terms), return_terms


def learning_rate(cfg, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up ``lr * step / warmup_iters`` from 0 (the published code's: its first
    iteration has lr 0), then x decay_rate at each milestone in ``decay_epochs``
    (the published schedules)."""
    lr = cfg.lr
    if step < cfg.warmup_iters:
        return lr * step / cfg.warmup_iters
    epoch = step // max(1, steps_per_epoch)
    return lr * cfg.decay_rate ** sum(epoch >= m for m in cfg.decay_epochs)
