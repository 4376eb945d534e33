"""Benchmark fixtures: the environment, the two ceilings measured in the same run, and a
collector that writes every figure with its environment to JSON at the end.

Results go to $EBJDAT_BENCH_OUT (a folder; default bench/results). Device timings are
CUDA-event medians (triton.testing.do_bench); pytest-benchmark's own host timings are
kept only as a cross-check.
"""
import datetime
import json
import os
import pathlib
import subprocess

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
_RESULTS: list[dict] = []


def _cmd(*args) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "commit": _cmd("git", "rev-parse", "HEAD") or "unknown",
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if HAS_GPU:
        env["gpu"] = torch.cuda.get_device_name()
        env["driver"] = _cmd("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    return env


def median_us(fn) -> float:
    """Median device time of fn in microseconds (CUDA events, L2 flushed between runs)."""
    from triton.testing import do_bench
    return 1e3 * do_bench(fn, warmup=25, rep=200, return_mode="median")


def graph_us(fn, calls: int = 20) -> float:
    """Device time of one call of fn, host overhead excluded: ``calls`` calls captured in
    one CUDA graph, the replay timed by median_us, divided by ``calls``."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the capture: compiles, lazy module loads
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return median_us(graph.replay) / calls


def _copy_bandwidth(n: int = 1 << 28) -> float:
    """GB/s of a device-to-device copy of n fp32 (read + write)."""
    src = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    return 2 * 4 * n / (median_us(lambda: dst.copy_(src)) * 1e3)


@pytest.fixture(scope="session")
def ceilings() -> dict:
    """Copy bandwidth (GB/s, 1 GiB device-to-device copy) and dense bf16 matmul rate
    (TFLOP/s, 8192^3), measured in this run."""
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    copy_gbs = _copy_bandwidth()
    m = 8192
    a = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    tflops = 2 * m**3 / (median_us(lambda: a @ b) * 1e6)
    out = {"copy_GBps": copy_gbs, "bf16_matmul_TFLOPs": tflops}
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
    name = f"{suites}-{env.get('gpu', 'cpu').replace(' ', '_')}-{env['commit'][:8]}.json"
    (out / name).write_text(json.dumps({"environment": env, "results": _RESULTS}, indent=1))
