"""The EB-JDAT objective as a table of terms (ebjdat/published.py), and the learning-rate schedule.

With ``f(x) = logsumexp(logits(x)) = -E(x)``:
  L = w_px * -(mean f(x_pd) - mean f(x_q))        p(x): data up, samples down
    + w_pyx * CE(logits(x_lab), y_lab)            p(y | x)
    + w_pxadv * -(mean f(x_pd) - mean f(x_adv))   p(x, x_adv)
    + w_pyxadv * CE(logits(x_adv), y_lab)         p(y | x_adv)

Each term is one ``Term`` of ``TERMS``: its name (the logged metric), its weight (a
TrainConfig field), the batches whose logits it reads ("pd": x_pd, "q": the sampler's
x_q, "lab": the labelled x_lab, "adv": the attack's x_adv) and its function. The fast
objective, the published one (ebjdat/published.py), the metrics, the config's checks and
the trainer's choice of work (no sampler unless a weighted term reads "q", no attack
unless one reads "adv") all read this table: a new term is one entry here plus its weight
field (and preset values) in ebjdat/runs/config.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BATCHES = ("pd", "q", "lab", "adv")   # the batches a term may read, in the iteration's order


def px_term(logits_data: Tensor, logits_model: Tensor) -> Tensor:
    """``-(mean f(x_data) - mean f(x_model))``: maximum likelihood of p(x) by contrast."""
    return -(torch.logsumexp(logits_data, 1).mean() - torch.logsumexp(logits_model, 1).mean())


@dataclass(frozen=True)
class Term:
    """One weighted term: ``fn(*logits of inputs, y_lab) -> 0-d tensor``."""
    name: str                           # the logged metric, "l_..."
    weight: str                         # the TrainConfig field holding its weight
    inputs: tuple[str, ...]             # the batches (BATCHES) whose logits it reads, in fn's order
    fn: Callable[..., Tensor]


TERMS = (
    Term("l_px", "w_px", ("pd", "q"), lambda pd, q, y: px_term(pd, q)),
    Term("l_pyx", "w_pyx", ("lab",), lambda lab, y: F.cross_entropy(lab, y)),
    Term("l_pxadv", "w_pxadv", ("pd", "adv"), lambda pd, adv, y: px_term(pd, adv)),
    Term("l_pyxadv", "w_pyxadv", ("adv",), lambda adv, y: F.cross_entropy(adv, y)),
)
METRICS = ("loss",) + tuple(t.name for t in TERMS)   # what a training run logs


def active(cfg) -> tuple[Term, ...]:
    """The terms whose weight in cfg is not 0 (the others cost nothing: their work is skipped)."""
    return tuple(t for t in TERMS if getattr(cfg, t.weight))


def reads(cfg) -> frozenset[str]:
    """The batches the active terms read: the work an iteration does ("q": sample, "adv": attack)."""
    return frozenset(b for t in active(cfg) for b in t.inputs)


def watched(cfg) -> str:
    """What cfg.loss_bound watches: cfg.bound_on ("loss" or a term's name), or the loss
    when that term's weight is 0."""
    term = next((t for t in TERMS if t.name == cfg.bound_on), None)
    return cfg.bound_on if term is None or getattr(cfg, term.weight) else "loss"


def weigh(cfg, logits_of_term: Callable[[Term], list]) -> tuple[Tensor, dict]:
    """(loss, terms): every active term from the logits ``logits_of_term(term)`` gives it,
    weighted and summed, in TERMS' order; an inactive term is a 0 tensor (no work)."""
    terms, loss = {}, None
    for t in TERMS:
        if getattr(cfg, t.weight):
            terms[t.name] = t.fn(*logits_of_term(t))
            part = getattr(cfg, t.weight) * terms[t.name]
            loss = part if loss is None else loss + part
    zero = next(iter(terms.values())).new_zeros(())
    return loss, {t.name: terms.get(t.name, zero) for t in TERMS}


def objective(cfg, logits, clean: dict, x_pd: Tensor, x_adv: Tensor | None, y_lab: Tensor) -> tuple[Tensor, dict]:
    """(loss, terms) of one iteration, forwarding x_adv once and reusing the clean logits
    of x_pd (fast mode; the published loop's extra forwards: ``ebjdat.published.objective``).

    logits: the model's forward, x -> (B, K) float32 logits (None -> None); clean: {"pd",
    "q", "lab"} -> the (B, K) logits from before the attack, None where no active term reads
    them; terms: 0-d tensors, no host sync. x_pd is not forwarded again (the signature is
    the published objective's).
    """
    have = {**clean, "adv": logits(x_adv)}
    return weigh(cfg, lambda t: [have[b] for b in t.inputs] + [y_lab])


def learning_rate(cfg, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up ``lr * step / warmup_iters`` from 0 (the published code's: its first
    iteration has lr 0), then x decay_rate at each milestone in ``decay_epochs``
    (the published schedules)."""
    lr = cfg.lr
    if step < cfg.warmup_iters:
        return lr * step / cfg.warmup_iters
    epoch = step // max(1, steps_per_epoch)
    return lr * cfg.decay_rate ** sum(epoch >= m for m in cfg.decay_epochs)
