"""Which torch.compile recipe pays for the training iteration on this machine.

Times one fast-mode SADA-JEM iteration (the CPU step benchmark's size: WRN-10-2, batches
8 + 16, channels_last) with each recipe, in a fresh process per recipe (dynamo's caches
and counters start empty), and prints one line per recipe: the median ms per iteration
(3 warm-up, 10 timed), its speed-up over eager, the seconds to the first iteration
(compiling included), the first loss and dynamo's graph count.

Recipes: eager; ``both`` (what ``--compile`` does: the model's logits path and each
sampler and attack step compiled); ``steps`` (only the sampler and attack steps);
``model`` (only the logits path); ``max-autotune`` (both, mode
"max-autotune-no-cudagraphs"). Inductor's ``freezing`` is not a recipe here: it folds the
weights into the graph as constants, which only inference may do.

    python scripts/compile_modes.py [--precision bf16|fp32] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

RECIPES = ("eager", "both", "steps", "model", "max-autotune")


def one(recipe: str, precision: str, device: str) -> dict:
    """Time ``recipe`` in this process; returns its figures."""
    import torch

    from ebjdat import compiling, energy
    from ebjdat.attacks import PGD
    from ebjdat.bench import suite_step, timing
    from ebjdat.sampling import SGLD
    from ebjdat.train import Trainer

    dev = torch.device(device)
    over = {**suite_step._OFF, "channels_last": True, "precision": precision,
            "compile": recipe in ("both", "model", "max-autotune")}
    if recipe == "max-autotune":
        step, compiled = compiling.step, energy.compiled
        compiling.step = lambda fn, **o: step(fn, **{"mode": "max-autotune-no-cudagraphs", **o})
        energy.compiled = lambda m, **o: compiled(m, **{"mode": "max-autotune-no-cudagraphs", **o})
    if recipe == "model":   # the steps stay eager
        SGLD.compile = lambda self, **o: self
        PGD.compile = lambda self, **o: self
    t0 = time.perf_counter()
    trainer = Trainer(suite_step._cfg(dev, False, "fast", **over))
    if recipe == "steps":
        trainer.sampler.compile()
        trainer.attack.compile()
    batches = Trainer(suite_step._cfg(dev, False))
    x_lab, y_lab = next(batches.lab_loader)
    x_pd, _ = next(batches.pd_loader)
    fn = lambda: trainer.train_step(x_lab, y_lab, x_pd)  # noqa: E731
    loss = float(fn()["loss"])
    first_s = time.perf_counter() - t0
    ms = timing.median_us(fn, dev, warmup=3, reps=10, do_bench=False) / 1e3
    return {"recipe": recipe, "precision": precision, "ms": ms, "first_s": first_s, "loss": loss,
            "graphs": compiling.graph_counts()["graphs"], "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", choices=RECIPES, help=argparse.SUPPRESS)   # the child process's recipe
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.one, a.precision, a.device)))
        return 0
    eager, failed = None, False
    for recipe in RECIPES:
        run = subprocess.run([sys.executable, __file__, "--one", recipe, "--precision", a.precision,
                              "--device", a.device], capture_output=True, text=True)
        if run.returncode:   # a recipe that cannot train says why, and the others still run
            last = (run.stderr.strip().splitlines() or ["(no message)"])[-1]
            print(f"{recipe:>13} {a.precision}: failed: {last[:300]}", flush=True)
            failed = True
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        eager = eager or r["ms"]
        print(f"{recipe:>13} {a.precision}: {r['ms']:7.1f} ms/it  {eager / r['ms']:.2f}x eager  "
              f"first iteration after {r['first_s']:4.0f} s  loss {r['loss']:.4f}  {r['graphs']} graphs  "
              f"{r['threads']} threads", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
