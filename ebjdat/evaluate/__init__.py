"""Honest evaluation of JEM-style classifiers: ``ebjdat eval``.

``evaluate(model, x, y, eps=8/255, ...)``: clean, PGD (linf / l2, eps in [0, 1] pixel
units, random start, restarts, a curve over eps) and AutoAttack accuracy, under the
standard protocol and the published one (``protocol="reference"`` / ``"both"``), with
sanity checks. ``evaluate_checkpoint(path, ...)`` adds the energy landscape, SGLD sample
grids and FID / IS for a training checkpoint. See REFERENCE.md for why the protocols differ.
"""
from .autoattack import apgd_correct, autoattack_correct
from .core import PROTOCOLS, REFERENCE, evaluate, reference_protocol
from .fid import fid_is
from .landscape import energy_landscape, generate, marginal_energies, sample_grids
from .robustness import correct, noise_correct, pgd_correct, zero_gradient
from .sanity import run_checks
from .trained import evaluate_checkpoint, load_for_eval
from .wrapper import PixelModel, from_pixels, to_pixels

__all__ = [
    "PROTOCOLS", "REFERENCE", "PixelModel", "apgd_correct", "autoattack_correct", "correct",
    "energy_landscape", "evaluate", "evaluate_checkpoint", "fid_is", "from_pixels", "generate",
    "load_for_eval", "marginal_energies", "noise_correct", "pgd_correct", "reference_protocol",
    "run_checks", "sample_grids", "to_pixels", "zero_gradient"
]
