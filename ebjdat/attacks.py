"""Projected gradient attacks (PGD, linf and l2) on the whole batch, with pluggable objectives.

Each step is one forward of the model on x_adv, one input gradient (autograd.grad with
respect to x_adv only, so no parameter ``.grad`` is touched) and one fused update
(``ops.pgd_step_``). The loop can be captured into a CUDA graph and replayed.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import compiling, energy, graphs, ops
from .ops import checks, prechecked
from .ops.generator import per_call

__all__ = ["PGD"]

_compiling = torch.compiler.is_compiling

LOSSES = ("ce", "energy", "ebjdat")
Objective = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


class PGD:
    r"""Projected gradient ascent on an objective J of the model's logits: ``x_adv = atk(x, y)``.

    Shapes: x (B, *) float (images in ``clamp``'s range), y (B,) integer labels in [0, K)
    (the targets when ``targeted``); the model maps (B, *) to (B, K) logits (its
    ``classify`` method when it has one). Returns a new, detached (B, *) tensor of x's
    dtype; x, y, the model's train/eval mode and its parameters' ``.grad`` are untouched
    (BatchNorm running statistics do update in train mode: the caller picks the mode).

    Objectives ``loss`` (J is maximised; ``targeted=True`` minimises it instead):

    * ``"ce"``: ``J = mean_i CE(logits(x_adv)_i, y_i)``, torchattacks' PGD / PGDL2 cost,
      so without random start the result equals theirs. Targeted: ``J = -CE`` towards y.
    * ``"energy"``: ``J = sum_i E(x_adv_i, y_i) = -sum_i logits(x_adv_i)[y_i]``.
    * ``"ebjdat"``: ``J = sum_i logits(x_adv_i)[y_i] + w * sum_i P_i`` with the perceptual
      distance ``P_i = || l_i/||l_i|| - a_i/||a_i|| ||^2``, ``l = logits(x)`` (computed
      once per attack, without gradient), ``a = logits(x_adv)`` and ``w =
      perceptual_weight``, 1 by default: the published loop sums P over each micro-batch
      (ebjdat/published.py), a weight of 1 per sample.
    * a callable ``(logits, y, x_adv, x) -> Tensor``: a scalar, or per-sample values summed.

    Steps, for k = 1..steps: ``g = dJ/dx_adv``; linf ``x_adv += alpha * sign(g)``, l2
    ``x_adv += alpha * g / ||g||`` (per sample); then projection onto the eps-ball around x
    (none when eps is None) and clamping to ``clamp``. ``random_start`` first draws x_adv
    uniformly in the linf box (l2: torchattacks' radial draw) from ``generator`` (an
    ``ops.PhiloxGenerator`` on x's device, whose stream each call continues).

    Without a generator each call reseeds a Philox generator of the attack's own from
    torch's default generator of x's device (one ``torch.randint`` there, no host read), so
    ``torch.manual_seed(s)`` before ``atk(x, y)`` repeats its random start, eagerly on the
    CPU and on CUDA. With ``cuda_graph=True`` that draw runs before the replay, outside
    the graph, so every call is seeded afresh; when the caller captures the whole call in a
    CUDA graph, the draw is captured too and torch's CUDA generator reseeds every replay.

    ``model``, ``eps``, ``alpha`` and ``steps`` may be given positionally, as torchattacks'
    ``PGD(model, eps, alpha, steps)``; the rest are keyword-only.

    ``cuda_graph=True`` (CUDA tensors only) captures the whole loop once per input shape,
    dtype, autocast state and train/eval modes and replays it: one launch per attack.

    ``memory_format``: the layout x_adv (and the copy of x it is projected around) is made
    in, for 4-D inputs; give the model's (``torch.channels_last`` for a channels_last
    model), so that the input gradients share x_adv's layout and no step copies them.
    None: x's own layout.
    """

    def __init__(self, model: nn.Module, eps: float | None = 8 / 255, alpha: float = 2 / 255,
                 steps: int = 10, *, random_start: bool = True, norm: str = "linf",
                 clamp: tuple[float, float] | None = (0.0, 1.0), loss: str | Objective = "ce",
                 targeted: bool = False, generator: ops.PhiloxGenerator | None = None,
                 cuda_graph: bool = False, start_eps: float | None = None,
                 perceptual_weight: float | None = None,
                 memory_format: torch.memory_format | None = None):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module (or a callable) returning logits, got {type(model).__name__}")
        self.model = model
        self.eps = checks.number("eps", eps, allow_none=True)
        self.alpha = checks.number("alpha", alpha)
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"steps must be an int, got {type(steps).__name__}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.steps = steps
        self.norm = checks.norm(norm)
        self._lohi = checks.clamp_range(clamp)   # as ops.prechecked takes it: the steps skip the checks
        self.clamp = clamp
        if not callable(loss) and loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or a callable "
                             f"(logits, y, x_adv, x) -> Tensor, got {loss!r}")
        self.loss = loss
        self.random_start = bool(random_start)
        # the random start's radius; the published EB-JDAT loop starts in the eps box but
        # never projects (eps=None, start_eps=8/255)
        self.start_eps = self.eps if start_eps is None else checks.number("start_eps", start_eps)
        if self.random_start and self.start_eps is None:
            raise ValueError("random_start=True needs a radius: eps and start_eps are None "
                             "(pass start_eps, or random_start=False)")
        self.perceptual_weight = checks.number("perceptual_weight", perceptual_weight, allow_none=True)
        self.targeted = bool(targeted)
        if generator is not None and not isinstance(generator, ops.PhiloxGenerator):
            raise TypeError(f"generator must be an ebjdat.ops.PhiloxGenerator or None, got {type(generator).__name__}")
        self.generator = generator
        self._call_gens: dict = {}   # per device: the generator of calls without one (per_call)
        self.cuda_graph = bool(cuda_graph)
        self.memory_format = checks.memory_format(memory_format)
        self._graphs = graphs.GraphCache()

    def __repr__(self) -> str:
        return (f"PGD(eps={self.eps}, alpha={self.alpha}, steps={self.steps}, norm={self.norm!r}, "
                f"loss={self.loss!r}, random_start={self.random_start}, cuda_graph={self.cuda_graph})")

    # ------------------------------------------------------------------ public call
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x, y = self._check_inputs(x, y)
        gen = self.generator
        if self.random_start:
            checks.generator(gen, x)
            if gen is None:   # resolved before the loop, so compiled or captured steps read it
                gen = per_call(self._call_gens, x.device)
        # inference mode would forbid the input gradient; the attack needs autograd
        with torch.inference_mode(False):
            # inference tensors cannot enter autograd (dynamo cannot trace is_inference, and
            # none reaches a compiled region: torch.compile refuses them as inputs)
            if not _compiling() and (x.is_inference() or y.is_inference()):
                x, y = x.clone(), y.clone()
            if self.memory_format is not None and x.dim() == 4:
                x = x.contiguous(memory_format=self.memory_format)   # no copy when it has it
            if not self.cuda_graph:
                x_adv = torch.empty_like(x)
                self._loop(x_adv, x, y, gen)
                return x_adv
            return self._graph_call(x, y, gen)

    def reset_graphs(self) -> None:
        """Drop the captured graphs (they hold their static tensors and memory pools)."""
        self._graphs.clear()

    # ------------------------------------------------------------------ the loop
    def _loop(self, x_adv: Tensor, x: Tensor, y: Tensor, gen) -> None:
        """Fill x_adv (preallocated, like x) with the attack's result. Reads x and y only,
        so that a CUDA graph of this function replays on static tensors."""
        with torch.enable_grad():  # callers often attack under torch.no_grad()
            clean = None
            if self.loss == "ebjdat" and self.steps > 0:
                with torch.no_grad():  # a constant of J: one forward per attack, not per step
                    clean = self._logits(x, y)
            if self.random_start:
                ops.pgd_init_(x_adv, x, eps=self.start_eps, norm=self.norm, clamp=self.clamp, generator=gen)
            else:
                x_adv.copy_(x)
            for k in range(self.steps):
                self._step(x_adv, x, y, clean, k == 0 and clean is None)

    def _step(self, x_adv: Tensor, x: Tensor, y: Tensor, clean: Tensor | None, check_labels: bool) -> None:
        """One step on x_adv in place: J's input gradient, then the fused sign (or l2) step."""
        # a leaf view of x_adv's storage: the gradient flows to it alone
        leaf = x_adv.detach().requires_grad_(True)
        logits = self._logits(leaf, y, check_labels=check_labels)
        obj = self._objective(logits, y, leaf, x, clean)
        (grad,) = torch.autograd.grad(obj, leaf)
        del leaf, logits, obj  # the graph is freed; x_adv may be written again
        # x checked once per call, x_adv made like it, grad from autograd through it
        prechecked.pgd_step_(x_adv, grad, x, self.alpha, self.eps, self.norm, *self._lohi)

    def compile(self, **options) -> "PGD":
        """From now on each step runs as one compiled graph (forward, input gradient and
        fused update, ``ebjdat.compiling.step``; options are torch.compile's). Returns self."""
        self._step = compiling.step(self._step, **options)
        return self

    def _objective(self, logits: Tensor, y: Tensor, x_adv: Tensor, x: Tensor, clean) -> Tensor:
        if self.loss == "ce":
            # torchattacks' cost exactly (mean reduction), for equal adversarial examples
            obj = F.cross_entropy(logits, y)
        elif self.loss == "energy":
            obj = energy.conditional(logits, y).sum()
        elif self.loss == "ebjdat":
            p = energy.perceptual_distance(clean, logits)
            w = 1.0 if self.perceptual_weight is None else self.perceptual_weight
            obj = -energy.conditional(logits, y).sum() + w * p.sum()
        else:
            obj = self.loss(logits, y, x_adv, x)
            if not isinstance(obj, Tensor):
                raise TypeError(f"the loss callable must return a Tensor, got {type(obj).__name__}")
            if obj.dim() > 0:
                obj = obj.sum()
        return -obj if self.targeted else obj

    def _logits(self, inp: Tensor, y: Tensor, check_labels: bool = True) -> Tensor:
        logits = energy.logits_of(self.model, inp)
        b = inp.shape[0]
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != b:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model's logits must have shape (B, K) = ({b}, K), got {shape}")
        if check_labels:
            k = logits.shape[1]
            if y.device.type == "cpu" and not _compiling():   # a host read: no graph break when compiled
                if b and (int(y.min()) < 0 or int(y.max()) >= k):
                    raise ValueError(f"y has labels outside [0, {k}) (the model has {k} logits): "
                                     f"min {int(y.min())}, max {int(y.max())}")
            elif b:
                # no host sync on the GPU (and capturable): a device-side assert instead
                torch._assert_async(((y >= 0) & (y < k)).all(), f"y has labels outside [0, {k})")
        return logits

    # ------------------------------------------------------------------ CUDA graphs
    def _graph_call(self, x: Tensor, y: Tensor, gen) -> Tensor:
        if x.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs CUDA tensors, but x is on {x.device} "
                             f"(use cuda_graph=False on the CPU)")
        gens = [gen] if gen is not None else []
        # the third input is x_adv's static buffer: the loop overwrites it before reading
        _, _, x_adv = self._graphs.run(lambda sx, sy, sadv: self._loop(sadv, sx, sy, gen),
                                       (x, y, x), modules=graphs.modules_of(self.model),
                                       generators=gens)
        return x_adv.clone()

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, x, y) -> tuple[Tensor, Tensor]:
        checks.tensor("x", x)
        if x.dim() == 0:
            raise ValueError("x must have a batch dimension: shape (B, *), got a 0-d tensor")
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a torch.Tensor of integer labels, got {type(y).__name__}")
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"y must be an integer tensor (labels), got {y.dtype}")
        if y.dim() != 1:
            raise ValueError(f"y must have shape (B,), got {tuple(y.shape)}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"batch sizes differ: x has {x.shape[0]} samples, y has {y.shape[0]}")
        if y.device != x.device:
            raise ValueError(f"y is on {y.device} but x is on {x.device}; put them on one device")
        # int64 for cross_entropy / gather; a no-op (no copy) when y is already int64
        return x.detach(), y.detach().long()
