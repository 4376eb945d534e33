"""Sampler and attack loops on WRN-28-10 (GPU only): pytest-benchmark entries over the
cases of ``ebjdat bench loops overhead attack`` (ebjdat/bench/suite_loops.py says what
each measures), recorded to JSON with their environment.

* SGLD-10, batch 64, SADA-JEM settings, BatchNorm in train mode: eager against a CUDA-graph
  replay.
* The sampler's own cost per step, on a model of negligible cost, by difference of K and
  2K steps (noise reported beside it). Target: <= 10 us per step in a CUDA graph.
* PGD-10 linf, batch 256, eval mode: torchattacks' PGD against ebjdat fp32 eager, fp32 in a
  CUDA graph (the same math: the max difference to torchattacks is recorded), and bf16 +
  channels_last + CUDA graph. Target: >= 5x torchattacks.
"""
import pytest
import torch

from ebjdat.bench import suite_loops

from .conftest import HAS_GPU

pytestmark = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
RUNNERS = {"sgld_loop": suite_loops.run_loops, "sgld_overhead": suite_loops.run_overhead,
           "pgd10": suite_loops.run_attack}


@pytest.mark.parametrize("case", list(RUNNERS))
def test_bench_loop(benchmark, ceilings, record, case):
    ceil = {"matmul_TFLOPs": ceilings["bf16_matmul_TFLOPs"], "matmul_dtype": "bf16"}
    rows = RUNNERS[case]("cuda", False, ceil)
    for row in rows:
        record(**row)
        benchmark.extra_info[f"{row['case']} | {row['ours']}"] = row["ours_us"]
    assert rows and all(r["ours_us"] > 0 for r in rows)
    benchmark.pedantic(torch.cuda.synchronize, rounds=1)   # the figures are the rows above
