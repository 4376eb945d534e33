"""The closing evaluation of a training run (``ebjdat train`` hands it to the training
loop: ``Trainer.fit(closing=evaluate)``): accuracy, robustness, generation and the energy
landscape of the trained model, with the run's pictures."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .. import plots
from ..energy import logits_of
from . import generation
from .core import evaluate as evaluate_model
from .landscape import energy_landscape, generate
from .spec import AttackSpec


def evaluate(trainer, folder: Path | None, n_gen: int = 2000) -> dict:
    """The closing evaluation of a training run, on a copy of the model with
    generators of its own, so the training state is untouched (the state after ``fit``
    equals that of the same iterations without it): clean and PGD accuracy on the test
    split (linf, eps = cfg.eval_eps in [0, 1] pixels, cfg.eval_pgd_steps steps of eps / 4,
    random start); n_gen generated points (buffer rows continued by the run's sampler for
    its sgld_steps); on the digits their quality (``gen_fd``, ``gen_cond_acc`` against the
    model's own labels: ebjdat.evaluate.generation) and that of n_gen fresh chains from the
    run's initial distribution (``gen_fd_fresh``, ``gen_cond_acc_fresh``); the energy landscape of the test
    points, their adversarial points and the generated ones; and, given the run folder
    ``folder``, samples.png (one labelled row per class; its title flags samples the digits
network classifies near chance as noise) and energy.png in it.

    trainer: a ``ebjdat.train.Trainer`` (read only: cfg, model, test_set, buffer, init,
    device, step)."""
    cfg = trainer.cfg
    model = copy.deepcopy(trainer.model).eval()
    x, y = trainer.test_set.x.to(trainer.device), trainer.test_set.y.to(trainer.device)
    seed = cfg.seed + 7919
    spec = AttackSpec(eps=cfg.eval_eps, steps=cfg.eval_pgd_steps, alpha=cfg.eval_eps / 4, batch_size=500, seed=seed)
    res, x_adv = evaluate_model(model, x, y, spec, return_adv=True)
    rows = trainer.buffer.data
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:n_gen]
    x_gen = generate(model, cfg, rows[pick.to(rows.device)].to(trainer.device), seed=seed)
    with torch.no_grad():
        y_gen = torch.cat([logits_of(model, c).argmax(1) for c in x_gen.split(256)])
    out = {"clean_acc": res["clean_acc"], "pgd_acc": res["pgd_acc"], "noise_acc": res["noise_acc"]}
    ds = trainer.test_set
    if generation.applies_to(tuple(ds.x.shape[1:]), ds.n_classes):
        out.update(generation.generation_metrics(x_gen, ds.x, y_gen))
        starts = generation.fresh_starts(trainer.init, n_gen, tuple(ds.x.shape[1:]), seed, trainer.device)
        out.update(generation.labelled_metrics(model, generate(model, cfg, starts, seed=seed + 1), ds.x,
                                               suffix="_fresh"))
    main_out = Path(folder) if folder is not None else None
    png = main_out / "energy.png" if main_out else None
    title = f"{Path(cfg.out).name if cfg.out else 'run'}: {cfg.variant} ({cfg.objective}), step {trainer.step}"
    landscape = energy_landscape(model, x, x_adv, x_gen, png=png, title=f"E(x) = -logsumexp logits: {title}")
    out.update({k: landscape[k] for k in ("energy_clean_mean", "energy_adv_mean", "energy_gen_mean",
                                          "energy_gap_adv", "energy_gap_gen")})
    if main_out:
        sampler = f"{'PYLD' if cfg.sgld_inner > 1 else 'SGLD'} {cfg.sgld_steps} steps from buffer rows"
        # on the digits, a title that says so when the samples carry no class (gen_cond_acc near chance)
        grid_title = plots.flag_noise(f"{title}; {sampler}; rows: the model's class", out.get("gen_cond_acc"),
                                      ds.n_classes)
        plots.save_class_grid(main_out / "samples.png", x_gen, y_gen, ds.n_classes, title=grid_title)
    out["sanity"] = res["sanity"]
    return out

