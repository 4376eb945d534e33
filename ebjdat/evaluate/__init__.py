"""Honest evaluation of JEM-style classifiers: ``ebjdat eval``.

``evaluate(model, x, y, AttackSpec(eps=8/255, ...))``: clean, PGD (linf / l2, eps in
[0, 1] pixel units, random start, restarts, a curve over eps) and AutoAttack accuracy,
under the standard protocol and the published one (``protocol="published"`` /
``"both"``), with sanity checks. ``evaluate_checkpoint(path, EvalSpec(n=..., ...))``
adds the energy landscape, SGLD sample grids, FID / IS (fresh and the published filtered
buffer), OOD detection, calibration and a RobustBench-style model card for a training
checkpoint. The settings are checked when the spec is made (spec.py). See
ebjdat/evaluate/core.py for why the protocols differ.
"""
from .autoattack import apgd_correct, autoattack_correct, published_autoattack_correct
from .buffer_fid import filter_buffer, published_fid, topk_per_class
from .calibration import (
    evaluate_calibration,
    expected_calibration_error,
    reliability_bins,
)
from .core import (
    PROTOCOLS,
    PUBLISHED_EVAL,
    evaluate,
    published_noise,
    published_protocol,
)
from .fid import fid_is, fid_is_sets
from .landscape import energy_landscape, generate, marginal_energies, sample_grids
from .ood import auroc, ood_detection, ood_scores, ood_set, to_shape
from .robustbench import entry as robustbench_entry
from .robustness import correct, noise_correct, pgd_correct, topk_correct, zero_gradient
from .sanity import run_checks
from .spec import AttackSpec, EvalSpec
from .trained import evaluate_checkpoint, load_for_eval
from .wrapper import PixelModel, from_pixels, to_pixels

__all__ = [
    "PROTOCOLS", "PUBLISHED_EVAL", "AttackSpec", "EvalSpec", "PixelModel", "apgd_correct", "auroc", "autoattack_correct",
    "correct", "energy_landscape", "evaluate", "evaluate_calibration", "evaluate_checkpoint",
    "expected_calibration_error", "fid_is", "fid_is_sets", "filter_buffer", "from_pixels", "generate",
    "load_for_eval", "marginal_energies", "noise_correct", "ood_detection", "ood_scores", "ood_set", "pgd_correct",
    "published_fid", "published_noise", "published_autoattack_correct", "published_protocol", "reliability_bins",
    "robustbench_entry", "run_checks", "sample_grids", "to_pixels", "to_shape", "topk_correct", "topk_per_class",
    "zero_gradient"
]
