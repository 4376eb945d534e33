"""SGLD: Langevin dynamics on an energy, one fused update per step.

``x_{k+1} = clamp(x_k - step_size * clip(dE/dx(x_k)) + noise_std * z_k)`` for K steps,
from a replay buffer or a given start. Covers JEM (noise 0.01, no clip, no clamp) and
SADA-JEM (clip 1, clamp [-1, 1], no noise). Gradients are taken with respect to the
input only, so no parameter gradient accumulates; the model's train/eval mode is the
caller's (JEM samples in eval mode, JEM++ and SADA-JEM in train mode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .. import compiling, graphs, ops
from ..energy import ClassifierEnergy, conditional, logits_of
from ..ops import checks, prechecked
from ..ops.generator import per_call

EnergyFn = Callable[..., Tensor]


class SGLD:
    """Samples by K Langevin steps; ``cuda_graph=True`` replays the K-step loop as one graph.

    energy_fn(x, y=None) -> (B,) energies (lower is more probable). buffer: a
    ReplayBuffer to draw starts from and write samples back to. generator: the
    PhiloxGenerator of the noise, whose stream every call continues; None: each call is
    seeded from torch's generator, so ``torch.manual_seed`` repeats it (``sample``).
    memory_format: the layout the chains are stepped in, for 4-D samples: the model's
    (``torch.channels_last`` for a channels_last model), so that the input gradients share
    the chains' layout and no step copies them; None: the start's own layout.
    ``sample(..., n_steps=k)`` overrides n_steps for one call; ``sample(...,
    diagnostics=True)`` also returns a :class:`Trace`.
    """

    def __init__(self, energy_fn: EnergyFn, *, n_steps: int, step_size: float,
                 noise_std: float = 0.0, grad_clip: float | None = None,
                 clamp: tuple[float, float] | None = None, buffer=None,
                 generator: ops.PhiloxGenerator | None = None, cuda_graph: bool = False,
                 memory_format: torch.memory_format | None = None):
        if not callable(energy_fn):
            raise TypeError(f"energy_fn must be callable, got {type(energy_fn).__name__}")
        _steps("n_steps", n_steps)
        self.energy_fn = energy_fn
        self.n_steps = n_steps
        # the keyword arguments of every sgld_step_ call, checked once here
        self.update_kw = dict(step_size=checks.number("step_size", step_size),
                              noise_std=checks.number("noise_std", noise_std),
                              grad_clip=checks.number("grad_clip", grad_clip, allow_none=True),
                              clamp=None if clamp is None else checks.clamp_range(clamp))
        kw = self.update_kw  # the same, as ops.prechecked takes them: steps skip the checks
        self._update = (kw["step_size"], kw["noise_std"],
                        math.inf if kw["grad_clip"] is None else kw["grad_clip"], *checks.clamp_range(clamp))
        self.buffer = buffer
        self.generator = generator
        self.cuda_graph = bool(cuda_graph)
        self.memory_format = checks.memory_format(memory_format)
        self._graphs = graphs.GraphCache()
        self._n_classes: int | None = None  # the logits' width, once a ClassifierEnergy ran
        self._y_max: int | None = None      # the largest label of the current sample() call
        self._call_gens: dict = {}          # per device: the generator of calls without one
        self._gen: ops.PhiloxGenerator | None = None   # the current call's generator
        self._n = n_steps                   # the current call's number of steps
        self._trace: Trace | None = None    # the current call's trace, when asked for

    # ------------------------------------------------------------------ public
    def sample(self, batch_size: int | None = None, *, x_init: Tensor | None = None,
               y: Tensor | None = None, n_steps: int | None = None, diagnostics: bool = False,
               keep_every: int | None = None) -> Tensor | tuple[Tensor, "Trace"]:
        """(B, *shape) samples after n_steps steps.

        Starts from x_init (copied, never modified) or, without it, from
        ``buffer.sample(batch_size, y)``, writing the samples back to the same rows.
        y: optional (B,) integer labels passed to energy_fn (class-conditional sampling),
        on the samples' device, in [0, K): K is the logits' width for a ClassifierEnergy
        (checked before they are indexed), unknown (only y >= 0 is checked) for other
        energies. ValueError otherwise; checking costs one host read per call.

        n_steps: this call's number of steps (an int >= 0; JEM's ``sample_q(..., n_steps)``),
        the constructor's when None. diagnostics: also return a :class:`Trace` of the call,
        ``(samples, trace)``: per-step mean energy and gradient norm, and with
        ``keep_every = k`` every k-th state; it is accumulated on the samples' device
        (nothing is read back to the host during the loop) and needs ``cuda_graph=False``.
        Off (the default), the loop does no extra work.

        Randomness: with a ``generator``, the noise continues its stream. Without one, each
        call reseeds a Philox generator of its own from torch's default generator of the
        samples' device (one ``torch.randint`` there, no host read), so ``torch.manual_seed(s)``
        before a call repeats it, eagerly on the CPU and on CUDA (the buffer's draws, made
        from torch's generator when the buffer has none, repeat too). That draw runs before
        the loop, outside ``cuda_graph=True``'s captured graph: each replay is seeded afresh.
        Inside a CUDA graph the caller captures around ``sample``, the draw is captured too
        and torch's CUDA generator gives every replay a new seed.
        """
        n = self.n_steps if n_steps is None else _steps("n_steps", n_steps)
        keep = _keep_every(keep_every, diagnostics)
        if diagnostics and self.cuda_graph:
            raise ValueError("diagnostics=True needs cuda_graph=False (the trace is recorded by the "
                             "eager loop)")
        idx = None
        if x_init is not None:
            checks.tensor("x_init", x_init)
            if batch_size is not None and batch_size != x_init.shape[0]:
                raise ValueError(f"batch_size={batch_size} but x_init has {x_init.shape[0]} rows")
            fmt = self.memory_format if x_init.dim() == 4 and self.memory_format else torch.preserve_format
            x = x_init.detach().clone(memory_format=fmt)   # one copy, in the chains' layout
        elif self.buffer is not None:
            if batch_size is None:
                raise ValueError("batch_size is needed to sample from the buffer")
            x, idx = self.buffer.sample(batch_size, y)
        else:
            raise ValueError("give x_init, or a buffer to the sampler to start from")
        if self.memory_format is not None and x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)   # a copy only when it differs
        if y is not None:
            y = self._labels(y, x)
        self._gen = None
        if self.update_kw["noise_std"] > 0:   # once per call: the steps run unchecked
            checks.generator(self.generator, x)
            # resolved here, before the loop: the steps (compiled or captured) read it
            self._gen = self.generator or per_call(self._call_gens, x.device)
        self._n = n
        self._trace = trace = Trace.empty(n, x, keep) if diagnostics else None
        if self.cuda_graph:
            x = self._replay(x, y)
        else:
            self._loop(x, y)
        self._trace = None   # (no try/finally: dynamo traces sample() whole; a raise leaves
        #                       it set, and the next call replaces it)
        if idx is not None:
            self.buffer.update_(idx, x)
        return (x, trace) if diagnostics else x

    def _labels(self, y, x: Tensor) -> Tensor:
        """y checked (see ``sample``) as int64; remembers its largest value for ``_energy``."""
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
        if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
            raise TypeError(f"y must be an integer tensor of class indices, got {y.dtype}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if y.device != x.device:
            raise ValueError(f"y is on {y.device} but the samples are on {x.device}; move y there")
        self._y_max = None
        if y.numel():
            lo, hi = torch.stack([y.min(), y.max()]).tolist()  # the one host read of the call
            if lo < 0:
                raise ValueError(f"y must hold class indices >= 0, got {lo}")
            self._check_y_max(hi)
            self._y_max = hi
        return y.long()

    def _check_y_max(self, hi: int) -> None:
        k = self._n_classes
        if k is not None and hi >= k:
            raise ValueError(f"y must hold class indices in [0, {k}) (the energy's {k} logits), got {hi}")

    # ------------------------------------------------------------------ the loop
    def _loop(self, x: Tensor, y: Tensor | None) -> None:
        """This call's n_steps steps on x in place (recorded into the trace when one is on)."""
        trace = self._trace
        for k in range(self._n):
            stats = self._step(x, y)
            if trace is not None:
                trace.record(k, *stats, x)

    def _step(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """One Langevin step on x in place; returns (E, -dE/dx) at the step's start, for
        the trace (references to tensors the step made anyway)."""
        e, descent = self._energy_descent(x, y)
        prechecked.sgld_step_(x, descent, self._gen, *self._update)
        return e, descent

    def compile(self, **options) -> "SGLD":
        """From now on each step runs as one compiled graph (forward, input gradient and
        fused update, ``ebjdat.compiling.step``; options are torch.compile's). Returns self."""
        self._step = compiling.step(self._step, **options)
        return self

    def _descent(self, x: Tensor, y: Tensor | None) -> Tensor:
        """-dE/dx at x (a new tensor), by one forward and one input-only backward."""
        return self._energy_descent(x, y)[1]

    def _energy_descent(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """(E(x), detached (B,), and -dE/dx at x, a new tensor): one forward and one
        input-only backward."""
        x_ = x.detach().requires_grad_(True)
        with torch.enable_grad():
            e = self._energy(x_, y)
            if not isinstance(e, Tensor) or e.shape != (x.shape[0],):
                got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
                raise ValueError(f"energy_fn must return one energy per sample, shape "
                                 f"({x.shape[0]},); it returned {got}")
            (g,) = torch.autograd.grad(e.sum(), x_)
        return e.detach(), g.neg_()

    def _energy(self, x: Tensor, y: Tensor | None) -> Tensor:
        """energy_fn(x) or energy_fn(x, y). A ClassifierEnergy with labels runs as its two
        halves, so that y meets the logits' width before it indexes them: out of range,
        torch raises a raw index error on the CPU and, on CUDA, a device assert that ends
        the process's CUDA context. (No host read: y's largest value is known already.)"""
        if y is None:
            return self.energy_fn(x)
        if type(self.energy_fn) is not ClassifierEnergy:
            return self.energy_fn(x, y)
        logits = logits_of(self.energy_fn.model, x)
        self._n_classes = logits.shape[1]
        if self._y_max is not None:
            self._check_y_max(self._y_max)
        return conditional(logits, y)


    # ------------------------------------------------------------------ CUDA graphs
    def _replay(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Run the loop as a CUDA graph captured once per shape / dtype / mode."""
        if not x.is_cuda:
            raise ValueError("cuda_graph=True needs CUDA tensors; the samples are on "
                             f"{x.device} (use cuda_graph=False on the CPU)")
        gen = self._gen   # the same object on every call (per_call): the graph reads its state
        sx, _ = self._graphs.run(self._loop, (x, y), modules=graphs.modules_of(self.energy_fn),
                                 generators=[gen] if gen is not None else [], key=(self._n,))
        return sx.clone()


def _steps(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    return v


def _keep_every(v, diagnostics: bool) -> int | None:
    if v is None:
        return None
    if not diagnostics:
        raise ValueError("keep_every needs diagnostics=True (the kept states are part of the trace)")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"keep_every must be an int >= 1 or None, got {v!r}")
    return v


@dataclass
class Trace:
    """A sampler call's diagnostics (``sample(..., diagnostics=True)``), on the samples' device.

    energy: (n_steps,) float32, the chains' mean energy at each step's start (the point whose
    gradient the step follows; lower is more probable). grad_norm: (n_steps,) float32, the
    chains' mean per-sample L2 norm of dE/dx there (energy units per input unit). PYLD: per
    outer step, at its start. MALA: at each step's current state. states: with
    ``keep_every = k``, a (n_steps // k, B, *shape) tensor of the chains after steps k, 2k,
    ... (``kept_steps`` lists those step counts); None otherwise. Read them after the call
    (``.tolist()`` etc.): recording wrote device tensors only.
    """

    energy: Tensor
    grad_norm: Tensor
    states: Tensor | None = None
    keep_every: int | None = None

    @property
    def kept_steps(self) -> list[int]:
        """The step counts after which ``states`` were kept (1-based)."""
        if self.states is None:
            return []
        return [self.keep_every * (i + 1) for i in range(self.states.shape[0])]

    @classmethod
    def empty(cls, n: int, x: Tensor, keep: int | None) -> "Trace":
        states = None if keep is None else x.new_empty((n // keep, *x.shape))
        return cls(torch.full((n,), math.nan, device=x.device), torch.full((n,), math.nan, device=x.device),
                   states, keep)

    def record(self, k: int, e: Tensor, descent: Tensor, x: Tensor) -> None:
        """Step k's statistics (and x after it, when kept): device writes, no host read."""
        self.stats(k, e, descent)
        self.keep(k, x)

    def stats(self, k: int, e: Tensor, descent: Tensor) -> None:
        """Step k's mean energy and mean gradient norm, from (B,) energies and -dE/dx."""
        self.energy[k] = e.float().mean()
        self.grad_norm[k] = descent.float().flatten(1).norm(dim=1).mean()

    def keep(self, k: int, x: Tensor) -> None:
        """x after step k (0-based), when step k + 1 is a multiple of keep_every."""
        if self.keep_every is not None and (k + 1) % self.keep_every == 0:
            self.states[(k + 1) // self.keep_every - 1].copy_(x)
