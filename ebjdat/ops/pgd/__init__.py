"""pgd_step_ and pgd_init_: a fused PGD step and random start (spec.py, triton.py,
cuda.py; csrc/pgd.cpp, kernels/pgd.cu and .cuh)."""
from __future__ import annotations

import torch

from ..registry import UNIT, BenchCase, Clamp, Generator, Like, Norm, Op, Real, Target, Variant

STEP_DOC = """One projected gradient ascent step, in place.

x_adv, x_orig: (B, *) same dtype; grad: (B, *) any float dtype, the ascent direction.
linf: ``x_adv + alpha * sign(grad)``, then ``x_orig + clamp(. - x_orig, -eps, eps)``.
l2 (per sample over all but dim 0): ``x_adv + alpha * grad / (||grad|| + 1e-10)``, then
the difference d to x_orig scaled by ``min(1, eps / ||d||)`` (torchattacks' PGDL2).
eps=None skips the projection. Finally clamped to ``clamp`` when set. Returns x_adv.
"""

INIT_DOC = """Random start of a PGD attack, in place, advancing the generator by ``ceil(n / 4)``
counters, n = x_adv.numel() (l2: ``ceil(n / 4) + B``, one more per sample for its radius;
nothing when n = 0).

linf: ``x_adv = clamp(x_orig + U(-eps, eps))`` elementwise.
l2 (torchattacks' convention): ``x_adv = clamp(x_orig + eps * r * z / ||z||)`` with
``z ~ N(0, I)`` and ``r ~ U(0, 1)`` per sample. Returns x_adv.
"""

ALPHA, EPS = 2 / 255, 8 / 255


def plain_linf(x_adv, grad, x_orig, *, alpha, eps, norm="linf"):
    x_adv.add_(grad.sign(), alpha=alpha)
    x_adv.copy_((x_orig + (x_adv - x_orig).clamp(-eps, eps)).clamp(0, 1))


def plain_l2(x_adv, grad, x_orig, *, alpha, eps, norm="l2"):
    b, ones = x_adv.shape[0], [1] * (x_adv.dim() - 1)
    gn = grad.reshape(b, -1).norm(dim=1).add(1e-10).view(b, *ones)
    x_adv.add_(grad / gn, alpha=alpha)
    d = x_adv - x_orig
    dn = d.reshape(b, -1).norm(dim=1).view(b, *ones)
    x_adv.copy_((x_orig + d * (eps / dn).clamp(max=1)).clamp(0, 1))


def plain_init(x_adv, x_orig, *, eps):
    x_adv.copy_((x_orig + torch.empty_like(x_orig).uniform_(-eps, eps)).clamp(0, 1))


def _step_variants():
    return tuple(Variant(f"pgd_step {norm}", dict(alpha=0.01, eps=eps, norm=norm), prefix=norm, suffix=tag,
                         per_sample=norm == "l2")
                 for norm in ("linf", "l2") for eps, tag in ((0.03, "eps"), (None, "no-eps")))


OPS = (
    Op("pgd_step", package=__name__, doc=STEP_DOC,
       args=(Target("x_adv"), Like("grad"), Like("x_orig", same_dtype=True, fill="uniform"), Real("alpha"),
             Real("eps", none=None), Norm(), Clamp(default=UNIT)),
       bench=(BenchCase("pgd_step_linf", dict(alpha=ALPHA, eps=EPS), plain_linf),
              BenchCase("pgd_step_l2", dict(alpha=ALPHA, eps=EPS, norm="l2"), plain_l2)),
       variants=_step_variants()),
    Op("pgd_init", package=__name__, doc=INIT_DOC,
       args=(Target("x_adv", reads=False), Like("x_orig", same_dtype=True, fill="uniform"), Real("eps"), Norm(),
             Clamp(default=UNIT), Generator()),
       bench=(BenchCase("pgd_init_linf", dict(eps=EPS), plain_init),),
       variants=tuple(Variant(f"pgd_init {norm}", dict(eps=0.03, norm=norm), prefix=norm, layouts=True,
                              per_sample=norm == "l2") for norm in ("linf", "l2")),
       cuda_flags=((1, "channels_last", ""),)),
)
