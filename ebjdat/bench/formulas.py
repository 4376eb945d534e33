"""Bytes and FLOPs, written down.

Bytes of an elementwise op are its compulsory traffic: each x-sized tensor it reads once
plus each it writes once, ``numel * element_size`` each (``registry.Op.traffic``: its
other tensors, and its target unless it only writes it; per-sample (B,) tensors are
left out). Random numbers drawn inside a fused kernel are not traffic (the eager version
materialises them, which is its cost). E.g. sgld_step_ reads x and grad and writes x;
pgd_init_ reads x_orig and writes x_adv; mala_accept_ reads x_prop and writes x (its
accepted rows: the figure assumes all).

Model FLOPs are counted, not guessed: ``torch.utils.flop_counter.FlopCounterMode``
around one forward (and backward) of the model on a batch, divided by the batch size.
Three per-sample costs: ``fwd`` (a forward), ``fwd_xgrad`` (a forward and a backward to
the input only: one sampler or attack step) and ``fwd_train`` (a forward and a backward
to the parameters: one loss term). A training iteration's *useful* FLOPs are the sum
over the forwards/backwards the method needs, with nothing duplicated
(``iteration_flops``); so a loop that wastes work shows a lower model FLOP utilisation.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..ops import registry

# bench case (registry.Op.bench) -> (x-sized tensors read, written)
OP_TENSORS = {bench.name: op.traffic() for op in registry.ops() for bench in op.bench}


def op_bytes(op: str, x: torch.Tensor) -> int:
    """Compulsory bytes moved by one call of ``op`` on tensors shaped and typed like x."""
    reads, writes = OP_TENSORS[op]
    return (reads + writes) * x.numel() * x.element_size()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = getattr(model, "classify", None)
    return f(x) if callable(f) else model(x)


def count_flops(fn) -> int:
    """FLOPs of everything fn runs (matmuls and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def model_flops(model: nn.Module, sample_shape, batch: int = 8, device="cpu") -> dict:
    """Per-sample FLOPs {"fwd", "fwd_xgrad", "fwd_train"} of ``model`` on inputs of
    ``sample_shape`` (counted on a copy in eval mode: BatchNorm statistics untouched)."""
    m = copy.deepcopy(model).to(device).eval()
    x = torch.rand(batch, *sample_shape, device=device)

    def fwd():
        with torch.no_grad():
            _logits(m, x)

    def xgrad():
        xi = x.clone().requires_grad_(True)   # .backward(inputs=): FlopCounterMode rejects autograd.grad
        _logits(m, xi).logsumexp(1).sum().backward(inputs=[xi])

    def train():
        _logits(m, x).logsumexp(1).sum().backward()

    out = {"fwd": count_flops(fwd), "fwd_xgrad": count_flops(xgrad), "fwd_train": count_flops(train)}
    m.zero_grad(set_to_none=True)
    return {k: v / batch for k, v in out.items()}


def iteration_flops(per_sample: dict, cfg) -> float:
    """Useful FLOPs of one EB-JDAT iteration (ebjdat/published.py) of config ``cfg``:

    sgld_steps * B_pd * fwd_xgrad                      (sampler; PYLD: x sgld_inner is
                                                        not counted, its inner steps are
                                                        elementwise)
    + B_lab * fwd + pgd_steps * B_lab * fwd_xgrad       (attack: one clean forward)
    + passes * (2 B_pd + 2 B_lab) * fwd_train           (x_pd, x_q, x_lab, x_adv; SAM: 2 passes)
    """
    bp, bl = cfg.batch_size, cfg.label_batch_size
    passes = 2 if cfg.sam_rho > 0 else 1
    return (cfg.sgld_steps * bp * per_sample["fwd_xgrad"]
            + bl * per_sample["fwd"] + cfg.pgd_steps * bl * per_sample["fwd_xgrad"]
            + passes * (2 * bp + 2 * bl) * per_sample["fwd_train"])


CIFAR10_TRAIN, PAPER_EPOCHS = 50_000, 100


def projected_hours(s_per_iter: float, label_batch: int, epochs: int = PAPER_EPOCHS,
                    n_train: int = CIFAR10_TRAIN) -> float:
    """Hours for ``epochs`` epochs of ``n_train`` labelled images at this iteration time."""
    return epochs * n_train / label_batch * s_per_iter / 3600
