"""sgld_step_: one fused Langevin step (spec.py, triton.py, cuda.py; csrc/sgld.cpp,
kernels/sgld.cu and .cuh)."""
from __future__ import annotations

import torch

from ..registry import BenchCase, Clamp, Generator, Like, Op, Real, Target, Variant

DOC = """One Langevin step, in place: ``x <- clamp(x + step_size * clip(grad) + noise_std * z)``.

x: (*) float tensor, updated in place. grad: (*) the direction to move along (for an
energy E, ``-dE/dx``), any float dtype. ``clip(g) = clamp(g, -grad_clip, grad_clip)``
when grad_clip is set; ``z ~ N(0, 1)`` from ``generator`` (the device's default one
when None), drawn only when noise_std > 0, advancing the generator by ``ceil(x.numel() / 4)``
counters (one Philox call serves four elements: ops/philox.py);
the final clamp to ``clamp = (lo, hi)`` when set. Returns x.
"""


def plain(x, grad, *, step_size, noise_std, grad_clip, clamp):
    """What a careful user writes in torch: JEM-style noise plus SADA-style clip/clamp."""
    x.add_(grad.clamp(-grad_clip, grad_clip), alpha=step_size).add_(torch.randn_like(x), alpha=noise_std)
    x.clamp_(*clamp)


OPS = (
    Op("sgld_step", package=__name__, doc=DOC,
       args=(Target("x"), Like("grad"), Real("step_size"), Real("noise_std", default=0.0),
             Real("grad_clip", default=None, none=float("inf")), Clamp(), Generator(when="noise_std")),
       bench=(BenchCase("sgld_step", dict(step_size=1.0, noise_std=0.01, grad_clip=1.0, clamp=(-1.0, 1.0)),
                        plain),),
       variants=(Variant("sgld_step no-noise", dict(step_size=0.1), suffix="no-noise"),
                 Variant("sgld_step noise", dict(step_size=0.1, noise_std=0.01, grad_clip=1.0, clamp=(-1.0, 1.0)),
                         suffix="noise", layouts=True)),
       cuda_flags=((2, "noise", "no-noise"), (3, "channels_last", ""))),
)
