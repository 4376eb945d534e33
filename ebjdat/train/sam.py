"""Sharpness-Aware Minimisation (SAM, Foret et al. 2021) and its adaptive form (ASAM,
Kwon et al. 2021) around any base optimizer, as SADA-JEM trains (the published code:
rho = 2, adaptive because rho >= 0.5, over SGD momentum 0.9, wd 5e-4).

One SAM update takes two forward/backward passes:

1. gradients ``g`` at the weights ``w``; ``first_step()`` moves to the worst point nearby,
   ``w <- w + e_w`` with

       norm = || T_w g ||_2                      (one norm over every parameter that has a grad)
       e_w  = T_w^2 g * rho / (norm + 1e-12)     T_w = |w| (adaptive) or 1 (plain SAM)

2. gradients ``g'`` at ``w + e_w``; ``second_step()`` puts the weights back to ``w`` and
   lets the base optimizer step with ``g'``.

Everything stays on the parameters' device: the norm is a 0-dim tensor that scales the
perturbation inside foreach kernels, never read by the host, so an update does not
synchronise (and can be captured or overlapped).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..ops import checks

_EPS = 1e-12


class SAM(torch.optim.Optimizer):
    """SAM / ASAM over ``base_optimizer_cls(params, **base_kwargs)``.

    ``SAM(model.parameters(), torch.optim.SGD, rho=2.0, lr=0.01, momentum=0.9,
    weight_decay=5e-4)``. ``adaptive=None`` means ``rho >= 0.5`` (the published code's rule;
    ASAM's rho is on a much larger scale than SAM's), resolved per parameter group so a
    group may carry its own ``rho``.

    ``param_groups`` is the base optimizer's list itself: an LR scheduler (or anything
    else) that edits ``sam.param_groups[i]["lr"]`` changes the base's lr. ``state_dict()``
    is the base optimizer's (momentum buffers and all, ``rho`` / ``adaptive`` inside the
    groups); the saved weights of an unfinished two-pass step are scratch and not saved.

    Use either ``first_step()``, backward again, ``second_step()``; or ``step(closure)``
    with a closure that computes the loss, calls ``backward()`` and returns the loss.
    """

    def __init__(self, params, base_optimizer_cls: type[torch.optim.Optimizer], *,
                 rho: float = 2.0, adaptive: bool | None = None, **base_kwargs):
        if not (isinstance(base_optimizer_cls, type) and issubclass(base_optimizer_cls, torch.optim.Optimizer)):
            raise TypeError(f"base_optimizer_cls must be a torch.optim.Optimizer subclass (e.g. torch.optim.SGD), "
                            f"got {base_optimizer_cls!r}; pass the class, not an instance")
        checks.number("rho", rho)
        if adaptive is not None and not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be True, False or None (None: rho >= 0.5), got {adaptive!r}")
        # rho / adaptive join the groups next to the base's own keys (lr, momentum, ...)
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        # the base keeps the same group dicts; share the list too, so groups added or
        # replaced through either object are seen by both
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbed: list[torch.Tensor] | None = None  # params moved by first_step

    # -- groups ----------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group (with its own ``rho`` / ``adaptive`` if given) to SAM and the base."""
        param_group.setdefault("rho", self.defaults["rho"])
        param_group.setdefault("adaptive", self.defaults["adaptive"])
        checks.number("param_group['rho']", param_group["rho"])
        if param_group["adaptive"] is None:
            param_group["adaptive"] = param_group["rho"] >= 0.5
        base = self.__dict__.get("base_optimizer")
        if base is None:  # called by Optimizer.__init__, before the base exists
            super().add_param_group(param_group)
        else:  # appends to the shared list
            base.add_param_group(param_group)

    # -- the two passes --------------------------------------------------------------
    def _with_grads(self) -> list[tuple[dict, list[torch.Tensor], list[torch.Tensor]]]:
        out = []
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                out.append((group, ps, [p.grad for p in ps]))
        return out

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter that has a grad to ``w + e_w`` (formula in the module doc);
        parameters without a grad are left alone. Keeps ``w`` to restore in second_step."""
        if self._perturbed is not None:
            raise RuntimeError("first_step() was called twice without second_step() in between; "
                               "the weights are still perturbed: call second_step() first")
        groups = self._with_grads()
        self._perturbed = [p for _, ps, _ in groups for p in ps]
        if not groups:
            return
        dev = groups[0][1][0].device
        # adaptive: |w| * g has the norm of w * g, which is also half of e_w = w * (w g)
        scaled = [torch._foreach_mul(ps, gs) if g["adaptive"] else gs for g, ps, gs in groups]
        norms = [n.to(dev) for s in scaled for n in torch._foreach_norm(s, 2, dtype=torch.float32)]
        inv = torch.linalg.vector_norm(torch.stack(norms)).add_(_EPS).reciprocal_()  # 0-dim, on device
        for (group, ps, gs), s in zip(groups, scaled):
            for p in ps:  # scratch kept across steps: no allocation after the first
                st = self.state[p]
                if "old_p" not in st:
                    st["old_p"] = torch.empty_like(p, memory_format=torch.preserve_format)
            torch._foreach_copy_([self.state[p]["old_p"] for p in ps], ps)
            scale = inv * group["rho"]
            if group["adaptive"]:
                e_w = s  # w * g, ours to overwrite
                torch._foreach_mul_(e_w, ps)
                torch._foreach_mul_(e_w, scale)
            else:
                e_w = torch._foreach_mul(gs, scale)
            torch._foreach_add_(ps, e_w)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Put the weights moved by first_step back (an exact copy, not ``w + e - e``),
        then step the base optimizer with the gradients taken at the perturbed point."""
        if self._perturbed is None:
            raise RuntimeError("second_step() called without first_step(); call first_step() after the "
                               "first backward pass and second_step() after the second")
        if self._perturbed:
            torch._foreach_copy_(self._perturbed, [self.state[p]["old_p"] for p in self._perturbed])
        self._perturbed = None
        self.base_optimizer.step()
        # what LR schedulers' step-order check looks for (they only wrap step())
        self._opt_called = True
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """The full two-pass update. ``closure`` computes the loss at the current weights,
        calls ``backward()`` and returns the loss; it runs twice (at ``w``, then at
        ``w + e_w``). Returns the first pass's loss. Gradients are zeroed between passes."""
        if closure is None:
            raise RuntimeError("SAM.step needs a closure (loss + backward, run twice); without one, "
                               "call first_step() and second_step() around your second backward pass")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    # -- state -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The base optimizer's state dict (tensors and plain values only: loads with
        ``weights_only=True``); the groups carry ``rho`` and ``adaptive``."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the base optimizer (momentum buffers, lr, rho ...). Drops an unfinished
        two-pass step: load between steps, not between first_step and second_step."""
        self.base_optimizer.load_state_dict(state_dict)
        # the base builds new group dicts when loading: share them again
        self.param_groups = self.base_optimizer.param_groups
        for group in self.param_groups:  # a plain base optimizer's state dict has no rho
            group.setdefault("rho", self.defaults["rho"])
            if group.get("adaptive") is None:
                group["adaptive"] = group["rho"] >= 0.5
        self._perturbed = None
