"""CUDA-graph capture of sampler and attack loops.

A loop that reads and writes only static tensors is captured once and replayed: the
host launches one graph instead of K forwards, backwards and update kernels. Capture
needs a warm-up run (lazy kernel loading, cuBLAS/cuDNN handles, Triton compiles); the
warm-up must not change anything the caller can see, so the model's buffers (BatchNorm
running statistics) and the Philox generators' states are saved before it and restored
after. Replays then update them exactly as eager calls would.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .ops import PhiloxGenerator


def modules_of(*objs) -> list[nn.Module]:
    """The nn.Modules among objs (an energy_fn that is a module, a model)."""
    return [o for o in objs if isinstance(o, nn.Module)]


def graph_key(modules: Iterable[nn.Module], *parts) -> tuple:
    """What a captured graph depends on beyond its static tensors: the caller's parts
    (shapes, dtypes), autocast state and every submodule's train/eval mode."""
    dev = "cuda"
    modes = tuple(m.training for mod in modules for m in mod.modules())
    return parts + (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev), modes)


def capture(fn: Callable[[], None], *, modules: Iterable[nn.Module] = (),
            generators: Iterable[PhiloxGenerator] = (), warmup: int = 2) -> torch.cuda.CUDAGraph:
    """Capture fn (which touches only static tensors) into a CUDA graph.

    fn runs ``warmup`` times on a side stream first; the modules' buffers and the
    generators' states are restored afterwards, so warm-up leaves no trace.
    """
    modules, generators = list(modules), list(generators)
    buffers = [b for m in modules for b in m.buffers()]
    saved_buffers = [b.clone() for b in buffers]
    saved_states = [g.state.clone() for g in generators]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for b, s in zip(buffers, saved_buffers):
            b.copy_(s)
        for g, s in zip(generators, saved_states):
            g.state.copy_(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph
