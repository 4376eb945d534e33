"""One builder: a TrainConfig to the objects of a run, for the trainer, ``ebjdat eval`` and
``ebjdat sample`` alike: the model, the initial distribution of the SGLD chains, the
replay buffer, the sampler and the training attack.

Choices of speed (buffer on the device, CUDA-graph loops) are arguments here, so the
trainer's iteration has no branches; ``iteration`` picks the parts of cfg.mode: published
mode's published parts (host buffer, micro-batched attack, duplicated forwards) come from
:mod:`ebjdat.published`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import objectives, published
from .attacks import PGD
from .energy import ClassifierEnergy
from .models import SmallCNN, WideResNet
from .sampling import PYLD, SGLD, ClassGaussianInit, ReplayBuffer

__all__ = ["model", "initial_distribution", "replay_buffer", "sampler", "attack"]


def model(cfg, channels: int, n_classes: int) -> nn.Module:
    """The classifier a config trains: SmallCNN on digits ("auto"), else the JEM WideResNet."""
    kind = cfg.model if cfg.model != "auto" else ("small_cnn" if cfg.dataset == "digits" else "wrn")
    norm = None if cfg.norm in (None, "none") else cfg.norm
    if kind == "small_cnn":
        return SmallCNN(channels, n_classes, norm=norm)
    return WideResNet(cfg.depth, cfg.width, n_classes, channels, norm=norm)


def initial_distribution(cfg, *, data=None, state: dict | None = None, device="cpu",
                         generator: torch.Generator | None = None):
    """"uniform" (U(-1, 1)) or the ClassGaussianInit of cfg.init, on ``device``: fitted to
    ``data`` = (x (N, C, H, W), y (N,), n_classes), or restored from ``state`` (its
    ``state_dict()``, as a run folder's init file keeps it) without any data."""
    if cfg.init == "uniform":
        return "uniform"
    if state is not None:
        return ClassGaussianInit.from_state_dict(state, device=device, generator=generator)
    if data is None:
        raise ValueError("a class-Gaussian initial distribution needs data to fit or a saved state")
    x, y, n_classes = data
    return ClassGaussianInit.fit(x, y, n_classes, device=device, generator=generator)


def replay_buffer(cfg, sample_shape: tuple, init, *, device, generator: torch.Generator | None,
                  world: int = 1) -> ReplayBuffer:
    """cfg.buffer_size chains (this rank's shard of them, at least one batch) on ``device``."""
    size = max(cfg.batch_size, cfg.buffer_size // world)
    return ReplayBuffer(size, tuple(sample_shape), reinit_freq=cfg.reinit_freq, init=init,
                        device=device, generator=generator)


def sampler(cfg, net: nn.Module, *, generator, buffer: ReplayBuffer | None = None,
            n_steps: int | None = None, cuda_graph: bool = False,
            memory_format: torch.memory_format | None = None) -> SGLD:
    """The run's SGLD (PYLD for JEM++'s inner steps) over ``net``'s marginal energy;
    ``n_steps`` overrides cfg.sgld_steps; with ``buffer``, ``sample(n)`` draws and writes
    back its chains. The model's train/eval mode stays the caller's."""
    kw = dict(n_steps=cfg.sgld_steps if n_steps is None else n_steps, step_size=cfg.sgld_step_size,
              noise_std=cfg.sgld_noise, grad_clip=cfg.sgld_clip,
              clamp=(-1.0, 1.0) if cfg.sgld_clamp else None, generator=generator,
              cuda_graph=cuda_graph, buffer=buffer, memory_format=memory_format)
    energy = ClassifierEnergy(net)
    return PYLD(energy, n_inner=cfg.sgld_inner, **kw) if cfg.sgld_inner > 1 else SGLD(energy, **kw)


def attack(cfg, net: nn.Module, *, generator, cuda_graph: bool = False,
           memory_format: torch.memory_format | None = None) -> PGD:
    """The training attack (ebjdat/published.py): cfg.pgd_steps linf sign steps of cfg.adv_objective
    from a U(-eps, eps) start, projected only when cfg.pgd_project, clamped to [-1, 1]."""
    return PGD(net, eps=cfg.pgd_eps if cfg.pgd_project else None, start_eps=cfg.pgd_eps,
               alpha=cfg.pgd_alpha, steps=cfg.pgd_steps, random_start=True, norm="linf",
               clamp=(-1.0, 1.0), loss=cfg.adv_objective, generator=generator, cuda_graph=cuda_graph,
               memory_format=memory_format)



class Off:
    """A part an objective switched off: sampling or attacking gives None (no work)."""

    def sample(self, n: int) -> None:
        return None

    def __call__(self, x, y) -> None:
        return None

    def compile(self, **options) -> "Off":
        return self


@dataclass
class Iteration:
    """The parts one training iteration runs. chains.sample(n) -> x_q (or None);
    attack(x, y) -> x_adv (or None); objective(cfg, logits, clean, x_pd, x_adv, y) ->
    (loss, terms); sampler: the SGLD / PYLD under the chains."""
    sampler: SGLD
    chains: object
    attack: Callable
    objective: Callable


def iteration(cfg, net: nn.Module, buffer: ReplayBuffer, *, generator, device, cuda_graph: bool = False,
              memory_format: torch.memory_format | None = None) -> Iteration:
    """The parts of cfg.mode. "published": the published code's, from ebjdat.published
    (chains of a host buffer moved to the device and back every iteration, the micro-batched
    eval-mode attack, the objective's extra forwards); "fast": the sampler continuing the
    device buffer's chains itself, the fused attack, each batch forwarded once. A part no
    weighted term needs (``objectives.reads``: no x_q, no x_adv) is ``Off``: no work."""
    published_mode = cfg.mode == "published"
    sgld = sampler(cfg, net, generator=generator, cuda_graph=cuda_graph, buffer=None if published_mode else buffer,
                   memory_format=memory_format)
    if published_mode:
        parts = Iteration(sgld, published.HostChains(buffer, sgld, device),
                          published.PublishedAttack(net, cfg, generator), published.objective)
    else:
        parts = Iteration(sgld, sgld, attack(cfg, net, generator=generator, cuda_graph=cuda_graph,
                                             memory_format=memory_format), objectives.objective)
    reads = objectives.reads(cfg)
    if "q" not in reads:
        parts.chains = Off()
    if "adv" not in reads:
        parts.attack = Off()
    return parts
