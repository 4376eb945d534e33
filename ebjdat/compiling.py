"""torch.compile for the sampler, the attack and the trainer: what compiles, and whether it can.

Two kinds of compiled region:
- the model's logits path (``energy.compiled``): every forward of the iteration runs it;
- one sampler or attack step (``step``): forward, input gradient and fused update in one
  graph. Dynamo breaks the graph at ``torch.autograd.grad`` unless its option
  ``trace_autograd_ops`` is on; ``step`` turns it on for its own region only (where this
  torch has it), so a step is one graph with no break. Compiling the step rather than the
  whole K-step loop keeps one small graph, reused K times, instead of K unrolled copies.

``unavailable(device)`` says why compile cannot run here (no C++ compiler for inductor on
the CPU, a torch without dynamo), or None. ``graph_counts()`` reads dynamo's counters.
"""
from __future__ import annotations

import functools

import torch

TRACE_AUTOGRAD = "trace_autograd_ops"   # the dynamo option that traces torch.autograd.grad


def traces_autograd() -> bool:
    """Whether this torch's dynamo can trace torch.autograd.grad into a graph."""
    return hasattr(torch._dynamo.config, TRACE_AUTOGRAD)


def step(fn, **options):
    """``fn`` compiled by torch.compile(**options), traced with autograd.grad inside the
    graph where this torch can (``traces_autograd``); the option is set for this region
    alone. Returns a callable with fn's signature."""
    compiled = torch.compile(fn, **options)
    if not traces_autograd():
        return compiled

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch._dynamo.config.patch(**{TRACE_AUTOGRAD: True}):
            return compiled(*args, **kwargs)
    return run


_PROBED: dict[str, str | None] = {}


def unavailable(device: torch.device) -> str | None:
    """None when torch.compile (inductor) builds and runs a tiny function on ``device``'s
    kind; else one line saying why not. Probed once per device kind and process."""
    kind = torch.device(device).type
    if kind not in _PROBED:
        try:
            x = torch.ones(3, device=device)
            ok = torch.compile(lambda t: t * 2 + 1)(x)
            _PROBED[kind] = None if bool((ok == 3).all()) else "the compiled probe computed a wrong result"
        except Exception as e:   # noqa: BLE001 (any failure means: no compile here, said in one line)
            first = (str(e).strip().splitlines() or [""])[0][:160]
            _PROBED[kind] = f"{type(e).__name__}: {first}"
    return _PROBED[kind]


def graph_counts() -> dict:
    """Dynamo's counters since the process started (or the last torch._dynamo.reset):
    {"graphs": graphs compiled, "graph_breaks": breaks, "break_reasons": {reason: count}}."""
    from torch._dynamo.utils import counters
    breaks = dict(counters["graph_break"])
    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": int(sum(breaks.values())),
            "break_reasons": {k[:200]: int(v) for k, v in breaks.items()}}
