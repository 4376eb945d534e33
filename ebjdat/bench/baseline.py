"""The baselines the training step is measured against, written as plain PyTorch.

``ReferenceLoop``: the published EB-JDAT iteration re-implemented from REFERENCE.md,
waste included: the replay buffer lives on the host (rows gathered, moved to the device
and scattered back every iteration), fresh per-class Gaussian rows are made one row at a
time in a Python loop, the attack runs in micro-batches of 2 with the clean logits
recomputed and x_adv forwarded twice per step, the loss forwards x_pd and x_adv twice,
and SAM (adaptive for rho >= 0.5) takes its second pass with BatchNorm frozen. fp32.

``EagerLoop``: what a careful user writes without ebjdat: the buffer on the device,
fresh rows in one batched op, the whole batch attacked at once with one clean forward
and one forward per step, one forward per input in the loss; plain torch update math,
no CUDA graphs, no torch.compile, fp32.

Both compute the trainer's reference-mode losses given the same model, buffer and random
draws (tests/test_bench.py; with BatchNorm the eager loop only at the first step: its
single forwards update the running statistics less often). ``random_start(x)`` draws the attack's
start noise (default: plain ``U(-eps, eps)``); the test plugs in the trainer's stream.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..energy import logits_of as _logits
from ..energy import perceptual_distance
from .profiling import phase as _phase


class ReferenceLoop:
    """One published EB-JDAT iteration per ``step(x_lab, y_lab, x_pd)`` (module docstring)."""

    host_buffer = True

    def __init__(self, cfg, model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor,
                 n_classes: int, device="cpu", steps_per_epoch: int = 1, random_start=None,
                 gaussian=None):
        self.cfg, self.model, self.device = cfg, model.to(device), torch.device(device)
        self.steps_per_epoch, self.t = steps_per_epoch, 0
        where = torch.device("cpu") if self.host_buffer else self.device
        self.gen_buf = torch.Generator(where).manual_seed(cfg.seed + 3)
        self.gen_init = torch.Generator(where).manual_seed(cfg.seed + 4)
        self.gen_dev = torch.Generator(self.device).manual_seed(cfg.seed + 5)
        self.shape = tuple(train_x.shape[1:])
        if cfg.init == "class_gaussian" and gaussian is not None:   # (mean, chol) already fitted
            self.mu, self.chol = (t.detach().float().to(where) for t in gaussian)
        elif cfg.init == "class_gaussian":   # per-class mean and Cholesky factor, float64 fit
            xs, mus, chols = train_x.flatten(1).double(), [], []
            for k in range(n_classes):
                xk = xs[train_y == k]
                mu = xk.mean(0)
                cov = (xk - mu).T @ (xk - mu) / xk.shape[0]
                mus.append(mu)
                chols.append(torch.linalg.cholesky(cov + 1e-4 * torch.eye(xs.shape[1], dtype=xs.dtype)))
            self.mu = torch.stack(mus).float().to(where)
            self.chol = torch.stack(chols).float().to(where)
        self.K = n_classes
        self.buffer = self._init_batched(max(cfg.batch_size, cfg.buffer_size))  # not timed
        self.random_start = random_start or self._uniform_start
        kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "foreach": not self.host_buffer}
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(model.parameters(), betas=(0.9, 0.999), **kw)
        else:
            self.opt = torch.optim.SGD(model.parameters(), momentum=cfg.momentum, **kw)

    # ---------------------------------------------------------------- replay buffer
    def _init(self, n: int) -> torch.Tensor:
        """n fresh rows: U(-1, 1), or the per-class Gaussian made row by row (the reference's loop)."""
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
        """n fresh rows in batched ops (not timed at construction; EagerLoop's per-iteration draw)."""
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
        self.buffer[idx.to(self.buffer.device)] = x.to(self.buffer.device)  # a host sync in the reference
        return x

    def _uniform_start(self, x: torch.Tensor) -> torch.Tensor:
        e = self.cfg.pgd_eps
        return (x + torch.empty(x.shape, device=x.device).uniform_(-e, e, generator=self.gen_dev)).clamp(-1, 1)

    def _pgd_step(self, xb, xa, g):
        cfg = self.cfg
        xa = xa.detach() + cfg.pgd_alpha * g.sign()
        if cfg.pgd_project:
            xa = xb + (xa - xb).clamp(-cfg.pgd_eps, cfg.pgd_eps)
        return xa.clamp(-1, 1)

    def attack(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_adv in eval mode, micro-batches of adv_micro_batch, J = sum logit_y + mean P."""
        cfg, m = self.cfg, self.cfg.adv_micro_batch
        self.model.eval()
        start, out = self.random_start(x), []
        for i in range(0, x.shape[0], m):
            xb, yb, xa = x[i:i + m], y[i:i + m], start[i:i + m]
            for _ in range(cfg.pgd_steps):
                xa = xa.detach().requires_grad_(True)
                clean = _logits(self.model, xb).detach()                       # recomputed
                j = _logits(self.model, xa).gather(1, yb[:, None]).sum()
                p = perceptual_distance(clean, _logits(self.model, xa)).mean()   # 2nd forward
                xa = self._pgd_step(xb, xa, torch.autograd.grad(j + p, xa)[0])
            out.append(xa.detach())
        self.model.train(True)
        return torch.cat(out)

    # ---------------------------------------------------------------- loss and update
    def losses(self, x_pd, x_q, x_lab, y_lab, x_adv) -> tuple[torch.Tensor, dict]:
        cfg, f = self.cfg, lambda x: _logits(self.model, x)
        l_pd, l_q, l_lab, l_adv = f(x_pd), f(x_q), f(x_lab), f(x_adv)
        l_pd2, l_adv2 = f(x_pd), f(x_adv)                                      # duplicated
        terms = {"l_px": -(l_pd.logsumexp(1).mean() - l_q.logsumexp(1).mean()),
                 "l_pyx": F.cross_entropy(l_lab, y_lab),
                 "l_pxadv": -(l_pd2.logsumexp(1).mean() - l_adv.logsumexp(1).mean()),
                 "l_pyxadv": F.cross_entropy(l_adv2, y_lab)}
        loss = (cfg.w_px * terms["l_px"] + cfg.w_pyx * terms["l_pyx"]
                + cfg.w_pxadv * terms["l_pxadv"] + cfg.w_pyxadv * terms["l_pyxadv"])
        return loss, terms

    def _lr(self) -> float:
        cfg = self.cfg
        if self.t < cfg.warmup_iters:
            return cfg.lr * (self.t + 1) / cfg.warmup_iters
        epoch = self.t // max(1, self.steps_per_epoch)
        return cfg.lr * cfg.decay_rate ** sum(epoch >= m for m in cfg.decay_epochs)

    def update(self, x_pd, x_q, x_lab, y_lab, x_adv):
        cfg, params = self.cfg, [p for p in self.model.parameters()]
        for g in self.opt.param_groups:
            g["lr"] = self._lr()
        self.opt.zero_grad(set_to_none=True)
        loss, terms = self.losses(x_pd, x_q, x_lab, y_lab, x_adv)
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
            bns = [b for b in self.model.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
            moms = [b.momentum for b in bns]
            for b in bns:                                     # second pass: BN statistics frozen
                b.momentum = 0.0
            self.losses(x_pd, x_q, x_lab, y_lab, x_adv)[0].backward()
            for b, mom in zip(bns, moms):
                b.momentum = mom
            with torch.no_grad():
                for p, o in zip(with_g, old):
                    p.copy_(o)
        self.opt.step()
        return loss, terms

    def step(self, x_lab: torch.Tensor, y_lab: torch.Tensor, x_pd: torch.Tensor) -> dict:
        """One iteration; returns {"loss", "l_px", "l_pyx", "l_pxadv", "l_pyxadv"} (0-d tensors)."""
        self.model.train(True)
        with _phase("ebjdat.sampler"):
            x_q = self.sample_q()
        with _phase("ebjdat.attack"):
            x_adv = self.attack(x_lab, y_lab)
        with _phase("ebjdat.optimizer"):
            loss, terms = self.update(x_pd, x_q, x_lab, y_lab, x_adv)
        self.t += 1
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}


class EagerLoop(ReferenceLoop):
    """The full-batch eager fp32 loop (module docstring): same losses, no waste."""

    host_buffer = False

    _init = ReferenceLoop._init_batched

    def attack(self, x, y):
        cfg = self.cfg
        self.model.eval()
        with torch.no_grad():
            clean = _logits(self.model, x)                                    # once
        xa = self.random_start(x)
        for _ in range(cfg.pgd_steps):
            xa = xa.detach().requires_grad_(True)
            logits = _logits(self.model, xa)                                  # once per step
            j = logits.gather(1, y[:, None]).sum() + perceptual_distance(clean, logits).sum() / cfg.adv_micro_batch
            xa = self._pgd_step(x, xa, torch.autograd.grad(j, xa)[0])
        self.model.train(True)
        return xa.detach()

    def losses(self, x_pd, x_q, x_lab, y_lab, x_adv):
        cfg, f = self.cfg, lambda x: _logits(self.model, x)
        l_pd, l_q, l_lab, l_adv = f(x_pd), f(x_q), f(x_lab), f(x_adv)
        f_pd = l_pd.logsumexp(1).mean()
        terms = {"l_px": -(f_pd - l_q.logsumexp(1).mean()), "l_pyx": F.cross_entropy(l_lab, y_lab),
                 "l_pxadv": -(f_pd - l_adv.logsumexp(1).mean()), "l_pyxadv": F.cross_entropy(l_adv, y_lab)}
        loss = (cfg.w_px * terms["l_px"] + cfg.w_pyx * terms["l_pyx"]
                + cfg.w_pxadv * terms["l_pxadv"] + cfg.w_pyxadv * terms["l_pyxadv"])
        return loss, terms
