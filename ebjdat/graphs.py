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
    try:
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
    finally:  # restore even when fn raised (bad input found during warm-up)
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


class GraphCache:
    """One captured graph per key for a loop over static tensors.

    ``run(loop, inputs)`` copies ``inputs`` into static tensors (made on first use, like
    them), replays ``loop(*static)`` and returns the static tensors: clone what you keep,
    the next replay overwrites them. Keys: the inputs' shapes, strides and dtypes, the
    caller's ``key`` parts, autocast state and the modules' train/eval modes.
    """

    def __init__(self):
        self._entries: dict[tuple, tuple] = {}

    def clear(self) -> None:
        """Drop the graphs (they hold their static tensors and memory pools)."""
        self._entries.clear()

    def run(self, loop: Callable[..., None], inputs: tuple, *, modules: Iterable[nn.Module] = (),
            generators: Iterable[PhiloxGenerator] = (), key: tuple = ()) -> tuple:
        modules, generators = list(modules), list(generators)
        sig = tuple(None if t is None else (t.shape, t.stride(), t.dtype, t.device) for t in inputs)
        k = graph_key(modules, sig, tuple(id(g) for g in generators), *key)
        entry = self._entries.get(k)
        if entry is None:
            static = tuple(None if t is None else t.clone() for t in inputs)
            amp = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))

            def body():
                # autocast's weight-cast cache would hand the graph casts made during
                # warm-up, stale after the next optimizer step: cast inside the graph
                with torch.autocast("cuda", dtype=amp[1], enabled=amp[0], cache_enabled=False):
                    loop(*static)

            entry = self._entries[k] = (capture(body, modules=modules, generators=generators), static)
        graph, static = entry
        for s, t in zip(static, inputs):
            if s is not None:
                s.copy_(t)
        graph.replay()
        return static
