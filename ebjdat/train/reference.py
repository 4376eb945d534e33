"""The published loop's adversarial sampler, waste included (REFERENCE.md).

Micro-batches of ``cfg.adv_micro_batch`` in a Python loop, the clean logits recomputed at
every step, and two forwards of x_adv per step (one for logit_y, one for the perceptual
distance). The random start is drawn for the whole batch first, with the same Philox
stream as the fast path, so both modes see the same starts.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import energy, ops


def reference_attack(model: nn.Module, x: Tensor, y: Tensor, cfg, generator) -> Tensor:
    """x_adv of the EB-JDAT objective J = sum logit_y + mean P, in eval mode, then train mode."""
    was_training = model.training
    model.eval()
    x_adv = torch.empty_like(x)
    ops.pgd_init_(x_adv, x, eps=cfg.pgd_eps, clamp=(-1.0, 1.0), generator=generator)
    out = []
    for i in range(0, x.shape[0], cfg.adv_micro_batch):
        xb, yb, xa = x[i:i + cfg.adv_micro_batch], y[i:i + cfg.adv_micro_batch], x_adv[i:i + cfg.adv_micro_batch]
        for _ in range(cfg.pgd_steps):
            xa = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                clean = energy.logits_of(model, xb).detach()               # recomputed per step
                j = energy.logits_of(model, xa).gather(1, yb[:, None]).sum()
                p = energy.perceptual_distance(clean, energy.logits_of(model, xa)).mean()  # 2nd forward
                (g,) = torch.autograd.grad(_objective(cfg, j, p, xa, yb, model), xa)
            xa = xa.detach() + cfg.pgd_alpha * g.sign()
            if cfg.pgd_project:
                xa = xb + (xa - xb).clamp(-cfg.pgd_eps, cfg.pgd_eps)
            xa = xa.clamp(-1.0, 1.0)
        out.append(xa.detach())
    model.train(was_training)
    return torch.cat(out)


def _objective(cfg, j: Tensor, p: Tensor, xa: Tensor, yb: Tensor, model) -> Tensor:
    """The quantity ascended: the code's J, or the config's alternatives."""
    if cfg.adv_objective == "ebjdat":
        return j + p
    logits = energy.logits_of(model, xa)
    if cfg.adv_objective == "energy":
        return energy.conditional(logits, yb).sum()
    return torch.nn.functional.cross_entropy(logits, yb)
