"""The Python cost of one public op call, against one eager torch op, in one process:
16-element CPU tensors through the cuda backend's host entry (so the kernel's own work
is negligible and what is left is the launch path).

    python scripts/call_overhead.py

Prints microseconds per call (best of 15 rounds of 5000 calls, the five calls taking
turns in each round; one thread) for
``x.add_(g)``, ``ops.sgld_step_`` (no noise) and ``ops.pgd_step_`` (linf), and their ratios;
then the same two through ``ops.prechecked``, the entry the samplers' and attacks' steps
take (their arguments checked once per call).
"""
import math
import timeit

import torch

from ebjdat import ops
from ebjdat.ops import prechecked


def per_call_us(fns: dict, n: int = 5000, rounds: int = 15) -> dict:
    """Best per-call time of each fn, in rounds that take every fn in turn, so that a
    machine that slows down or speeds up midway shifts every figure alike."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], timeit.timeit(fn, number=n) / n * 1e6)
    return best


def main() -> None:
    torch.set_num_threads(1)
    x, g, xo = torch.zeros(16), torch.zeros(16), torch.zeros(16)
    with ops.use_backend("cuda"):
        t = per_call_us({
            "add": lambda: x.add_(g),
            "sgld": lambda: ops.sgld_step_(x, g, step_size=0.1),
            "pgd": lambda: ops.pgd_step_(x, g, xo, alpha=0.1, eps=0.1),
            "sgld_p": lambda: prechecked.sgld_step_(x, g, None, 0.1, 0.0, math.inf, -math.inf, math.inf),
            "pgd_p": lambda: prechecked.pgd_step_(x, g, xo, 0.1, 0.1, "linf", 0.0, 1.0),
        })
    add, sgld, pgd, sgld_p, pgd_p = t["add"], t["sgld"], t["pgd"], t["sgld_p"], t["pgd_p"]
    print(f"x.add_(g) {add:.2f} us; ops.sgld_step_ {sgld:.2f} us ({sgld / add:.1f}x); "
          f"ops.pgd_step_ {pgd:.2f} us ({pgd / add:.1f}x)")
    print(f"per step in samplers and attacks (ops.prechecked): sgld_step_ {sgld_p:.2f} us "
          f"({sgld_p / add:.1f}x); pgd_step_ {pgd_p:.2f} us ({pgd_p / add:.1f}x)")


if __name__ == "__main__":
    main()
