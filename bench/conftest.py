"""Benchmark fixtures: the environment, the two ceilings measured in the same run, and a
collector that writes every figure with its environment to JSON at the end. The timers,
ceilings and environment live in the package (ebjdat/bench/timing.py) so that
``ebjdat bench`` uses the same ones.

Results go to $EBJDAT_BENCH_OUT (a folder; default bench/results). Device timings are
CUDA-event medians (triton.testing.do_bench); pytest-benchmark's own host timings are
kept only as a cross-check.
"""
import json
import os
import pathlib

import pytest

from ebjdat.bench.timing import (  # noqa: F401
    HAS_GPU,
    copy_bandwidth_GBps,
    environment,
    graph_us,
    matmul_rate,
    median_us,
)

_RESULTS: list[dict] = []


@pytest.fixture(scope="session")
def ceilings() -> dict:
    """Copy bandwidth (GB/s, 1 GiB device-to-device copy) and dense bf16 matmul rate
    (TFLOP/s, 8192^3), measured in this run."""
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    out = {"copy_GBps": copy_bandwidth_GBps("cuda"), "bf16_matmul_TFLOPs": matmul_rate("cuda", 8192) / 1e12}
    _RESULTS.append({"case": "ceilings", **out})
    return out


@pytest.fixture
def record():
    """record(case=..., **figures): keep one result row (written at the session's end)."""
    return lambda **row: _RESULTS.append(row)


def pytest_sessionfinish(session, exitstatus):
    if not _RESULTS:
        return
    out = pathlib.Path(os.environ.get("EBJDAT_BENCH_OUT", pathlib.Path(__file__).parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    suites = "-".join(sorted({pathlib.Path(str(i.fspath)).stem.replace("test_bench_", "")
                              for i in session.items})) or "bench"
    name = f"{suites}-{(env.get('gpu') or 'cpu').replace(' ', '_')}-{env['commit'][:8]}.json"
    (out / name).write_text(json.dumps({"environment": env, "results": _RESULTS}, indent=1))
