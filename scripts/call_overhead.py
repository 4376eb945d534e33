"""The Python cost of one public op call, against one eager torch op, in one process:
16-element CPU tensors through the cuda backend's host entry (so the kernel's own work
is negligible and what is left is the launch path).

    python scripts/call_overhead.py [--rounds 200]

Each round times 2000 calls of each of five callables, back to back in a rotating order,
and divides each one's time by that round's ``x.add_(g)``; the figures are the medians
over rounds (microseconds per call, and the ratios). A ratio within one round compares
calls made a few milliseconds apart, so a shared machine that slows down or speeds up
between rounds (this project's CPU machines swing by 2x) cancels out, where the best or
median times of a whole run do not. One thread. The five: ``x.add_(g)``,
``ops.sgld_step_`` (no noise) and ``ops.pgd_step_`` (linf); then the same two through
``ops.prechecked``, the entry the samplers' and attacks' steps take (their arguments
checked once per call).
"""
import argparse
import math
import statistics
import timeit

import torch

from ebjdat import ops
from ebjdat.ops import prechecked


def paired_ratios(fns: dict, base: str, rounds: int, n: int = 2000) -> tuple[dict, dict]:
    """(median us per call, median ratio to ``fns[base]`` within a round) for each fn."""
    names = list(fns)
    times = {k: [] for k in names}
    ratios = {k: [] for k in names}
    for r in range(rounds):
        this = {}
        for k in names[r % len(names):] + names[:r % len(names)]:   # rotate who goes first
            this[k] = timeit.timeit(fns[k], number=n) / n * 1e6
        for k in names:
            times[k].append(this[k])
            ratios[k].append(this[k] / this[base])
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in ratios.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds of 2000 calls each (default 200)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    torch.set_num_threads(1)
    x, g, xo = torch.zeros(16), torch.zeros(16), torch.zeros(16)
    with ops.use_backend("cuda"):
        t, q = paired_ratios({
            "add": lambda: x.add_(g),
            "sgld": lambda: ops.sgld_step_(x, g, step_size=0.1),
            "pgd": lambda: ops.pgd_step_(x, g, xo, alpha=0.1, eps=0.1),
            "sgld_p": lambda: prechecked.sgld_step_(x, g, None, 0.1, 0.0, math.inf, -math.inf, math.inf),
            "pgd_p": lambda: prechecked.pgd_step_(x, g, xo, 0.1, 0.1, "linf", 0.0, 1.0),
        }, "add", args.rounds)
    print(f"x.add_(g) {t['add']:.2f} us; ops.sgld_step_ {t['sgld']:.2f} us ({q['sgld']:.2f}x); "
          f"ops.pgd_step_ {t['pgd']:.2f} us ({q['pgd']:.2f}x)")
    print(f"per step in samplers and attacks (ops.prechecked): sgld_step_ {t['sgld_p']:.2f} us "
          f"({q['sgld_p']:.2f}x); pgd_step_ {t['pgd_p']:.2f} us ({q['pgd_p']:.2f}x)")


if __name__ == "__main__":
    main()
