"""The energy landscape (EB-JDAT's central analysis) and SGLD sample grids.

Energies are marginal, ``E(x) = -logsumexp_k logits(x)_k``: lower is more probable. The
paper's claim is that EB-JDAT pulls adversarial points' energies towards clean ones,
``energy_gap_adv = mean E(x_adv) - mean E(x)``, while generated samples sit near the
data, ``energy_gap_gen = mean E(x_gen) - mean E(x)``.

Generation reruns the training run's own sampler (SGLD, or PYLD for JEM++) with its
settings (steps, step size, noise, clip, clamp, train/eval mode). Samplers that run in
train mode update BatchNorm statistics, so they run on a copy of the model: evaluation
never changes the model it evaluates.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import build, ops, plots, progress
from ..energy import logits_of, marginal
from . import generation
from .robustness import batches
from .wrapper import autocast_for, kept_modes


@torch.no_grad()
def marginal_energies(model: nn.Module, x: Tensor, *, batch_size: int = 256, precision: str = "fp32") -> Tensor:
    """(N,) float32 CPU energies ``-logsumexp(logits(x))`` of x (N, ...) in [-1, 1]; the
    model's mode is the caller's (evaluation: eval mode)."""
    out = []
    for s in batches(len(x), batch_size):
        with autocast_for(x.device, precision):
            out.append(marginal(logits_of(model, x[s]).float()).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _chains_line(result, args, kwargs) -> str:
    steps = kwargs.get("n_steps")
    steps = "the run's" if steps is None else steps
    return f"SGLD chains: {len(result)} points, {steps} steps"


@progress.reported(_chains_line)
def generate(model: nn.Module, cfg, x_init: Tensor, *, y: Tensor | None = None, n_steps: int | None = None,
             batch_size: int = 256, seed: int = 0) -> Tensor:
    """(N, ...) samples: the run's sampler from x_init (N, ...) in [-1, 1] (x_init is not
    changed), class-conditional ``E(x, y) = -logits[y]`` when y (N,) is given.

    Runs on a deep copy of the model in the run's sampling mode (train mode for JEM++ /
    SADA-JEM, eval for JEM) so that BatchNorm statistics of ``model`` stay as they are.
    """
    twin = copy.deepcopy(model).train(bool(cfg.sampler_train_mode))
    dev = next(twin.parameters()).device
    sampler = build.sampler(cfg, twin, generator=ops.PhiloxGenerator(seed, device=dev), n_steps=n_steps)
    out = []
    for s in batches(len(x_init), batch_size):
        out.append(sampler.sample(x_init=x_init[s], y=None if y is None else y[s]).detach())
    return torch.cat(out)


@progress.reported(lambda r, a, k: "energy landscape")
def energy_landscape(model: nn.Module, x_clean: Tensor, x_adv: Tensor | None, x_gen: Tensor | None, *,
                     batch_size: int = 256, precision: str = "fp32", png=None, title: str = "",
                     notes=None) -> dict:
    """Means of E over clean, adversarial and generated points (each (N_i, ...) in
    [-1, 1], eval mode) and the two gaps; writes a histogram PNG when ``png`` is a path.

    Returns {"energy_clean_mean", "energy_adv_mean", "energy_gen_mean", "energy_gap_adv",
    "energy_gap_gen"} (entries of a missing set are left out). ``notes(result)``: lines
    written under the histogram (default: lower is more probable, and the gaps)."""
    with kept_modes(model):
        model.eval()
        series = {"clean": marginal_energies(model, x_clean, batch_size=batch_size, precision=precision)}
        if x_adv is not None:
            series["adversarial"] = marginal_energies(model, x_adv, batch_size=batch_size, precision=precision)
        if x_gen is not None:
            series["generated"] = marginal_energies(model, x_gen, batch_size=batch_size, precision=precision)
    means = {k: float(v.double().mean()) for k, v in series.items()}
    out = {"energy_clean_mean": means["clean"]}
    if "adversarial" in means:
        out["energy_adv_mean"] = means["adversarial"]
        out["energy_gap_adv"] = means["adversarial"] - means["clean"]
    if "generated" in means:
        out["energy_gen_mean"] = means["generated"]
        out["energy_gap_gen"] = means["generated"] - means["clean"]
    if png is not None:
        lines = (notes or _notes)(out)
        from .. import charts   # matplotlib, imported only where a chart is drawn
        charts.save_histograms(png, series, title=title or "E(x) = -logsumexp logits", notes=lines,
                              bins=min(60, max(15, int(min(len(v) for v in series.values()) ** 0.5 * 2))))
    return out


def _notes(res: dict) -> list[str]:
    gaps = [f"{name} - clean: {res[k]:+.3g}" for name, k in (("adversarial", "energy_gap_adv"),
                                                               ("generated", "energy_gap_gen")) if k in res]
    return ["lower energy = more probable under the model"] + (["gaps: " + ";  ".join(gaps)] if gaps else [])


@progress.reported(lambda r, a, k: f"sample grids ({len(r)} pictures)")
def sample_grids(model: nn.Module, cfg, out_dir, *, n_classes: int, shape: tuple, buffer: Tensor | None = None,
                 n: int = 64, per_class: int = 8, fresh_steps: int = 100, batch_size: int = 256,
                 seed: int = 0) -> list[Path]:
    """SGLD sample grids as PNGs in out_dir; returns their paths.

    samples_fresh.png: n chains from uniform noise U(-1, 1)^shape, ``fresh_steps`` steps.
    samples_fresh_conditional.png: ``per_class`` fresh chains per class of ``E(x, y)``,
    one row per class, labelled with its class. With a ``buffer`` (M, *shape) of the
    run's replay buffer, also samples_buffer.png / samples_buffer_conditional.png: random
    buffer rows, continued for the run's sgld_steps.

    Each grid's title says what it shows; on the digits it ends in a noise flag when the
    digits network's accuracy on the samples (for their conditioning class, or the
    model's own class for unconditional ones: ``generation.grid_accuracy``) is near chance.
    """
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out_dir = Path(out_dir)
    y = torch.arange(n_classes).repeat_interleave(per_class).to(dev)
    starts = {"fresh": lambda m: (torch.rand((m, *shape), generator=g) * 2 - 1).to(dev)}
    if buffer is not None and len(buffer):
        starts["buffer"] = lambda m: buffer[torch.randint(0, len(buffer), (m,), generator=g)].to(dev)
    paths = []
    for name, start in starts.items():
        steps = fresh_steps if name == "fresh" else None
        kw = {"n_steps": steps, "batch_size": batch_size, "seed": seed}
        how = (f"fresh chains from U(-1, 1), {fresh_steps} steps" if name == "fresh"
               else f"buffer rows continued for {cfg.sgld_steps} steps")
        x = generate(model, cfg, start(n), **kw)
        title = grid_title(f"samples_{name}: {len(x)} {how}", model, x, None, n_classes)
        paths.append(plots.save_grid(out_dir / f"samples_{name}.png", x.float().cpu(), title=title))
        xc = generate(model, cfg, start(len(y)), y=y, **kw)
        title = grid_title(f"samples_{name}_conditional: {per_class} per class of E(x, y), {how}", model, xc, y,
                           n_classes)
        paths.append(plots.save_grid(out_dir / f"samples_{name}_conditional.png", xc.float().cpu(), nrow=per_class,
                                     title=title, row_labels=plots.class_row_labels(n_classes)))
    return paths


def grid_title(title: str, model: nn.Module, x: Tensor, y: Tensor | None, n_classes: int) -> str:
    """``title`` with the noise flag of ``plots.flag_noise`` when the digits network finds
    the samples x (N, ...) near chance for their classes y (N,) (None: the model's own
    classes); unchanged where the digits metrics do not apply."""
    return plots.flag_noise(title, generation.grid_accuracy(model, x, y, n_classes), n_classes)
