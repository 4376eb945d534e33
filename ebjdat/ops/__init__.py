"""Fused per-step update ops for Langevin sampling (SGLD, MALA) and PGD attacks.

Every op updates its first argument in place and returns it, computes in fp32 registers
(fp64 for fp64 x) with one rounding to x's dtype, runs on the current stream without a
host synchronisation, and is a ``torch.library`` custom op (``torch.ops.ebjdat.*``), so it
is safe inside torch.compile and CUDA-graph capture. Each op is described once, in its
family's folder (``registry.py`` says how); its math is specified by the family's
``spec.py`` (the ``torch`` backend), and ``triton``, ``cuda`` and ``cpu`` compute the same function,
with the same Philox noise (``ebjdat/ops/philox.py``). ``help(ops.<op>)`` gives its shapes
and math.
"""
from __future__ import annotations

import torch

from . import backends, generate, library, registry
from .backends import available_backends, get_backend, set_backend, use_backend
from .generator import PhiloxGenerator, default_generator

# the public ops, one per registered op (generate.public): ops.sgld_step_, ops.pgd_step_, ...
OPS = tuple(op.public_name for op in registry.ops())
for _op in registry.ops():
    globals()[_op.public_name] = generate.public(_op, library.IMPLS[_op.name], library.OVERLOADS[_op.name])

__all__ = ["PhiloxGenerator", "default_generator", "set_backend", "get_backend", "available_backends",
           "use_backend", "check_backend", "OPS"]
__all__ += OPS


def check_backend(name: str, device: torch.device | str | None = None) -> None:
    """Raise ValueError, phrased for ``--backend``, unless backend ``name`` can run the ops
    on ``device``'s tensors (the CPU's when None) on this machine: what a command checks
    before its work starts (``set_backend`` raises RuntimeError, and only for the machine;
    the triton backend on CPU tensors fails at the first op without TRITON_INTERPRET=1)."""
    if name not in backends.NAMES:
        raise ValueError(f"--backend {name}: not a backend; use one of {', '.join(backends.NAMES)}")
    reason = backends.STATUS.get(name, lambda: None)()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if reason is None and name == "cpu" and dev.type != "cpu":
        reason = f"the cpu backend runs CPU tensors only, not {dev.type} tensors"
    if reason is None and name == "triton" and dev.type != "cuda" and not backends.interpreting():
        reason = "the triton backend needs CUDA tensors (CPU tensors run only under TRITON_INTERPRET=1, for tests)"
    if reason is not None:
        raise ValueError(f"--backend {name}: {reason}; use --backend torch or auto")
