"""The training iteration: published mode (the published loop's computation) against fast
mode, and on a GPU fast mode with each optimisation switched on in turn.

* CPU (runs anywhere): SADA-JEM on digits, the default run's sizes; target fast >= 2.5x
  published mode. Host timer medians: CPU work is synchronous.
* GPU: ebjdat bench's step suite (ebjdat/bench/suite_step.py): WRN-28-10 on CIFAR-shaped
  synthetic data, SADA-JEM preset (batch 64 + 128, 10 SGLD steps, 5 attack steps, SAM);
  CUDA-event medians per iteration; labelled images per second and projected hours for
  the paper's 100 epochs of CIFAR-10 (50,000 images).
  Targets: fast >= 25x published mode, <= 2 hours projected on one H100.
"""
import pytest

from ebjdat.bench import timing
from ebjdat.train import TrainConfig, Trainer

from .conftest import HAS_GPU


def _iter_seconds_cpu(trainer, n=8, warmup=2) -> float:
    """perf_counter median (CPU work is synchronous): timing.median_us on the CPU."""
    return timing.median_us(trainer.train_step, "cpu", warmup=warmup, reps=n) / 1e6


def test_bench_step_cpu(benchmark, record):
    times = {}
    for mode in ("published", "fast"):
        t = Trainer(TrainConfig.preset("sadajem", mode=mode, device="cpu", steps=1000))
        times[mode] = _iter_seconds_cpu(t, n=4 if mode == "published" else 8)
    row = {f"{k}_s_per_iter": v for k, v in times.items()}
    row["speedup_fast_vs_published"] = times["published"] / times["fast"]
    record(case="train_step/sadajem/digits/cpu", **row)
    benchmark.extra_info.update(row)
    benchmark.pedantic(t.train_step, rounds=3)


def test_bench_step_baselines_cpu(benchmark, record):
    """ebjdat bench's step suite at --quick sizes: the published baseline (the published
    loop), the full-batch eager baseline and the trainer's two modes, on the CPU."""
    from ebjdat.bench import suite_step
    rows = suite_step.run("cpu", True, timing.ceilings("cpu"))
    for r in rows:
        record(**r)
    benchmark.extra_info.update({r["ours"]: r["s_per_iter"] for r in rows})
    benchmark.pedantic(lambda: None, rounds=1)


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_bench_step_gpu(benchmark, ceilings, record):
    """ebjdat bench's step suite on the GPU (suite_step.GPU_STAGES: fast fp32, +bf16,
    +channels_last, +cuda_graph, +compile) against the published-loop baseline."""
    from ebjdat.bench import suite_step
    ceil = {"matmul_TFLOPs": ceilings["bf16_matmul_TFLOPs"], "matmul_dtype": "bf16"}
    rows = suite_step.run("cuda", False, ceil)
    for r in rows:
        record(**r)
    benchmark.extra_info.update({r["ours"]: r.get("s_per_iter") for r in rows})
    benchmark.pedantic(lambda: None, rounds=1)
