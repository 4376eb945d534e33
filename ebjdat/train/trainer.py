"""The EB-JDAT trainer: one iteration draws SGLD samples, two data batches and adversarial
examples, and takes an (optionally SAM) optimiser step on the published objective (ebjdat/published.py).

The iteration (``train_step``) is the same in both modes; the mode decides which objects
it is built from. ``mode="published"`` builds the published code's parts
(``ebjdat.published``): the replay buffer on the host, the attack in micro-batches of 2
with recomputed clean logits, x_pd and x_adv forwarded again after the attack, optimiser
steps one tensor at a time, fp32. ``mode="fast"`` builds parts that compute the same
losses without that waste: a device buffer, a whole-batch attack with one clean forward,
one forward per input, foreach optimiser steps, and on a GPU bf16 autocast,
channels_last, torch.compile and CUDA-graph sampler and attack loops. Nothing in a fast
iteration reads a value back to the host: metrics stay on the device until a log
interval reads them.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import torch
from torch import Tensor

from .. import build, compiling, energy, hardware, objectives, ops
from ..data import Loader, hold_out, load_dataset
from ..energy import logits_of
from ..models.batchnorm import frozen_batchnorm
from ..objectives import METRICS, learning_rate
from ..runs.checkpoint import (
    INIT_FILE,
    check_training_fields,
    latest_checkpoint,
    load_checkpoint,
    load_init,
    resolve_checkpoint,
    run_folder_of,
    state_digest,
)
from ..runs.config import TrainConfig, check_resume
from ..runs.folders import RUN_CONFIG, check_same_run, restartable
from ..sampling import ClassGaussianInit
from ..validate import resolve_device
from . import distributed as dist
from . import loop
from .sam import SAM
from .watch import DivergenceWatch, TrainingDiverged  # noqa: F401 (re-exported)

SMALL_MODEL_PARAMS = 1_000_000


class Trainer:
    """Trains one JEM-style classifier with EB-JDAT. See the module docstring."""

    def __init__(self, cfg: TrainConfig, *, init_state: dict | None = None):
        """``init_state``: a saved class-Gaussian (Trainer.init_state) used instead of a
        fit to the data (a resumed run continues with its own)."""
        self.cfg = cfg = cfg.validated()
        self.rank, self.world = dist.rank_and_world()
        self.device = dist.local_device(resolve_device(cfg.device))
        seed = cfg.seed + 1000 * self.rank          # rank-aware: each rank its own stream
        torch.manual_seed(seed)
        published_mode = cfg.mode == "published"
        self.gpu = self.device.type == "cuda"
        ops.check_backend(cfg.backend, self.device)   # ValueError saying what to use instead
        ops.set_backend(cfg.backend)
        self.resumed_from: Path | None = None   # the checkpoint this trainer continues
        self.restarted_in: Path | None = None   # the run folder it starts again at step 0 (no checkpoint)
        self.resumes: list[dict] = []            # every resume of the run: step, file, changes

        self._load_data(seed)
        self._build_model()
        self.optimizer = self._build_optimizer(foreach=not published_mode)
        self.philox = ops.PhiloxGenerator(seed, device=self.device)
        self._build_chains(seed, init_state)
        # the parts the iteration runs: the published code's, or their fast equivalents;
        # an objective that switches a term off (weight 0) switches its work off too
        parts = build.iteration(cfg, self.net, self.buffer, generator=self.philox, device=self.device,
                                cuda_graph=not published_mode and self.gpu and cfg.cuda_graph,
                                memory_format=self.memory_format)
        self.sampler, self.chains, self.attack, self.objective = parts.sampler, parts.chains, parts.attack, parts.objective
        if self.compile_info["active"]:   # each sampler and attack step one graph
            self.sampler.compile()
            self.attack.compile()
        self.reads = objectives.reads(cfg)   # the batches the weighted terms read: the work done
        self.precision, self.precision_reason = self._choose_precision()
        self.autocast_dtype = torch.bfloat16 if self.precision == "bf16" else None
        self.watch = DivergenceWatch(cfg.loss_bound, objectives.watched(cfg), self.device, every_step=published_mode)
        self.step = 0
        # the log window (sums of the metrics since the last row, their count) and the
        # training time so far: checkpointed, so a resumed run logs what an uninterrupted one would
        self.log_sums = {k: torch.zeros((), device=self.device) for k in METRICS}
        self.log_count = 0
        self.wall_s = 0.0

    # ------------------------------------------------------------------ construction
    def _generator(self, seed: int, where=None) -> torch.Generator:
        return torch.Generator(where or self.device).manual_seed(seed)

    def _load_data(self, seed: int) -> None:
        """The train split (cfg.holdout images held out), the test split, and the loaders of
        the labelled batch and of x_pd, each with its own stream (seed + 1, seed + 2)."""
        cfg = self.cfg
        where = dict(root=cfg.data_root, image_size=cfg.image_size, classes=cfg.classes)
        self.train_set = hold_out(load_dataset(cfg.dataset, "train", **where), cfg.holdout, seed=cfg.seed)
        self.test_set = load_dataset(cfg.dataset, "test", **where)
        noise_lab = cfg.sigma if cfg.noise_on == "all" else 0.0
        self.lab_loader = Loader(self.train_set, cfg.label_batch_size, device=self.device, augment=True,
                                 noise_sigma=noise_lab, generator=self._generator(seed + 1))
        self.pd_loader = Loader(self.train_set, cfg.batch_size, device=self.device, augment=cfg.pd_augment,
                                noise_sigma=cfg.sigma, generator=self._generator(seed + 2))

    def _build_model(self) -> None:
        """The model on the device, the same on every rank; in fast mode in channels_last
        (cfg.channels_last) and compiled (cfg.compile) where it can be: ``net`` is what the
        iteration calls (the compiled module, or the model). Published mode: the published
        fp32 NCHW eager model."""
        cfg, ds, fast = self.cfg, self.train_set, self.cfg.mode != "published"
        self.model = build.model(cfg, ds.channels, ds.n_classes).to(self.device)
        self.threads, self.threads_reason = self._choose_threads()
        self.memory_format = torch.channels_last if fast and cfg.channels_last else None
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        dist.broadcast_model(self.model)
        self.compile_info = self._compile_info(cfg.compile and fast)
        self.net = energy.compiled(self.model) if self.compile_info["active"] else self.model

    def _build_chains(self, seed: int, init_state: dict | None) -> None:
        """The chains' initial distribution and the replay buffer (streams seed + 4, seed + 3),
        on the device; on the host in published mode, as the published buffer."""
        cfg, ds = self.cfg, self.train_set
        where = torch.device("cpu") if cfg.mode == "published" else self.device
        self.init = build.initial_distribution(cfg, data=(ds.x, ds.y, ds.n_classes), state=init_state,
                                               device=where, generator=self._generator(seed + 4, where))
        self._init_digest: str | None = None
        self.buffer = build.replay_buffer(cfg, tuple(ds.x.shape[1:]), self.init, device=where,
                                          generator=self._generator(seed + 3, where), world=self.world)

    def _choose_threads(self) -> tuple[int, str]:
        """(threads, why): the CPU intra-op threads ``fit`` trains with: cfg.threads, else
        one for models under SMALL_MODEL_PARAMS parameters, where a second thread gains
        little on a quiet machine and costs up to 10x when another process holds a core
        (idle threads spin-wait for it: ``ebjdat bench threads``); torch's default otherwise
        and on a GPU."""
        if self.gpu:
            return torch.get_num_threads(), "GPU run: torch's default"
        if self.cfg.threads is not None:
            usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            if self.cfg.threads > usable:   # idle threads spin-wait on the busy cores: a crawl
                raise ValueError(f"threads {self.cfg.threads} is more than the {usable} CPUs this process may use; "
                                 f"pass --threads {usable} or less (a resume may change it)")
            return self.cfg.threads, "set by the threads setting"
        n_params = sum(p.numel() for p in self.model.parameters())
        if n_params < SMALL_MODEL_PARAMS:
            return 1, f"{n_params} parameters < {SMALL_MODEL_PARAMS}: one thread survives a loaded machine"
        return torch.get_num_threads(), f"{n_params} parameters: torch's default"

    def _choose_precision(self) -> tuple[str, str]:
        """(precision, why): published mode fp32; "auto" bf16 autocast where the device has
        bf16 units (``hardware.bf16_units``: there it measured faster, docs/performance.md),
        else fp32; "fp32" / "bf16" as set."""
        cfg = self.cfg
        if cfg.mode == "published":
            return "fp32", "published mode: the published fp32 computation"
        if cfg.precision != "auto":
            return cfg.precision, "set by the precision setting"
        units, why = hardware.bf16_units(self.device)
        return ("bf16" if units else "fp32"), f"auto: {why}"

    def _compile_info(self, wanted: bool) -> dict:
        """What torch.compile does in this run (summary.json records it): ``active`` when
        compile was asked for in fast mode and can run on this device; else ``why`` not,
        said once on stderr when it was asked for. Active: the model's logits path and each
        sampler and attack step are compiled regions (``ebjdat.compiling``)."""
        info = {"requested": self.cfg.compile, "active": False, "why": None,
                "traces_autograd": compiling.traces_autograd()}
        if not self.cfg.compile:
            info["why"] = "compile is off"
        elif not wanted:
            info["why"] = "published mode runs the published eager computation"
        else:
            info["why"] = compiling.unavailable(self.device)
            info["active"] = info["why"] is None
        if self.cfg.compile and not info["active"]:
            print(f"ebjdat: --compile is not in effect ({info['why']}); training runs eager", file=sys.stderr)
        return info

    def _build_optimizer(self, foreach: bool) -> torch.optim.Optimizer:
        """SGD (momentum) or Adam, in SAM when sam_rho > 0; ``foreach``: multi-tensor
        updates (the published loop steps one tensor at a time)."""
        cfg = self.cfg
        if cfg.optimizer == "adam":
            base, kw = torch.optim.Adam, dict(lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        else:
            base, kw = torch.optim.SGD, dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if cfg.sam_rho > 0:
            return SAM(self.model.parameters(), base, rho=cfg.sam_rho, foreach=foreach, **kw)
        return base(self.model.parameters(), foreach=foreach, **kw)

    def init_state(self) -> dict:
        """The initial distribution of the chains, as sampling needs it without the data:
        {"kind": "uniform"} or {"kind": "class_gaussian", mean, chol, sample_shape, bounds}."""
        if isinstance(self.init, ClassGaussianInit):
            return {"kind": "class_gaussian", **{k: v.cpu() for k, v in self.init.state_dict().items()}}
        return {"kind": "uniform"}

    def state_dict_init(self) -> dict:
        """What a checkpoint records of init_state: {"kind"}, plus the file and its digest
        for a class-Gaussian (loop.save_init writes it once per run folder)."""
        state = self.init_state()
        if state["kind"] == "uniform":
            return state
        if self._init_digest is None:   # hashing K D^2 floats: once per trainer
            self._init_digest = state_digest(state)
        return {"kind": state["kind"], "file": INIT_FILE, "sha256": self._init_digest}

    # ------------------------------------------------------------------ one iteration
    @property
    def steps_per_epoch(self) -> int:
        return self.lab_loader.steps_per_epoch

    def _precision(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _logits(self, x: Tensor | None) -> Tensor | None:
        if x is None:
            return None
        if self.memory_format is not None and x.dim() == 4:
            # every input in the model's layout: no layout conversion inside the model, and a
            # compiled model sees one input layout (dynamo recompiles for each stride pattern)
            x = x.contiguous(memory_format=self.memory_format)
        return logits_of(self.net, x).float()

    def sample_q(self) -> Tensor:
        """(batch_size, ...) SGLD samples continuing buffer chains (written back to them),
        the model in the sampler's train/eval mode."""
        self.model.train(self.cfg.sampler_train_mode)
        try:
            return self.chains.sample(self.cfg.batch_size)
        finally:
            self.model.train(True)

    def adversarial(self, x: Tensor, y: Tensor) -> Tensor:
        """x_adv of the labelled batch, the model in eval mode (as the published code)."""
        self.model.eval()
        try:
            return self.attack(x, y)
        finally:
            self.model.train(True)

    def _read(self, name: str, x: Tensor | None) -> Tensor | None:
        """The logits of batch ``name`` (objectives.BATCHES), or None when no weighted term reads it."""
        return self._logits(x) if name in self.reads else None

    def clean_logits(self, x_pd: Tensor, x_q: Tensor | None, x_lab: Tensor) -> dict:
        """{"pd", "q", "lab"} -> the train-mode forwards of x_pd, x_q and x_lab, in that
        order; None for the batches no weighted term reads."""
        return {"pd": self._read("pd", x_pd), "q": self._read("q", x_q), "lab": self._read("lab", x_lab)}

    def sample_and_forward(self, x_pd: Tensor, x_lab: Tensor) -> tuple[Tensor | None, dict]:
        """(x_q, clean logits of x_pd, x_q, x_lab): the iteration's train-mode forwards
        before the attack, in the published order. x_pd's forward comes before the sampler
        where the variant's code has it there (cfg.pd_first: JEM++, SADA-JEM; so the
        sampler's train-mode BatchNorm already counts x_pd), after it otherwise (JEM).
        SADA-JEM's p(x) check (cfg.bound_on "l_px") is observed right after the p(x)
        forwards, where its code checks, before the labelled forward."""
        first = self._read("pd", x_pd) if self.cfg.pd_first else None
        x_q = self.sample_q()
        self.last_samples = x_q   # pictured if the run diverges
        clean = {"pd": first if self.cfg.pd_first else self._read("pd", x_pd), "q": self._read("q", x_q)}
        if self.watch.term == "l_px" and clean["q"] is not None:
            self.watch.observe(objectives.px_term(clean["pd"], clean["q"]), self.step + 1)
        clean["lab"] = self._read("lab", x_lab)
        return x_q, clean

    def loss(self, clean: tuple, x_pd: Tensor, x_adv: Tensor, y_lab: Tensor) -> tuple[Tensor, dict]:
        """(loss, terms) from the clean logits and the forwards after the attack."""
        return self.objective(self.cfg, self._logits, clean, x_pd, x_adv, y_lab)

    def train_step(self, x_lab: Tensor | None = None, y_lab: Tensor | None = None,
                   x_pd: Tensor | None = None) -> dict:
        """One EB-JDAT iteration in the published order (ebjdat/published.py); draws its own
        batches when none are given: x_q from the sampler and the train-mode forwards of
        x_pd, x_q and x_lab (``sample_and_forward``); the attack in eval mode, which so sees
        BatchNorm running statistics that include this iteration's batches; the forwards of
        x_adv; the divergence watch (``runs.DivergenceWatch``); the optimiser step (SAM: a
        second pass over the same x_q and x_adv with BatchNorm frozen); every refresh_every
        iterations one more sampler call on the buffer (JEM, JEM++).

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
        self.optimizer.zero_grad(set_to_none=True)
        with self._precision():
            x_q, clean = self.sample_and_forward(x_pd, x_lab)
            x_adv = self.adversarial(x_lab, y_lab)
            loss, terms = self.loss(clean, x_pd, x_adv, y_lab)
            if self.watch.term != "l_px":   # the published checks of the loss: before the backward
                self.watch.observe(loss if self.watch.term == "loss" else terms[self.watch.term], self.step + 1)
            self._optimise(loss, lambda: self.loss(self.clean_logits(x_pd, x_q, x_lab), x_pd, x_adv, y_lab)[0])
        self.step += 1
        if self.cfg.refresh_every and self.step % self.cfg.refresh_every == 0:
            with self._precision():
                self.sample_q()
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
        """Raise TrainingDiverged if the watched value (cfg.bound_on) since the last check was
        non-finite or exceeded cfg.loss_bound (reads one value: a host sync)."""
        self.watch.check(self.step)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resumed run needs, tensors and plain values only: the shared
        model, optimiser, step and config, and each rank's buffer shard and random streams."""
        return {"step": self.step, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
                "init": self.state_dict_init(),
                "data": {"n_classes": self.train_set.n_classes, "sample_shape": list(self.train_set.x.shape[1:])},
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
    def fit(self, closing=None) -> dict:
        """Train to cfg.steps (or cfg.epochs), write the run folder (loop.py) and return
        its summary. closing(trainer, folder) -> dict: the closing evaluation whose metrics
        the summary records (``ebjdat.evaluate.closing.evaluate``, as ``ebjdat train``
        runs it); None: none."""
        return loop.fit(self, closing)

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
        checkpoint lies in (``run_folder_of``: the folder as named, symbolic links not
        followed), whatever the stored config says, unless ``out`` names another folder
        (``fit`` accepts only a new or empty one) or is None (nothing will be written:
        sampling, evaluation).

        A run folder with no checkpoint but its config.json (a run stopped before its first
        checkpoint) starts again at step 0 with those settings (``restart``). A checkpoint
        whose fields have the wrong types, or whose variant, objective or dataset differ
        from its run folder's config.json (copied in from another run), is refused.
        """
        p = Path(path)
        if p.is_dir() and latest_checkpoint(p / "checkpoints") is None and latest_checkpoint(p) is None:
            if overrides.get("out", p) is None:   # a checkpoint to read, not a run to train
                resolve_checkpoint(p)   # FileNotFoundError naming the folder
            return cls.restart(p, **overrides)
        ckpt = resolve_checkpoint(path)
        sd = load_checkpoint(ckpt)
        check_training_fields(ckpt, sd)
        check_same_run(ckpt, sd["config"], run_folder_of(ckpt, resolve=False))
        try:
            stored = TrainConfig.from_dict(sd["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {ckpt} holds a config this ebjdat cannot read: {e}") from None
        check_resume(stored, overrides)
        overrides.setdefault("out", str(run_folder_of(ckpt, resolve=False)))
        init = load_init(ckpt, sd.get("init"), missing_ok=True)   # None: fitted to the data again
        trainer = cls(stored.with_overrides(**overrides), init_state=init)
        try:
            trainer.load_state_dict(sd)
        except (RuntimeError, KeyError, ValueError) as e:
            raise ValueError(f"checkpoint {ckpt} does not fit its own config ({stored.variant} on "
                             f"{stored.dataset}): {str(e).splitlines()[0]}") from e
        trainer.resumed_from = ckpt
        changed = {k: [getattr(stored, k), v] for k, v in overrides.items() if getattr(stored, k) != v}
        trainer.resumes.append({"step": trainer.step, "checkpoint": str(ckpt), "changed": changed})
        return trainer

    @classmethod
    def restart(cls, folder, **overrides) -> "Trainer":
        """The Trainer of a run folder stopped before its first checkpoint (config.json, no
        checkpoint, no summary.json), at step 0 with its stored settings: ``fit`` trains it
        again in that folder. ``overrides``: config.RESUMABLE fields only, as for ``resume``."""
        folder = Path(folder)
        if not restartable(folder):
            raise FileNotFoundError(f"no checkpoint (step_N.pt) in {folder} or {folder / 'checkpoints'} and no "
                                    f"{RUN_CONFIG}: nothing to resume; start a new run with ebjdat train "
                                    f"--out <new folder>")
        where = folder / RUN_CONFIG
        try:
            stored = TrainConfig.from_dict(json.loads(where.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{where} holds no settings this ebjdat can read ({str(e).splitlines()[0]}): "
                             f"start a new run with ebjdat train --out <new folder>") from None
        check_resume(stored, overrides)
        overrides.setdefault("out", str(Path(os.path.abspath(folder))))
        print(f"ebjdat: {folder} holds no checkpoint (the run was stopped before its first one): training "
              f"starts again at step 0 with its stored settings ({where})", file=sys.stderr)
        trainer = cls(stored.with_overrides(**overrides))
        trainer.restarted_in = folder
        changed = {k: [getattr(stored, k), v] for k, v in overrides.items() if getattr(stored, k) != v}
        trainer.resumes.append({"step": 0, "checkpoint": None, "changed": changed})
        return trainer
