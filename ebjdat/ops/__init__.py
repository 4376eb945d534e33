"""Fused per-step update ops for SGLD sampling and PGD attacks.

Every op updates its first argument in place and returns it, computes in fp32 registers
(fp64 for fp64 x) with one rounding to x's dtype, runs on the current stream without a
host synchronisation, and is a ``torch.library`` custom op (``torch.ops.ebjdat.*``), so it
is safe inside torch.compile and CUDA-graph capture. The math is specified in
``ebjdat/ops/spec.py`` (the ``torch`` backend); ``triton`` and ``cuda`` compute the
same function, with the same Philox noise (``ebjdat/ops/philox.py``).
"""
from __future__ import annotations

import torch

from . import backends, checks, library
from .backends import available_backends, get_backend, set_backend, use_backend
from .generator import PhiloxGenerator, default_generator

_INF = float("inf")
_UNIT = (0.0, 1.0)   # the attacks' default clamp: passed by default, it needs no check

__all__ = ["sgld_step_", "pgd_step_", "pgd_init_", "PhiloxGenerator", "set_backend",
           "get_backend", "available_backends", "use_backend", "check_backend"]


def check_backend(name: str, device: torch.device | str | None = None) -> None:
    """Raise ValueError, phrased for ``--backend``, unless backend ``name`` can run the ops
    on ``device``'s tensors (the CPU's when None) on this machine: what a command checks
    before its work starts (``set_backend`` raises RuntimeError, and only for the machine;
    the triton backend on CPU tensors fails at the first op without TRITON_INTERPRET=1)."""
    if name not in backends.NAMES:
        raise ValueError(f"--backend {name}: not a backend; use one of {', '.join(backends.NAMES)}")
    reason = {"triton": backends.triton_status, "cuda": backends.cuda_status}.get(name, lambda: None)()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if reason is None and name == "triton" and dev.type != "cuda" and not backends.interpreting():
        reason = "the triton backend needs CUDA tensors (CPU tensors run only under TRITON_INTERPRET=1, for tests)"
    if reason is not None:
        raise ValueError(f"--backend {name}: {reason}; use --backend torch or auto")


def sgld_step_(x: torch.Tensor, grad: torch.Tensor, *, step_size: float, noise_std: float = 0.0,
               grad_clip: float | None = None, clamp: tuple[float, float] | None = None,
               generator: PhiloxGenerator | None = None) -> torch.Tensor:
    """One Langevin step, in place: ``x <- clamp(x + step_size * clip(grad) + noise_std * z)``.

    x: (*) float tensor, updated in place. grad: (*) the direction to move along (for an
    energy E, ``-dE/dx``), any float dtype. ``clip(g) = clamp(g, -grad_clip, grad_clip)``
    when grad_clip is set; ``z ~ N(0, 1)`` from ``generator`` (the device's default one
    when None), drawn only when noise_std > 0, advancing the generator by ``ceil(x.numel() / 4)``
    counters (one Philox call serves four elements: ops/philox.py);
    the final clamp to ``clamp = (lo, hi)`` when set. Returns x.
    """
    checks.target("x", x, "grad", grad)
    # a finite non-negative float passes without a call; anything else is checked
    # (and converted, or refused) by checks.number
    if type(step_size) is not float or not 0.0 <= step_size < _INF:
        step_size = checks.number("step_size", step_size)
    if type(noise_std) is not float or not 0.0 <= noise_std < _INF:
        noise_std = checks.number("noise_std", noise_std)
    grad_clip = _INF if grad_clip is None else checks.number("grad_clip", grad_clip)
    lo, hi = checks.NO_CLAMP if clamp is None else checks.clamp_range(clamp)
    state = None
    if generator is not None:
        checks.generator(generator, x)
    if noise_std > 0:
        state = (generator or default_generator(x.device)).state
    library.pick("sgld_step_", x)(x, grad, state, step_size, noise_std, grad_clip, lo, hi, get_backend())
    return x


def pgd_step_(x_adv: torch.Tensor, grad: torch.Tensor, x_orig: torch.Tensor, *, alpha: float,
              eps: float | None, norm: str = "linf",
              clamp: tuple[float, float] | None = _UNIT) -> torch.Tensor:
    """One projected gradient ascent step, in place.

    x_adv, x_orig: (B, *) same dtype; grad: (B, *) any float dtype, the ascent direction.
    linf: ``x_adv + alpha * sign(grad)``, then ``x_orig + clamp(. - x_orig, -eps, eps)``.
    l2 (per sample over all but dim 0): ``x_adv + alpha * grad / (||grad|| + 1e-10)``, then
    the difference d to x_orig scaled by ``min(1, eps / ||d||)`` (torchattacks' PGDL2).
    eps=None skips the projection. Finally clamped to ``clamp`` when set. Returns x_adv.
    """
    checks.target("x_adv", x_adv, "x_orig", x_orig, True, grad)
    if norm != "linf" or type(eps) is not float or not 0.0 <= eps < _INF:
        _check_pgd(x_adv, eps, norm)
    if type(alpha) is not float or not 0.0 <= alpha < _INF:
        alpha = checks.number("alpha", alpha)
    lo, hi = clamp if clamp is _UNIT else checks.clamp_range(clamp)
    library.pick("pgd_step_", x_adv)(x_adv, grad, x_orig, alpha, eps, norm, lo, hi, get_backend())
    return x_adv


def pgd_init_(x_adv: torch.Tensor, x_orig: torch.Tensor, *, eps: float, norm: str = "linf",
              clamp: tuple[float, float] | None = _UNIT,
              generator: PhiloxGenerator | None = None) -> torch.Tensor:
    """Random start of a PGD attack, in place, advancing the generator by ``ceil(n / 4)``
    counters, n = x_adv.numel() (l2: ``ceil(n / 4) + B``, one more per sample for its radius;
    nothing when n = 0).

    linf: ``x_adv = clamp(x_orig + U(-eps, eps))`` elementwise.
    l2 (torchattacks' convention): ``x_adv = clamp(x_orig + eps * r * z / ||z||)`` with
    ``z ~ N(0, I)`` and ``r ~ U(0, 1)`` per sample. Returns x_adv.
    """
    checks.target("x_adv", x_adv, "x_orig", x_orig, True)
    _check_pgd(x_adv, eps, norm)
    if eps is None:
        raise TypeError("eps must be a real number for pgd_init_, got None")
    lo, hi = clamp if clamp is _UNIT else checks.clamp_range(clamp)
    if generator is not None:
        checks.generator(generator, x_adv)
    state = (generator or default_generator(x_adv.device)).state
    library.pick("pgd_init_", x_adv)(x_adv, x_orig, state, eps, norm, lo, hi, get_backend())
    return x_adv


def _check_pgd(x_adv, eps, norm) -> None:
    """The pgd ops' settings (pgd_step_ calls this only off its common case: linf, a finite
    non-negative float eps)."""
    checks.norm(norm)
    checks.number("eps", eps, allow_none=True)
    if norm == "l2" and x_adv.dim() == 0:
        raise ValueError("x_adv must have a batch dimension (dim 0) for norm='l2'")
