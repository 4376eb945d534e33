"""A RobustBench-style model card of an evaluation (``ebjdat eval --robustbench-json F``).

RobustBench keeps one JSON file per model (``model_info/<dataset>/<threat model>/<name>.json``)
with, among others: ``name``, ``dataset``, ``eps`` (a string: "8/255", or "0.5" for l2),
``clean_acc`` and ``autoattack_acc`` (percent, as strings with two decimals: "90.39"),
``architecture``, ``number_forward_passes``, ``additional_data`` (bool) and ``footnote``.
The threat model is the folder there; here it is a field, ``threat_model`` ("Linf" or
"L2"), next to ``n_examples`` (test points evaluated; RobustBench's own runs use the
first 10,000, ImageNet 5,000) and ``protocol`` (whose numbers these are).

The numbers come from the standard protocol (eps in [0, 1] pixels, RobustBench's
convention) when it ran, else from the published one. ``autoattack_acc`` is null, with
``autoattack_note`` saying why, when no AutoAttack ran. The footnote flags what
RobustBench's rules exclude or qualify: a reduced AutoAttack budget, the published
protocol's test-time noise (randomness in the forward pass), a model whose forward pass
is random (two forwards of the same inputs differ), and the published protocol's own
attack suite and units.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import progress
from ..energy import logits_of
from .wrapper import kept_modes

THREAT_MODELS = {"linf": "Linf", "l2": "L2"}


def eps_text(e: float) -> str:
    """8/255 -> "8/255" (a whole number of 255ths), 0.5 -> "0.5"."""
    k = e * 255
    if 0 < e and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{e:g}"


def percent(v) -> str | None:
    """0.9039 -> "90.39" (RobustBench's format); None stays None."""
    return None if v is None else f"{100 * v:.2f}"


def architecture(cfg) -> str:
    """The network a TrainConfig builds, in RobustBench's style ("WideResNet-28-10")."""
    kind = cfg.model if cfg.model != "auto" else ("small_cnn" if cfg.dataset == "digits" else "wrn")
    return "SmallCNN" if kind == "small_cnn" else f"WideResNet-{cfg.depth}-{cfg.width}"


@torch.no_grad()
def deterministic_forward(model: nn.Module, x: Tensor, *, n: int = 16) -> bool:
    """Whether two eval-mode forwards of the first n points of x give identical logits
    (False: the model samples inside its forward pass, e.g. dropout kept on)."""
    with kept_modes(model):
        model.eval()
        xb = x[:n]
        return bool(torch.equal(logits_of(model, xb), logits_of(model, xb)))


@progress.reported(lambda r, a, k: "RobustBench card")
def entry(res: dict, *, cfg, deterministic: bool = True, name: str | None = None) -> dict:
    """The model card of an ``evaluate_checkpoint`` result ``res`` (module docstring);
    ``cfg``: the run's TrainConfig; ``deterministic``: ``deterministic_forward``'s verdict."""
    notes = []
    std = res.get("standard_protocol")
    if std is not None:
        protocol, threat, eps = "standard", THREAT_MODELS[std["norm"]], eps_text(std["eps_pixels"])
        clean, aa, info = std["clean_acc"], std.get("autoattack_acc"), res.get("autoattack")
        aa_note = None if aa is not None else "AutoAttack was not run (ebjdat eval --autoattack runs it)"
        if info is not None and (info["steps"] != 100 or info["n_queries"] != 5000):
            notes.append(f"AutoAttack with a reduced budget ({info['steps']} iterations, {info['n_queries']} "
                         f"Square queries; the standard is 100 and 5000)")
        if aa is not None and "apgd-t" not in info.get("attacks", []):
            notes.append("AutoAttack without APGD-T (fewer than 4 classes)")
    else:
        ref = res["published_protocol"]
        protocol, threat, eps = "published", "Linf", eps_text(ref["eps_pixels"])
        clean, aa = ref["clean_acc"], ref.get("autoattack_acc")
        aa_note = None if aa is not None else ref.get("autoattack_note", "the attack suite did not run")
        notes.append(f"The published EB-JDAT protocol, not RobustBench's: eps {eps_text(ref['eps_model_units'])} "
                     f"on the [-1, 1] model input (= {eps} in pixels); its attack suite is APGD-CE, APGD-DLR and "
                     f"FAB-T ({ref['autoattack']['steps'] if aa is not None else 20} iterations) and Square, not "
                     f"AutoAttack standard")
        if ref.get("noise_sigma"):
            notes.append(f"Test-time sampling: the inputs carry Gaussian noise N(0, {ref['noise_sigma']:g}^2) before "
                         f"classification, a randomised forward pass")
    if not deterministic:
        notes.append("The model's forward pass is random: two forwards of the same input differ")
    out = {"name": name or f"ebjdat {cfg.variant} ({cfg.objective} objective), step {res.get('step')}",
           "dataset": cfg.dataset, "threat_model": threat, "eps": eps, "clean_acc": percent(clean),
           "autoattack_acc": percent(aa), "n_examples": int(res["n"]), "architecture": architecture(cfg),
           "number_forward_passes": 1, "additional_data": False, "footnote": ". ".join(notes) + "." if notes else "",
           "protocol": protocol}
    if aa_note is not None:
        out["autoattack_note"] = aa_note
    return out
