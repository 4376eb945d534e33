"""The published EB-JDAT computation, written once (the authors' released training code, described here in our words).

Its parts, which the trainer's published mode is built from: ``HostChains`` (the replay
buffer on the host: rows gathered, moved to the device, sampled and scattered back every
iteration), ``PublishedAttack`` / ``published_attack`` (eval mode, micro-batches of 2, the
clean logits recomputed, x_adv forwarded twice per step, the perceptual distance summed
over each micro-batch) and ``objective`` (x_pd forwarded again and x_adv twice after the
attack).

``PublishedLoop.step(x_lab, y_lab, x_pd)``: the whole published iteration in plain
PyTorch, waste included, for the benchmark's baseline and the tests' oracle: its own host
buffer, fresh per-class Gaussian rows made one row at a time in a Python loop; x_q from
SGLD (PYLD's inner steps reuse the outer gradient) and the train-mode forwards of x_pd,
x_q and x_lab (x_pd's before the sampler in JEM++ and SADA-JEM); the attack; the loss;
the divergence check read every iteration where the variant's code reads it; the
optimiser step (SAM, adaptive for rho >= 0.5, its second pass with BatchNorm frozen);
the buffer refresh of JEM and JEM++. fp32.

``random_start(x)`` draws the attack's start (default: ``U(-eps, eps)`` from the loop's
own generator); tests plug in the trainer's Philox stream to compare the two exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .energy import logits_of as _logits
from .energy import perceptual_distance
from .models.batchnorm import frozen_batchnorm
from .objectives import learning_rate, px_term, watched, weigh
from .sampling import ClassGaussianInit

__all__ = ["PublishedLoop", "PublishedAttack", "HostChains", "published_attack", "objective"]


def published_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg, start: torch.Tensor) -> torch.Tensor:
    """x_adv of the published adversarial sampler from ``start`` (x plus its random start):
    eval mode; micro-batches of ``cfg.adv_micro_batch``; per step the clean logits
    recomputed, ``J = sum logit_y + sum P`` (P the perceptual distance, summed over the
    micro-batch: the code's per-row loop returns one summed element), x_adv forwarded twice,
    ``x_adv += alpha * sign(dJ/dx_adv)``, projection only if ``cfg.pgd_project``, clamp to
    [-1, 1]. The model's train/eval mode is restored. ``cfg.adv_objective`` "energy" or
    "ce" replace J by the paper's alternatives."""
    was_training = model.training
    model.eval()
    m, out = cfg.adv_micro_batch, []
    try:
        for i in range(0, x.shape[0], m):
            xb, yb, xa = x[i:i + m], y[i:i + m], start[i:i + m]
            for _ in range(cfg.pgd_steps):
                xa = xa.detach().requires_grad_(True)
                with torch.enable_grad():
                    (g,) = torch.autograd.grad(_objective(model, cfg, xb, yb, xa), xa)
                xa = xa.detach() + cfg.pgd_alpha * g.sign()
                if cfg.pgd_project:
                    xa = xb + (xa - xb).clamp(-cfg.pgd_eps, cfg.pgd_eps)
                xa = xa.clamp(-1.0, 1.0)
            out.append(xa.detach())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _objective(model, cfg, xb, yb, xa) -> torch.Tensor:
    """The quantity ascended on one micro-batch, with the published code's forwards."""
    if cfg.adv_objective == "ebjdat":
        clean = _logits(model, xb).detach()                                    # recomputed
        j = _logits(model, xa).gather(1, yb[:, None]).sum()
        return j + perceptual_distance(clean, _logits(model, xa)).sum()       # 2nd forward
    logits = _logits(model, xa)
    if cfg.adv_objective == "energy":
        return -logits.gather(1, yb[:, None]).sum()
    return F.cross_entropy(logits, yb)


def objective(cfg, logits, clean: dict, x_pd, x_adv, y_lab) -> tuple[torch.Tensor, dict]:
    """(loss, terms) with the published code's forwards after the attack: each term that
    reads x_adv forwards its own inputs anew (p(x, x_adv): x_pd, then x_adv; p(y | x_adv):
    x_adv again). The values equal ``ebjdat.objectives.objective``'s; the extra train-mode
    forwards move BatchNorm's running statistics. logits: x -> (B, K) logits (None ->
    None); clean: {"pd", "q", "lab"} -> the logits from before the attack."""
    after = {"pd": x_pd, "adv": x_adv}

    def inputs(term):
        if "adv" not in term.inputs:
            return [clean[b] for b in term.inputs] + [y_lab]
        return [logits(after[b]) for b in term.inputs] + [y_lab]
    return weigh(cfg, inputs)


class PublishedAttack:
    """The training attack of published mode: a U(-eps, eps) start drawn by the fused
    ``pgd_init_`` from ``generator`` (a PhiloxGenerator), then :func:`published_attack`."""

    def __init__(self, model: nn.Module, cfg, generator):
        self.model, self.cfg, self.generator = model, cfg, generator

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        start = torch.empty_like(x)
        ops.pgd_init_(start, x, eps=self.cfg.pgd_eps, clamp=(-1.0, 1.0), generator=self.generator)
        return published_attack(self.model, x, y, self.cfg, start)


class HostChains:
    """Published mode's sampling step: rows of a host ReplayBuffer gathered, moved to the
    device, run through ``sampler`` and scattered back (the published code's host round
    trip, a synchronisation every iteration). ``sample(n)`` returns the (n, ...) samples."""

    def __init__(self, buffer, sampler, device):
        self.buffer, self.sampler, self.device = buffer, sampler, torch.device(device)

    def sample(self, n: int) -> torch.Tensor:
        x, idx = self.buffer.sample(n)
        x = self.sampler.sample(x_init=x.to(self.device))
        self.buffer.update_(idx, x.cpu())
        return x


class PublishedLoop:
    """One published EB-JDAT iteration per ``step(x_lab, y_lab, x_pd)`` (module docstring)."""

    def __init__(self, cfg, model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor,
                 n_classes: int, device="cpu", steps_per_epoch: int = 1, random_start=None,
                 gaussian=None):
        self.cfg, self.model, self.device = cfg, model.to(device), torch.device(device)
        self.steps_per_epoch, self.t = steps_per_epoch, 0
        self.watched = watched(cfg)
        where = torch.device("cpu")                                # the published host buffer
        self.gen_buf = torch.Generator(where).manual_seed(cfg.seed + 3)
        self.gen_init = torch.Generator(where).manual_seed(cfg.seed + 4)
        self.gen_dev = torch.Generator(self.device).manual_seed(cfg.seed + 5)
        self.shape = tuple(train_x.shape[1:])
        if cfg.init == "class_gaussian" and gaussian is not None:   # (mean, chol) already fitted
            self.mu, self.chol = (t.detach().float().to(where) for t in gaussian)
        elif cfg.init == "class_gaussian":   # mean + full covariance + 1e-4 I, as the published fit
            fit = ClassGaussianInit.fit(train_x, train_y, n_classes, device=where)
            self.mu, self.chol = fit.mean, fit.chol
        self.K = n_classes
        self.buffer = self._init_batched(max(cfg.batch_size, cfg.buffer_size))  # not timed
        self.random_start = random_start or self._uniform_start
        kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "foreach": False}
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(model.parameters(), betas=(0.9, 0.999), **kw)
        else:
            self.opt = torch.optim.SGD(model.parameters(), momentum=cfg.momentum, **kw)

    # ---------------------------------------------------------------- replay buffer
    def _init(self, n: int) -> torch.Tensor:
        """n fresh rows: U(-1, 1), or the per-class Gaussian made row by row (the published code's loop)."""
        if self.cfg.init == "uniform":
            return self._uniform(n)
        y = torch.randint(0, self.K, (n,), generator=self.gen_init, device=self.gen_init.device)
        z = torch.randn(n, self.mu.shape[1], generator=self.gen_init, device=self.gen_init.device)
        out = torch.empty_like(z)
        for i in range(n):
            out[i] = self.chol[y[i]] @ z[i] + self.mu[y[i]]
        return out.clamp_(-1, 1).view(n, *self.shape)

    def _uniform(self, n: int) -> torch.Tensor:
        return torch.empty(n, *self.shape, device=self.gen_buf.device).uniform_(-1, 1, generator=self.gen_buf)

    def _init_batched(self, n: int) -> torch.Tensor:
        """n fresh rows in batched ops (the initial fill at construction, which is not timed)."""
        if self.cfg.init == "uniform":
            return self._uniform(n)
        dev = self.gen_init.device
        y = torch.randint(0, self.K, (n,), generator=self.gen_init, device=dev)
        z = torch.randn(n, self.mu.shape[1], generator=self.gen_init, device=dev)
        out = torch.empty_like(z)
        if dev.type == "cpu":         # host: each class's rows by its own factor
            for k in range(self.K):
                rows = (y == k).nonzero().squeeze(1)
                out[rows] = z[rows] @ self.chol[k].T
            return (out + self.mu[y]).clamp_(-1, 1).view(n, *self.shape)
        for s in range(0, n, 256):    # device: all K products, own class gathered (no sync)
            every = z[s:s + 256] @ self.chol.mT                  # (K, m, D)
            m = every.shape[1]
            out[s:s + m] = every[y[s:s + m], torch.arange(m, device=dev)]
        return (out + self.mu[y]).clamp_(-1, 1).view(n, *self.shape)

    def _draw(self, b: int):
        idx = torch.randint(0, self.buffer.shape[0], (b,), generator=self.gen_buf, device=self.gen_buf.device)
        x = self.buffer[idx]
        if self.cfg.reinit_freq > 0:
            fresh = self._init(b)
            coin = torch.rand(b, generator=self.gen_buf, device=self.gen_buf.device) < self.cfg.reinit_freq
            x = torch.where(coin.view(b, *[1] * len(self.shape)), fresh, x)
        return x.to(self.device), idx

    # ---------------------------------------------------------------- the samplers
    def sample_q(self) -> torch.Tensor:
        cfg = self.cfg
        x, idx = self._draw(cfg.batch_size)
        self.model.train(cfg.sampler_train_mode)
        for _ in range(cfg.sgld_steps):
            x = x.detach().requires_grad_(True)
            g = torch.autograd.grad(_logits(self.model, x).logsumexp(1).sum(), x)[0]
            for _ in range(cfg.sgld_inner):  # PYLD's inner steps reuse the outer gradient
                step = g if cfg.sgld_clip is None else g.clamp(-cfg.sgld_clip, cfg.sgld_clip)
                x = x.detach() + cfg.sgld_step_size * step
                if cfg.sgld_noise > 0:
                    x = x + cfg.sgld_noise * torch.randn(x.shape, generator=self.gen_dev, device=x.device)
                if cfg.sgld_clamp:
                    x = x.clamp(-1, 1)
        self.model.train(True)
        x = x.detach()
        self.buffer[idx.to(self.buffer.device)] = x.to(self.buffer.device)  # a host sync in the published code
        return x

    def _uniform_start(self, x: torch.Tensor) -> torch.Tensor:
        e = self.cfg.pgd_eps
        return (x + torch.empty(x.shape, device=x.device).uniform_(-e, e, generator=self.gen_dev)).clamp(-1, 1)

    def attack(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return published_attack(self.model, x, y, self.cfg, self.random_start(x))

    # ---------------------------------------------------------------- loss and update
    def clean_logits(self, x_pd, x_q, x_lab) -> dict:
        """The train-mode forwards of x_pd, x_q and x_lab, in that order (SAM's second pass)."""
        f = lambda x: _logits(self.model, x)  # noqa: E731
        return {"pd": f(x_pd), "q": f(x_q), "lab": f(x_lab)}

    def sample_and_forward(self, x_pd, x_lab):
        """(x_q, clean logits): fp = f(x_pd) before sample_q where cfg.pd_first (JEM++ and
        SADA-JEM's code), after it otherwise (JEM's); f(x_q); SADA-JEM's divergence check
        (cfg.bound_on "l_px") right after the p(x) term, a host read; then f(x_lab)."""
        f = lambda x: _logits(self.model, x)  # noqa: E731
        first = f(x_pd) if self.cfg.pd_first else None
        x_q = self.sample_q()
        l_pd = first if self.cfg.pd_first else f(x_pd)
        l_q = f(x_q)
        if self.watched == "l_px":
            self._check("l_px", px_term(l_pd, l_q))
        return x_q, {"pd": l_pd, "q": l_q, "lab": f(x_lab)}

    def _check(self, term: str, value: torch.Tensor) -> None:
        """The published divergence check: the value read on the host every iteration."""
        value = float(value.detach())
        if not abs(value) <= self.cfg.loss_bound:
            raise FloatingPointError(f"|{term}| = {value:g} exceeds {self.cfg.loss_bound:g}")

    def loss(self, clean, x_pd, x_adv, y_lab) -> tuple[torch.Tensor, dict]:
        return objective(self.cfg, lambda x: None if x is None else _logits(self.model, x), clean, x_pd, x_adv, y_lab)

    def _lr(self) -> float:
        return learning_rate(self.cfg, self.t, self.steps_per_epoch)

    def update(self, loss, second_pass):
        """The optimiser step; SAM's second pass recomputes the loss with BatchNorm frozen."""
        cfg, params = self.cfg, [p for p in self.model.parameters()]
        loss.backward()
        if cfg.sam_rho > 0:
            adaptive, with_g = cfg.sam_rho >= 0.5, [p for p in params if p.grad is not None]
            with torch.no_grad():
                scaled = [(p.abs() * p.grad if adaptive else p.grad) for p in with_g]
                norm = torch.stack([s.norm(2) for s in scaled]).norm(2)
                old = [p.clone() for p in with_g]
                for p in with_g:
                    p.add_((p * p if adaptive else 1) * p.grad * (cfg.sam_rho / (norm + 1e-12)))
            self.opt.zero_grad(set_to_none=True)
            with frozen_batchnorm(self.model):               # second pass: BN statistics frozen
                second_pass().backward()
            with torch.no_grad():
                for p, o in zip(with_g, old):
                    p.copy_(o)
        self.opt.step()

    def step(self, x_lab: torch.Tensor, y_lab: torch.Tensor, x_pd: torch.Tensor) -> dict:
        """One iteration in the published order: x_q and the train-mode forwards of x_pd,
        x_q, x_lab (``sample_and_forward``); the eval-mode attack; the forwards of x_adv;
        the divergence check on the loss before the backward (JEM, JEM++; SADA-JEM's comes
        earlier); the optimiser step; every cfg.refresh_every iterations one more sampler
        call on the buffer (JEM, JEM++). Returns {"loss", "l_px", "l_pyx", "l_pxadv",
        "l_pyxadv"} (0-d tensors)."""
        cfg = self.cfg
        self.model.train(True)
        for g in self.opt.param_groups:
            g["lr"] = self._lr()
        self.opt.zero_grad(set_to_none=True)
        x_q, clean = self.sample_and_forward(x_pd, x_lab)
        x_adv = self.attack(x_lab, y_lab)
        loss, terms = self.loss(clean, x_pd, x_adv, y_lab)
        if self.watched != "l_px":
            self._check(self.watched, loss if self.watched == "loss" else terms[self.watched])
        self.update(loss, lambda: self.loss(self.clean_logits(x_pd, x_q, x_lab), x_pd, x_adv, y_lab)[0])
        self.t += 1
        if cfg.refresh_every and self.t % cfg.refresh_every == 0:
            self.sample_q()                                 # JEM's and JEM++'s buffer refresh
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
