"""Profiler ranges and Chrome traces for ``ebjdat bench --profile DIR``.

``phase(name)`` marks one phase of an iteration (``ebjdat.sampler``, ``ebjdat.attack``,
``ebjdat.optimizer``) with ``torch.profiler.record_function`` and, on a GPU, an NVTX
range (visible in Nsight Systems). ``instrument(trainer)`` wraps a Trainer's phase
methods in those ranges (on that instance only). ``trace(path, device, fn, n)`` runs fn
n times under ``torch.profiler`` and writes a Chrome trace (open it in
chrome://tracing or https://ui.perfetto.dev).
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function


def phase(name: str) -> contextlib.ExitStack:
    """A record_function range, plus an NVTX range when CUDA is available."""
    stack = contextlib.ExitStack()
    stack.enter_context(record_function(name))
    if torch.cuda.is_available():
        torch.cuda.nvtx.range_push(name)
        stack.callback(torch.cuda.nvtx.range_pop)
    return stack


def _wrapped(fn, name):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with phase(name):
            return fn(*args, **kwargs)
    return call


PHASES = {"Trainer": (("sample_q", "ebjdat.sampler"), ("adversarial", "ebjdat.attack"),
                      ("_optimise", "ebjdat.optimizer")),
          "PublishedLoop": (("sample_q", "ebjdat.sampler"), ("attack", "ebjdat.attack"),
                            ("update", "ebjdat.optimizer"))}


def instrument(loop):
    """Put the sampler, attack and optimizer phases of ``loop`` (a Trainer or a
    PublishedLoop) in profiler ranges."""
    for attr, name in PHASES[type(loop).__name__]:
        setattr(loop, attr, _wrapped(getattr(loop, attr), name))
    return loop


def trace(path, device, fn, n: int = 2) -> Path:
    """Run fn n times under torch.profiler (CPU, plus CUDA on a GPU); write a Chrome trace,
    and beside it (same name, .txt) the operators that took the most self time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    acts = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    with profile(activities=acts, record_shapes=False) as prof:
        for _ in range(n):
            fn()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
    prof.export_chrome_trace(str(path))
    key = "self_cuda_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    path.with_suffix(".txt").write_text(prof.key_averages().table(sort_by=key, row_limit=20) + "\n")
    return path
