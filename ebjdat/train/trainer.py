"""The EB-JDAT trainer: one iteration draws SGLD samples, adversarial examples and two
data batches, and takes an (optionally SAM) optimiser step on REFERENCE.md's objective.

``mode="reference"`` runs the published loop's computation: replay buffer on the host,
the attack in micro-batches of 2 with recomputed clean logits and duplicated forwards,
x_pd and x_adv forwarded twice. ``mode="fast"`` computes the same losses without that
waste: a device buffer, a whole-batch attack with one clean forward, one forward per
input, and on a GPU bf16 autocast, channels_last, torch.compile, CUDA-graph sampler and
attack loops and foreach optimiser steps. Nothing in an iteration reads a value back to
the host: metrics stay on the device until a log interval reads them.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import ops
from ..attacks import PGD
from ..data import Loader, load_dataset
from ..energy import ClassifierEnergy, logits_of
from ..models import SmallCNN, WideResNet
from ..models.batchnorm import frozen_batchnorm
from ..objectives import learning_rate, objective
from ..published import published_attack
from ..sampling import PYLD, SGLD, ClassGaussianInit, ReplayBuffer
from . import distributed as dist
from . import loop
from .checkpoint import load_checkpoint, resolve_checkpoint
from .config import TrainConfig, check_resume
from .runs import METRICS, TrainingDiverged, run_folder_of  # noqa: F401 (re-exported)
from .sam import SAM

SMALL_MODEL_PARAMS = 1_000_000


def build_model(cfg: TrainConfig, channels: int, n_classes: int) -> nn.Module:
    """The classifier a config trains: SmallCNN on digits ("auto"), else the JEM WideResNet."""
    kind = cfg.model if cfg.model != "auto" else ("small_cnn" if cfg.dataset == "digits" else "wrn")
    norm = None if cfg.norm in (None, "none") else cfg.norm
    if kind == "small_cnn":
        return SmallCNN(channels, n_classes, norm=norm)
    return WideResNet(cfg.depth, cfg.width, n_classes, channels, norm=norm)


def resolve_device(name: str) -> torch.device:
    """"auto" (the GPU when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N" as a
    torch.device; ValueError, phrased for --device, for a name that is no such device or a
    GPU torch cannot see (checked here: torch's own error comes later, and is cryptic)."""
    if not isinstance(name, str):
        raise TypeError(f"device must be a string (auto, cpu, cuda or cuda:N), got {type(name).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"--device {name}: ebjdat runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible to torch (torch.cuda.is_available() "
                         f"is False); use --device cpu or auto")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"--device {name}: torch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; "
                         f"use one of those, cuda or auto")
    return dev


class Trainer:
    """Trains one JEM-style classifier with EB-JDAT. See the module docstring."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg = cfg.validated()
        self.rank, self.world = dist.rank_and_world()
        self.device = dist.local_device(resolve_device(cfg.device))
        seed = cfg.seed + 1000 * self.rank          # rank-aware: each rank its own stream
        torch.manual_seed(seed)
        self.fast = cfg.mode == "fast"
        self.gpu = self.device.type == "cuda"
        ops.check_backend(cfg.backend, self.device)   # ValueError saying what to use instead
        ops.set_backend(cfg.backend)
        self.resumed_from: Path | None = None   # the checkpoint this trainer continues
        self.resumes: list[dict] = []            # every resume of the run: step, file, changes

        self.train_set = load_dataset(cfg.dataset, "train", root=cfg.data_root, image_size=cfg.image_size)
        self.test_set = load_dataset(cfg.dataset, "test", root=cfg.data_root, image_size=cfg.image_size)
        gen = lambda s: torch.Generator(self.device).manual_seed(seed + s)  # noqa: E731
        noise_lab = cfg.sigma if cfg.noise_on == "all" else 0.0
        self.lab_loader = Loader(self.train_set, cfg.label_batch_size, device=self.device,
                                 augment=True, noise_sigma=noise_lab, generator=gen(1))
        self.pd_loader = Loader(self.train_set, cfg.batch_size, device=self.device,
                                augment=True, noise_sigma=cfg.sigma, generator=gen(2))

        self.model = self._build_model().to(self.device)
        self.threads, self.threads_reason = self._choose_threads()
        if self.fast and self.gpu and cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        dist.broadcast_model(self.model)
        self.net = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = self._build_optimizer()
        self.philox = ops.PhiloxGenerator(seed, device=self.device)
        self.buffer = self._build_buffer(gen(3))
        self.sampler = self._build_sampler()
        self.attack = self._build_attack()
        self.step = 0
        self._worst = torch.zeros((), device=self.device)   # max |loss| since the last check
        # the log window (sums of the metrics since the last row, their count) and the
        # training time so far: checkpointed, so a resumed run logs what an uninterrupted one would
        self.log_sums = {k: torch.zeros((), device=self.device) for k in METRICS}
        self.log_count = 0
        self.wall_s = 0.0

    # ------------------------------------------------------------------ construction
    def _choose_threads(self) -> tuple[int, str]:
        """(threads, why): the CPU intra-op threads ``fit`` trains with: cfg.threads, else
        one for models under SMALL_MODEL_PARAMS parameters, where a second thread gains
        little on a quiet machine and costs up to 10x when another process holds a core
        (idle threads spin-wait for it: ``ebjdat bench threads``); torch's default otherwise
        and on a GPU."""
        if self.gpu:
            return torch.get_num_threads(), "GPU run: torch's default"
        if self.cfg.threads is not None:
            return self.cfg.threads, "set by the threads setting"
        n_params = sum(p.numel() for p in self.model.parameters())
        if n_params < SMALL_MODEL_PARAMS:
            return 1, f"{n_params} parameters < {SMALL_MODEL_PARAMS}: one thread survives a loaded machine"
        return torch.get_num_threads(), f"{n_params} parameters: torch's default"

    def _build_model(self) -> nn.Module:
        ds = self.train_set
        return build_model(self.cfg, ds.channels, ds.n_classes)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        foreach = {"foreach": self.fast}   # multi-tensor updates; the published loop steps per tensor
        if cfg.optimizer == "adam":
            base, kw = torch.optim.Adam, dict(lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        else:
            base, kw = torch.optim.SGD, dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if cfg.sam_rho > 0:
            return SAM(self.model.parameters(), base, rho=cfg.sam_rho, **kw, **foreach)
        return base(self.model.parameters(), **kw, **foreach)

    def _build_buffer(self, generator: torch.Generator) -> ReplayBuffer:
        cfg, ds = self.cfg, self.train_set
        # the reference keeps the buffer on the host; each rank owns a shard
        where = self.device if self.fast else torch.device("cpu")
        if where != self.device:
            generator = torch.Generator().manual_seed(cfg.seed + 1000 * self.rank + 3)
        init = "uniform"
        if cfg.init == "class_gaussian":
            init = ClassGaussianInit.fit(ds.x, ds.y, ds.n_classes, device=where, generator=
                                         torch.Generator(where).manual_seed(cfg.seed + self.rank + 4))
        size = max(cfg.batch_size, cfg.buffer_size // self.world)
        return ReplayBuffer(size, tuple(ds.x.shape[1:]), reinit_freq=cfg.reinit_freq, init=init,
                            device=where, generator=generator)

    def _build_sampler(self) -> SGLD:
        cfg = self.cfg
        kw = dict(n_steps=cfg.sgld_steps, step_size=cfg.sgld_step_size, noise_std=cfg.sgld_noise,
                  grad_clip=cfg.sgld_clip, clamp=(-1.0, 1.0) if cfg.sgld_clamp else None,
                  generator=self.philox, cuda_graph=self._graphs(),
                  buffer=self.buffer if self.fast else None)
        energy = ClassifierEnergy(self.net)
        if cfg.sgld_inner > 1:
            return PYLD(energy, n_inner=cfg.sgld_inner, **kw)
        return SGLD(energy, **kw)

    def _build_attack(self) -> PGD:
        cfg = self.cfg
        return PGD(self.net, eps=cfg.pgd_eps if cfg.pgd_project else None, start_eps=cfg.pgd_eps,
                   alpha=cfg.pgd_alpha, steps=cfg.pgd_steps, random_start=True, norm="linf",
                   clamp=(-1.0, 1.0), loss=cfg.adv_objective, generator=self.philox,
                   cuda_graph=self._graphs())

    def _graphs(self) -> bool:
        return self.fast and self.gpu and self.cfg.cuda_graph

    # ------------------------------------------------------------------ one iteration
    @property
    def steps_per_epoch(self) -> int:
        return self.lab_loader.steps_per_epoch

    def _autocast(self):
        if self.fast and self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _logits(self, x: Tensor) -> Tensor:
        return logits_of(self.net, x).float()

    def sample_q(self) -> Tensor:
        """(batch_size, ...) SGLD samples from the buffer, written back to it."""
        self.model.train(self.cfg.sampler_train_mode)
        try:
            if self.fast:
                return self.sampler.sample(self.cfg.batch_size)
            x, idx = self.buffer.sample(self.cfg.batch_size)     # host rows, moved over
            x = self.sampler.sample(x_init=x.to(self.device))
            self.buffer.update_(idx, x.cpu())
            return x
        finally:
            self.model.train(True)

    def adversarial(self, x: Tensor, y: Tensor) -> Tensor:
        """x_adv of the labelled batch, the model in eval mode (REFERENCE.md)."""
        if not self.fast:   # the published micro-batched attack, from the same random start
            start = torch.empty_like(x)
            ops.pgd_init_(start, x, eps=self.cfg.pgd_eps, clamp=(-1.0, 1.0), generator=self.philox)
            return published_attack(self.net, x, y, self.cfg, start)
        self.model.eval()
        try:
            return self.attack(x, y)
        finally:
            self.model.train(True)

    def clean_logits(self, x_pd: Tensor, x_q: Tensor, x_lab: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The train-mode forwards before the attack: x_pd and x_q (p(x)), x_lab (p(y|x))."""
        return self._logits(x_pd), self._logits(x_q), self._logits(x_lab)

    def loss(self, clean: tuple, x_pd: Tensor, x_adv: Tensor, y_lab: Tensor) -> tuple[Tensor, dict]:
        """The objective from the clean logits and the forwards after the attack. The
        published loop forwards x_pd once more and x_adv twice (in that order, which moves
        BatchNorm's running statistics); fast mode forwards x_adv once."""
        if self.fast:
            return objective(self.cfg, *clean, y_lab, self._logits(x_adv))
        logits_pd2, logits_adv = self._logits(x_pd), self._logits(x_adv)
        return objective(self.cfg, *clean, y_lab, logits_adv, logits_pd2=logits_pd2,
                         logits_adv2=self._logits(x_adv))

    def train_step(self, x_lab: Tensor | None = None, y_lab: Tensor | None = None,
                   x_pd: Tensor | None = None) -> dict:
        """One EB-JDAT iteration in the published order (REFERENCE.md); draws its own
        batches when none are given: x_q from the sampler; the train-mode forwards of x_pd,
        x_q and x_lab; the attack in eval mode, which so sees BatchNorm running statistics
        that include this iteration's batches; the forwards of x_adv; the optimiser step
        (SAM: a second pass over the same x_q and x_adv with BatchNorm frozen).

        Returns {"loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv", "lr"}: the first five are
        0-d tensors on the device (reading them syncs), lr a float.
        """
        if x_lab is None:
            x_lab, y_lab = next(self.lab_loader)
        if x_pd is None:
            x_pd, _ = next(self.pd_loader)
        lr = learning_rate(self.cfg, self.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train(True)
        with self._autocast():
            x_q = self.sample_q()
            self.optimizer.zero_grad(set_to_none=True)
            clean = self.clean_logits(x_pd, x_q, x_lab)
            x_adv = self.adversarial(x_lab, y_lab)
            loss, terms = self.loss(clean, x_pd, x_adv, y_lab)
            self._optimise(loss, lambda: self.loss(self.clean_logits(x_pd, x_q, x_lab), x_pd, x_adv, y_lab)[0])
        self._worst = torch.maximum(self._worst, loss.detach().abs().nan_to_num(math.inf))
        self.step += 1
        self.last_samples = x_q   # pictured if the run diverges
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}, "lr": lr}

    def _optimise(self, loss: Tensor, second_pass) -> None:
        """The optimiser step from loss's gradients; SAM recomputes the loss at the
        perturbed weights with ``second_pass()``, BatchNorm statistics frozen (SADA-JEM)."""
        loss.backward()
        dist.average_gradients(self.model)
        if not isinstance(self.optimizer, SAM):
            self.optimizer.step()
            return
        self.optimizer.first_step()
        self.optimizer.zero_grad(set_to_none=True)
        with frozen_batchnorm(self.model):
            second_pass().backward()
        dist.average_gradients(self.model)
        self.optimizer.second_step()

    def check_finite(self) -> None:
        """Raise TrainingDiverged if any loss since the last check was non-finite or
        exceeded cfg.loss_bound (reads one value: a host sync, at log/checkpoint time)."""
        worst = float(self._worst)
        self._worst.zero_()
        if not worst <= self.cfg.loss_bound:
            raise TrainingDiverged(f"|loss| reached {worst:g} (bound {self.cfg.loss_bound:g}) "
                                   f"by step {self.step}")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resumed run needs, tensors and plain values only: the shared
        model, optimiser, step and config, and each rank's buffer shard and random streams."""
        return {"step": self.step, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "wall_s": self.wall_s, "resumes": self.resumes,
                "log": {"sums": {k: v.detach().cpu() for k, v in self.log_sums.items()},
                        "count": self.log_count},
                "ranks": dist.gather_states(self.rank_state())}

    def load_state_dict(self, sd: dict) -> None:
        self.step = sd["step"]
        self.wall_s = float(sd.get("wall_s", 0.0))
        self.resumes = list(sd.get("resumes", []))
        if "log" in sd:   # checkpoints of earlier versions start a fresh log window
            for k, v in sd["log"]["sums"].items():
                self.log_sums[k].copy_(v)
            self.log_count = int(sd["log"]["count"])
        self.model.load_state_dict(sd["model"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.load_rank_state(dist.my_state(sd["ranks"], self.rank))

    def load_rank_state(self, mine: dict) -> None:
        """This rank's buffer shard, loaders and random streams (from rank_state)."""
        self.buffer.load_state_dict(mine["buffer"])
        self.philox.set_state(mine["philox"])
        self.lab_loader.load_state_dict(mine["lab_loader"])
        self.pd_loader.load_state_dict(mine["pd_loader"])
        torch.set_rng_state(mine["torch_rng"])
        for name, g in self._torch_generators().items():
            g.set_state(mine["rng"][name])

    def rank_state(self) -> dict:
        """This rank's buffer shard, loaders and random streams (tensors are the live ones:
        copy.deepcopy the result to keep a snapshot)."""
        return {"buffer": self.buffer.state_dict(), "philox": self.philox.get_state(),
                "lab_loader": self.lab_loader.state_dict(), "pd_loader": self.pd_loader.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "rng": {k: g.get_state() for k, g in self._torch_generators().items()}}

    def _torch_generators(self) -> dict:
        """The buffer's and its Gaussian init's torch generators (index draws, reinit)."""
        gens = {"buffer": self.buffer.generator}
        init = getattr(self.buffer, "init", None)
        if isinstance(init, ClassGaussianInit):
            gens["init"] = init.generator
        return {k: g for k, g in gens.items() if g is not None}

    # ------------------------------------------------------------------ run
    def fit(self) -> dict:
        """Train to cfg.steps (or cfg.epochs), evaluate, write the run folder (loop.py)."""
        return loop.fit(self)

    def save(self, path) -> None:
        """Write a checkpoint atomically (every rank must call it; rank 0 writes)."""
        loop.save(self, Path(path))

    @classmethod
    def resume(cls, path, **overrides) -> "Trainer":
        """The Trainer of a checkpoint file, or of the newest checkpoint in a run folder
        (or its checkpoints/ folder), continuing exactly where it left off.

        ``overrides`` may change only config.RESUMABLE fields (how long, where and how fast
        the same run goes on: steps, epochs, device, ...); any other field that differs from
        the checkpoint's raises ValueError naming it. The run continues in the folder the
        checkpoint lies in (``run_folder_of``), whatever the stored config says, unless
        ``out`` names another folder (``fit`` accepts only a new or empty one) or is None
        (nothing will be written: sampling, evaluation).
        """
        ckpt = resolve_checkpoint(path)
        sd = load_checkpoint(ckpt)
        for key in ("config", "model", "optimizer", "ranks", "step"):
            if key not in sd:
                raise ValueError(f"checkpoint {ckpt} has no {key!r}: not an ebjdat training checkpoint "
                                 f"(Trainer.save writes those)")
        try:
            stored = TrainConfig.from_dict(sd["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {ckpt} holds a config this ebjdat cannot read: {e}") from None
        check_resume(stored, overrides)
        overrides.setdefault("out", str(run_folder_of(ckpt)))
        trainer = cls(stored.with_overrides(**overrides))
        try:
            trainer.load_state_dict(sd)
        except (RuntimeError, KeyError, ValueError) as e:
            raise ValueError(f"checkpoint {ckpt} does not fit its own config ({stored.variant} on "
                             f"{stored.dataset}): {str(e).splitlines()[0]}") from e
        trainer.resumed_from = ckpt
        changed = {k: [getattr(stored, k), v] for k, v in overrides.items() if getattr(stored, k) != v}
        trainer.resumes.append({"step": trainer.step, "checkpoint": str(ckpt), "changed": changed})
        return trainer
