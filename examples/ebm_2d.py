"""A worked example of ebjdat's library parts outside EB-JDAT: a 2-D energy-based model
trained by persistent contrastive divergence with ``ReplayBuffer`` + ``SGLD``, and a
``PGD`` attack on a small classifier of the same points.

The data: 8 Gaussians (std 0.05) on a circle of radius 0.7 in [-1, 1]^2. The energy: an
MLP, E(x) -> (B,), lower is more probable (p(x) ~ exp(-E(x))). Each iteration draws
``batch`` chains from the buffer, runs ``steps`` Langevin steps ``x <- x - h dE/dx +
sqrt(2h) z`` (``SGLD(step_size=h, noise_std=sqrt(2h))``, written back to the buffer), and
lowers E on data while raising it on the samples (plus ``l2`` times the energies' square,
which keeps them bounded). h must be small beside the modes' variance (0.05^2): with
h = 0.01 the chains' noise (0.14 a step) blurs the modes away. Then a classifier learns each point's
mode parity (modes 0, 2, 4, 6 against 1, 3, 5, 7), and PGD (linf, eps 0.15) attacks it.

    python examples/ebm_2d.py --out ebm_2d_out      # CPU, about a minute; --device cuda for a GPU
    python examples/ebm_2d.py --iters 60 --out /tmp/ebm    # a few seconds (CI runs this)

Prints the share of samples within 3 std of a mode, the modes they cover and the
classifier's clean and PGD accuracy; writes ``samples.png`` (data left, samples right)
into ``--out``, a new or empty folder.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import nn

import ebjdat

MODES = 8
RADIUS, STD = 0.7, 0.05


def centres(device) -> torch.Tensor:
    """(8, 2) mode centres on the circle."""
    a = torch.arange(MODES, device=device) * (2 * math.pi / MODES)
    return RADIUS * torch.stack([a.cos(), a.sin()], 1)


def data(n: int, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (n, 2) of the 8 Gaussians and their modes (n,)."""
    k = torch.randint(0, MODES, (n,), generator=g, device=device)
    return centres(device)[k] + STD * torch.randn(n, 2, generator=g, device=device), k


def mlp(out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, out))


def train_ebm(args, g: torch.Generator, device) -> tuple[nn.Module, torch.Tensor]:
    """The energy after args.iters PCD iterations, and the buffer's rows (capacity, 2)."""
    net = mlp(1).to(device)
    energy = lambda x: net(x).squeeze(-1)  # noqa: E731  (B, 2) -> (B,)
    buf = ebjdat.ReplayBuffer(4096, (2,), reinit_freq=0.05, device=device, generator=g)
    sgld = ebjdat.SGLD(energy, n_steps=args.steps, step_size=args.step_size, noise_std=args.noise,
                       clamp=(-1.0, 1.0), buffer=buf,
                       generator=ebjdat.ops.PhiloxGenerator(args.seed, device=device))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    for it in range(args.iters):
        x_data, _ = data(args.batch, g, device)
        x_q = sgld.sample(args.batch)              # continues buffer chains, writes them back
        e_data, e_q = energy(x_data), energy(x_q)
        loss = e_data.mean() - e_q.mean() + args.l2 * (e_data.square().mean() + e_q.square().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (it + 1) % max(1, args.iters // 5) == 0:
            print(f"iteration {it + 1}: E(data) {e_data.mean():.3f}, E(samples) {e_q.mean():.3f}", flush=True)
    return net, buf.data


def coverage(x: torch.Tensor) -> tuple[float, int]:
    """(share of the points within 3 std of their nearest mode, modes with >= 1 % of them)."""
    d = torch.cdist(x, centres(x.device))
    near, mode = d.min(1)
    close = near < 3 * STD
    counts = torch.bincount(mode[close], minlength=MODES)
    return float(close.float().mean()), int((counts >= 0.01 * len(x)).sum())


def attack_classifier(args, g: torch.Generator, device) -> tuple[float, float]:
    """(clean, PGD) accuracy of an MLP that tells even modes from odd ones."""
    clf = mlp(2).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(400):   # the parity of 8 modes on a circle needs about 200 steps to be learnt
        x, k = data(256, g, device)
        loss = nn.functional.cross_entropy(clf(x), k % 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    x, k = data(2000, g, device)
    y = k % 2
    atk = ebjdat.PGD(clf, eps=0.15, alpha=0.03, steps=10, clamp=(-1.0, 1.0),
                     generator=ebjdat.ops.PhiloxGenerator(args.seed + 1, device=device))
    x_adv = atk(x, y)
    with torch.no_grad():
        return float((clf(x).argmax(1) == y).float().mean()), float((clf(x_adv).argmax(1) == y).float().mean())


def picture(path: Path, panels: dict, size: int = 320) -> None:
    """One square panel per entry {title: (N, 2) points in [-1, 1]^2}, side by side."""
    img = Image.new("RGB", (size * len(panels), size + 24), "white")
    draw = ImageDraw.Draw(img)
    for i, (title, pts) in enumerate(panels.items()):
        x0 = i * size
        draw.rectangle([x0 + 4, 24, x0 + size - 4, size + 20], outline=(180, 180, 180))
        draw.text((x0 + 8, 4), title, fill="black")
        for px, py in ((pts.clamp(-1, 1) + 1) / 2 * (size - 12)).tolist():
            cx, cy = x0 + 6 + px, 26 + (size - 12) - py
            draw.ellipse([cx - 1, cy - 1, cx + 1, cy + 1], fill=(31, 119, 180))
    img.save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=2000, help="PCD iterations (default 2000)")
    p.add_argument("--steps", type=int, default=40, help="SGLD steps per iteration (default 40)")
    p.add_argument("--step-size", type=float, default=0.001, help="SGLD step h on -dE/dx (default 0.001)")
    p.add_argument("--noise", type=float, default=None,
                   help="SGLD noise std (default sqrt(2 h): Langevin dynamics at temperature 1)")
    p.add_argument("--l2", type=float, default=0.01, help="weight of the energies' square in the loss (default 0.01)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate for the energy (default 3e-3)")
    p.add_argument("--batch", type=int, default=256, help="data points and chains per iteration (default 256)")
    p.add_argument("--device", default="cpu", help="cpu (default), or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    p.add_argument("--out", default="ebm_2d_out", help="a new or empty folder for samples.png")
    args = p.parse_args(argv)
    if args.noise is None:
        args.noise = math.sqrt(2 * args.step_size)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"ebm_2d: --out {out} exists and is not an empty folder; name a new one", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    g = torch.Generator(device).manual_seed(args.seed)
    net, rows = train_ebm(args, g, device)
    share, modes = coverage(rows)
    print(f"buffer samples: {100 * share:.1f} % within 3 std of a mode, {modes} of {MODES} modes covered")
    clean, robust = attack_classifier(args, g, device)
    print(f"classifier (mode parity): clean accuracy {100 * clean:.1f} %, PGD-10 (eps 0.15) {100 * robust:.1f} %")
    out.mkdir(parents=True, exist_ok=True)
    x_data, _ = data(len(rows), g, device)
    picture(out / "samples.png", {"data (8 Gaussians)": x_data.cpu(),
                                  f"SGLD buffer after {args.iters} iterations": rows.cpu()})
    print(f"wrote {out / 'samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
