"""The EB-JDAT objective (REFERENCE.md) and the learning-rate schedule.

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


def objective(cfg, logits_pd: Tensor, logits_q: Tensor, logits_lab: Tensor, y_lab: Tensor,
              logits_adv: Tensor, logits_pd2: Tensor | None = None,
              logits_adv2: Tensor | None = None) -> tuple[Tensor, dict]:
    """(loss, terms): the weighted sum and its four terms (0-d tensors, no host sync).

    logits_*: (B, K). logits_pd2 / logits_adv2: the reference loop's second forwards of
    x_pd (for p(x, x_adv)) and x_adv (for p(y | x_adv)); the same values, None reuses.
    """
    f_pd = torch.logsumexp(logits_pd, 1).mean()
    f_pd2 = f_pd if logits_pd2 is None else torch.logsumexp(logits_pd2, 1).mean()
    f_q = torch.logsumexp(logits_q, 1).mean()
    f_adv = torch.logsumexp(logits_adv, 1).mean()
    terms = {
        "l_px": -(f_pd - f_q),
        "l_pyx": F.cross_entropy(logits_lab, y_lab),
        "l_pxadv": -(f_pd2 - f_adv),
        "l_pyxadv": F.cross_entropy(logits_adv if logits_adv2 is None else logits_adv2, y_lab),
    }
    loss = (cfg.w_px * terms["l_px"] + cfg.w_pyx * terms["l_pyx"]
            + cfg.w_pxadv * terms["l_pxadv"] + cfg.w_pyxadv * terms["l_pyxadv"])
    return loss, terms


def learning_rate(cfg, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up ``lr * step / warmup_iters`` from 0 (the published code's: its first
    iteration has lr 0), then x decay_rate at each milestone in ``decay_epochs``
    (REFERENCE.md's schedules)."""
    lr = cfg.lr
    if step < cfg.warmup_iters:
        return lr * step / cfg.warmup_iters
    epoch = step // max(1, steps_per_epoch)
    return lr * cfg.decay_rate ** sum(epoch >= m for m in cfg.decay_epochs)
