"""``ebjdat demo``: the fused ops on small problems with known answers: SGLD sampling a
Gaussian energy (its stationary variance is known in closed form) and a PGD attack on a
small classifier."""
from __future__ import annotations

import sys

import torch

from . import ops


def variance_after(steps: int, h: float) -> float:
    """The exact variance of the demo's chains after ``steps`` steps from x = 0: the AR(1)
    process x' = (1 - h) x + sqrt(2h) z has 2h (1 - (1 - h)^(2k)) / (1 - (1 - h)^2) after k
    steps, which tends to the stationary 1 / (1 - h/2)."""
    a = (1 - h) ** 2
    return 2 * h * (1 - a ** steps) / (1 - a)


def _sgld_demo(device: torch.device, steps: int, h: float = 0.1) -> tuple[float, float]:
    """Langevin on E(x) = |x|^2 / 2: x <- x - h x + sqrt(2h) z, from x = 0.

    The chain is the AR(1) process x' = (1 - h) x + sqrt(2h) z, whose stationary variance
    is 2h / (1 - (1 - h)^2) = 1 / (1 - h/2). Returns (measured, exact after ``steps`` steps),
    so that few steps are judged against where the chains are, not where they go.
    """
    gen = ops.PhiloxGenerator(0, device=device)
    x = torch.zeros(4096, 16, device=device)
    for _ in range(steps):
        ops.sgld_step_(x, -x, step_size=h, noise_std=(2 * h) ** 0.5, generator=gen)
    return float(x.var()), variance_after(steps, h)


def _pgd_demo(device: torch.device, steps: int = 10, eps: float = 0.15) -> tuple[float, float]:
    """Linf PGD on a logistic-regression classifier of two Gaussian blobs in [0, 1]^32.

    Returns (clean accuracy, robust accuracy at eps).
    """
    g = torch.Generator().manual_seed(0)
    n, d = 2048, 32
    y = torch.randint(0, 2, (n,), generator=g)
    x = (0.5 + (y[:, None] * 2 - 1) * 0.1 + 0.1 * torch.randn(n, d, generator=g)).clamp(0, 1)
    x, y = x.to(device), y.to(device)
    model = torch.nn.Linear(d, 2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.requires_grad_(False)
    x_adv = torch.empty_like(x)
    ops.pgd_init_(x_adv, x, eps=eps, generator=ops.PhiloxGenerator(1, device=device))
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach()
        ops.pgd_step_(x_adv, grad, x, alpha=eps / 4, eps=eps)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean()
        robust = (model(x_adv).argmax(1) == y).float().mean()
    return float(clean), float(robust)


def _setup(args) -> torch.device:
    """The device the demo runs on, after checking --device, --backend and --steps
    (ValueError naming the flag)."""
    from .validate import resolve_device
    device = resolve_device(args.device or "auto")
    ops.check_backend(args.backend, device)
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: the SGLD demo needs at least 1 step (default 200)")
    return device


def _demo(args) -> int:
    try:
        device = _setup(args)
    except ValueError as e:
        print(f"ebjdat demo: {e}", file=sys.stderr)
        return 2
    print(f"ebjdat demo on {device}, backend {args.backend} (available: {', '.join(ops.available_backends())})")
    with ops.use_backend(args.backend):
        var, exact = _sgld_demo(device, args.steps)
        clean, robust = _pgd_demo(device)
    print(f"SGLD, E(x)=|x|^2/2, h=0.1, {args.steps} steps, 4096x16 chains: "
          f"variance {var:.4f} (exact after {args.steps} steps {exact:.4f}; exact stationary value "
          f"{1 / (1 - 0.1 / 2):.4f})")
    print(f"PGD-10 linf eps=0.15 on a linear classifier: clean accuracy {clean:.3f}, "
          f"robust accuracy {robust:.3f}")
    wrong = _verdict(var, exact, clean, robust)
    print("demo OK" if not wrong else f"demo FAILED: {'; '.join(wrong)}")
    return 0 if not wrong else 1


def _verdict(var: float, exact: float, clean: float, robust: float) -> list[str]:
    """What is off in the demo's numbers (nothing when the ops are right): the SGLD variance
    further than 0.03 from its exact value (the sampling error of 65,536 values is under
    0.01), or an attack that does not lower the accuracy."""
    wrong = []
    if not abs(var - exact) < 0.03:
        wrong.append(f"the SGLD variance {var:.4f} is not within 0.03 of the exact {exact:.4f}")
    if not robust < clean:
        wrong.append(f"PGD did not lower the accuracy ({clean:.3f} clean, {robust:.3f} attacked)")
    return wrong


def add_parser(sub) -> None:
    """Register ``ebjdat demo`` on an argparse subparsers object."""
    p = sub.add_parser("demo", help="run the fused SGLD and PGD ops on small problems with known answers",
                       description="Check the fused ops on this machine in seconds: SGLD on the energy "
                       "|x|^2 / 2, whose variance after k steps is known exactly, and a PGD attack on a small "
                       "linear classifier, which must lower its accuracy. Prints the numbers and 'demo OK', "
                       "or what is off (exit status 1).")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto, the GPU when "
                   "there is one)")
    p.add_argument("--backend", default="auto", choices=ops.backends.NAMES,
                   help="the implementation of the fused ops (default: auto)")
    p.add_argument("--steps", type=int, default=200, help="SGLD steps (default: 200)")
    p.set_defaults(fn=_demo)
