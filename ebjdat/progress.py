"""Progress lines for work that takes minutes: a flushed line as each part finishes.

Library functions that make up a long job (an attack, a set of SGLD chains, a picture)
carry the ``reported`` decorator. It prints only inside a ``lines(stream, prefix)`` block,
which a command opens around its work, so a library caller sees no output unless it asks
for it. The block lives in a context variable: two threads (or asyncio tasks) each see
their own, and nothing is patched or restored.

    with progress.lines(sys.stderr, "eval"):
        evaluate_checkpoint(...)        # "eval: PGD-20 eps 0.03137: 91.23 % of 359 robust (4.2 s)"
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import time

_SINK: contextvars.ContextVar = contextvars.ContextVar("ebjdat_progress", default=None)


@contextlib.contextmanager
def lines(out, prefix: str):
    """Within the block, ``reported`` functions print ``prefix: <what> (<seconds> s)`` on
    ``out`` as each call finishes; a last line gives the block's total when it ends
    without an error."""
    t0 = time.perf_counter()
    token = _SINK.set((out, prefix))
    try:
        yield
    finally:
        _SINK.reset(token)
    print(f"{prefix}: finished in {time.perf_counter() - t0:.1f} s", file=out, flush=True)


def active() -> bool:
    """Whether a ``lines`` block is open in this context."""
    return _SINK.get() is not None


def say(text: str) -> None:
    """One line now, inside a ``lines`` block (nothing outside one)."""
    sink = _SINK.get()
    if sink is not None:
        print(f"{sink[1]}: {text}", file=sink[0], flush=True)


def reported(describe):
    """Decorator: inside a ``lines`` block, each call prints ``describe(result, args,
    kwargs)`` and its seconds after it returns; outside one the function runs as is."""
    def wrap(fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if _SINK.get() is None:
                return fn(*args, **kwargs)
            t = time.perf_counter()
            result = fn(*args, **kwargs)
            say(f"{describe(result, args, kwargs)} ({time.perf_counter() - t:.1f} s)")
            return result
        return timed
    return wrap


def share(mask) -> str:
    """"87.50 % of N" of a boolean mask (or of the mask of a (mask, ...) tuple)."""
    m = mask[0] if isinstance(mask, tuple) else mask
    return f"{100 * float(m.float().mean()):.2f} % of {m.numel()}" if m.numel() else "no points"
