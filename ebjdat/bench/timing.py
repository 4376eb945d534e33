"""Timers, ceilings and the environment for ``ebjdat bench`` and the pytest suites.

What is measured and how:

* ``median_us(fn, device)``: the median time of one call of ``fn`` in microseconds.
  On a CUDA device through ``triton.testing.do_bench`` (CUDA events around each call,
  L2 flushed between calls), falling back to CUDA-event pairs when triton is missing;
  on the CPU with ``time.perf_counter`` around each call, which is honest there because
  CPU work is synchronous. A host timer is never put around asynchronous GPU work.
* ``graph_us(fn)``: device time only, host overhead excluded: ``calls`` calls of fn
  captured in one CUDA graph, the replay timed by ``median_us``, divided by ``calls``.
  The calls reuse one set of tensors: data that fits in L2 is read from L2 after the
  first call (``fits_in_l2`` says when; suites print it beside the figure).
* ``burst_us(fn)``: the cost of one eager call as a Python loop sees it: CUDA events
  around a burst of back-to-back calls, no L2 flush, no sync in between, divided by the
  number of calls. It is the larger of the host + launch cost and the device time.
* ``ceilings(device)``: the two ceilings the figures are stated against, measured in the
  same run: copy bandwidth (GB/s; bytes read + written of a large fp32 copy, 1 GiB per
  tensor on a GPU and 64 MiB on the CPU, both beyond their caches) and dense matmul rate
  (bf16 TFLOP/s on a GPU, fp32 on the CPU; 2 m^3 FLOPs per m x m product). A working set
  that fits in a cache moves faster than that copy: ``copy_bandwidth_GBps(device, n)``
  measures the copy at another size, and the CPU ops rows are stated against a copy of
  their own bytes.
* ``Rows(report)``: a suite's list of rows that hands each row to ``report`` as it is
  added, so that ``ebjdat bench`` prints a line per finished row while the suite runs.
* ``environment()``: GPU, driver, CUDA, torch, triton, commit, host and date.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from .. import hardware

HAS_GPU = torch.cuda.is_available()


class Rows(list):
    """The rows of a suite; each row is handed to ``report`` (when given) as it is added,
    so that a suite of minutes shows its progress row by row."""

    def __init__(self, report=None):
        super().__init__()
        self.report = report

    def append(self, row: dict) -> None:
        super().append(row)
        if self.report is not None:
            self.report(row)

    def extend(self, rows) -> None:
        for row in rows:
            self.append(row)

    def __iadd__(self, rows):
        self.extend(rows)
        return self


def _cmd(*args) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict:
    """Where a figure was measured: recorded beside every result."""
    # a copy of the tree without .git (the device machine) names its commit in the environment
    commit = _cmd("git", "rev-parse", "HEAD")
    if commit:
        dirty = bool(_cmd("git", "status", "--porcelain", "--untracked-files=no"))
    else:
        commit = os.environ.get("EBJDAT_COMMIT") or "unknown"
        dirty = {"0": False, "1": True}.get(os.environ.get("EBJDAT_DIRTY", ""))
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit, "dirty": dirty,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "cpu": hardware.cpu_model(),
           "cpu_bf16_units": " ".join(map(str, hardware.bf16_units("cpu"))),
           "cpu_threads": torch.get_num_threads(), "cores": os.cpu_count()}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    env["gpu"] = torch.cuda.get_device_name() if HAS_GPU else None
    env["driver"] = (_cmd("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
                     or None) if HAS_GPU else None
    return env


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _cpu_median_us(fn, warmup: int, reps: int, min_s: float) -> float:
    for _ in range(warmup):
        fn()
    times, t_end = [], time.perf_counter() + min_s
    while len(times) < reps or (time.perf_counter() < t_end and len(times) < 50 * reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def _event_median_us(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
             for _ in range(reps)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return 1e3 * statistics.median(s.elapsed_time(e) for s, e in pairs)


def median_us(fn, device="cuda", *, warmup: int = 3, reps: int = 10, min_s: float = 0.0,
              do_bench: bool = True) -> float:
    """Median time of one call of fn in microseconds (see the module docstring).

    do_bench=False on a GPU times with plain CUDA-event pairs (no L2 flush, few reps):
    for long calls such as a training iteration.
    """
    if torch.device(device).type != "cuda":
        return _cpu_median_us(fn, warmup, reps, min_s)
    if do_bench:
        try:
            from triton.testing import do_bench as _do_bench
            return 1e3 * _do_bench(fn, warmup=25, rep=200, return_mode="median")
        except ImportError:
            pass
    return _event_median_us(fn, warmup, reps)


def graph_us(fn, calls: int = 20) -> float:
    """Device time of one call of fn inside a replayed CUDA graph (GPU only)."""
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
    return median_us(graph.replay, "cuda") / calls


def burst_us(fn, calls: int = 100, bursts: int = 5) -> float:
    """Median over ``bursts`` of (events around ``calls`` back-to-back calls) / calls (GPU)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(bursts):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(1e3 * start.elapsed_time(end) / calls)
    return statistics.median(times)


def l2_bytes(device="cuda") -> int:
    """The GPU's L2 cache size in bytes (0 on the CPU)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return 0
    return int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0))


def fits_in_l2(nbytes: int, device="cuda") -> str | None:
    """A note for figures whose working set of ``nbytes`` fits in L2, else None."""
    l2 = l2_bytes(device)
    if l2 and nbytes <= l2:
        return (f"working set {nbytes / 2**20:.1f} MiB fits in the {l2 / 2**20:.0f} MiB L2: "
                "repeated calls read it from L2, so this is not an HBM bandwidth figure")
    return None


def copy_bandwidth_GBps(device="cuda", n: int | None = None) -> float:
    """GB/s of a copy of n fp32 (4 bytes read + 4 written per element); n None: 2**28 on
    a GPU, 2**24 on the CPU (beyond the caches: the memory's bandwidth)."""
    dev = torch.device(device)
    n = n or ((1 << 28) if dev.type == "cuda" else (1 << 24))
    src = torch.empty(n, dtype=torch.float32, device=dev).uniform_()
    dst = torch.empty_like(src)
    return 2 * 4 * n / (median_us(lambda: dst.copy_(src), dev, reps=10) * 1e3)


def matmul_rate(device="cuda", m: int | None = None) -> float:
    """Dense matmul FLOP/s (2 m^3 per product): bf16 on a GPU, fp32 on the CPU."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    m = m or (8192 if gpu else 1024)
    dtype = torch.bfloat16 if gpu else torch.float32
    a = torch.randn(m, m, device=dev, dtype=dtype)
    b = torch.randn(m, m, device=dev, dtype=dtype)
    return 2 * m ** 3 / (median_us(lambda: a @ b, dev, reps=5) * 1e-6)


def ceilings(device="cuda") -> dict:
    """{"copy_GBps", "matmul_TFLOPs", "matmul_dtype"} measured now on ``device``."""
    gpu = torch.device(device).type == "cuda"
    return {"copy_GBps": copy_bandwidth_GBps(device),
            "matmul_TFLOPs": matmul_rate(device) / 1e12,
            "matmul_dtype": "bf16" if gpu else "fp32"}
