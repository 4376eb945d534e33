"""The Python cost of one public op call, against one eager torch op, in one process:
16-element CPU tensors through the cuda backend's host entry (so the kernel's own work
is negligible and what is left is the launch path).

    python scripts/call_overhead.py

Prints microseconds per call (best of 9 repeats of 5000 calls, one thread) for
``x.add_(g)``, ``ops.sgld_step_`` (no noise) and ``ops.pgd_step_`` (linf), and their ratios;
then the same two through ``ops.prechecked``, the entry the samplers' and attacks' steps
take (their arguments checked once per call).
"""
import math
import timeit

import torch

from ebjdat import ops
from ebjdat.ops import prechecked


def per_call_us(fn, n: int = 5000) -> float:
    return min(timeit.repeat(fn, number=n, repeat=9)) / n * 1e6


def main() -> None:
    torch.set_num_threads(1)
    x, g, xo = torch.zeros(16), torch.zeros(16), torch.zeros(16)
    with ops.use_backend("cuda"):
        add = per_call_us(lambda: x.add_(g))
        sgld = per_call_us(lambda: ops.sgld_step_(x, g, step_size=0.1))
        pgd = per_call_us(lambda: ops.pgd_step_(x, g, xo, alpha=0.1, eps=0.1))
        sgld_p = per_call_us(lambda: prechecked.sgld_step_(x, g, None, 0.1, 0.0, math.inf, -math.inf, math.inf))
        pgd_p = per_call_us(lambda: prechecked.pgd_step_(x, g, xo, 0.1, 0.1, "linf", 0.0, 1.0))
    print(f"x.add_(g) {add:.2f} us; ops.sgld_step_ {sgld:.2f} us ({sgld / add:.1f}x); "
          f"ops.pgd_step_ {pgd:.2f} us ({pgd / add:.1f}x)")
    print(f"per step in samplers and attacks (ops.prechecked): sgld_step_ {sgld_p:.2f} us "
          f"({sgld_p / add:.1f}x); pgd_step_ {pgd_p:.2f} us ({pgd_p / add:.1f}x)")


if __name__ == "__main__":
    main()
