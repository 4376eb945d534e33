"""Calibration of p(y|x): expected calibration error (ECE) and the reliability diagram.

With N test points, confidences ``c_i = max_k softmax(logits(x_i))_k`` and correctness
``a_i = [argmax_k logits(x_i)_k == y_i]``, M equal-width bins ``B_m = {i : (m-1)/M < c_i
<= m/M}`` (m = 1..M; a confidence of exactly 0 goes to the first bin; the convention of
Guo et al. 2017 and of the JEM++ code):

    ECE_M = sum_m (|B_m| / N) * | acc(B_m) - conf(B_m) |,
    acc(B_m) = mean_{i in B_m} a_i,   conf(B_m) = mean_{i in B_m} c_i.

ECE is in [0, 1] (reported as a fraction; 0.05 = 5 %). ``ebjdat eval --calibration``
reports M = 15 (the common choice) and M = 20 (the JEM line's), under the JSON key
``ece`` = {"15": ECE_15, "20": ECE_20}, and draws the 20-bin reliability diagram. The
inputs are the clean test points (the published JEM++ script adds its N(0, 0.03^2)
test-time noise here too; ebjdat's calibration is of the model on the data as it is).
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from ..energy import logits_of
from .robustness import batches
from .wrapper import kept_modes

ECE_BINS = (15, 20)
DIAGRAM_BINS = 20


def _check(conf: Tensor, correct: Tensor, n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if not isinstance(conf, Tensor) or conf.dim() != 1 or not conf.is_floating_point():
        raise ValueError("confidences must be an (N,) float tensor")
    if not isinstance(correct, Tensor) or correct.shape != conf.shape:
        raise ValueError(f"correct must be an (N,) tensor like the confidences, got "
                         f"{tuple(getattr(correct, 'shape', ()))} for {tuple(conf.shape)}")
    if len(conf) == 0:
        raise ValueError("confidences is empty: calibration needs at least one point")
    if not bool(((conf >= 0) & (conf <= 1)).all()):
        raise ValueError("confidences must be probabilities in [0, 1] (NaN is not)")
    return int(n_bins)


def reliability_bins(conf: Tensor, correct: Tensor, n_bins: int) -> list[dict]:
    """[{"lo", "hi", "count", "conf", "acc"}] of the n_bins equal-width bins (lo, hi] of
    [0, 1] (the formula above), compared in float64; conf, correct: (N,). Empty bins have
    count 0 and conf, acc 0."""
    n_bins = _check(conf, correct, n_bins)
    c, a = conf.detach().double().cpu(), correct.detach().double().cpu()
    # edges m / M correctly rounded (linspace can be an ulp off): a confidence equal to
    # the float64 nearest to m / M belongs to the bin that ends there
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    # index of the first upper edge >= c: bin (lo, hi] with c = 0 in the first bin
    idx = torch.searchsorted(edges[1:].contiguous(), c, right=False).clamp_(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.bincount(idx, weights=c, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=a, minlength=n_bins)
    safe = count.clamp_min(1)
    return [{"lo": float(edges[m]), "hi": float(edges[m + 1]), "count": int(count[m]),
             "conf": float(conf_sum[m] / safe[m]), "acc": float(acc_sum[m] / safe[m])} for m in range(n_bins)]


def expected_calibration_error(conf: Tensor, correct: Tensor, n_bins: int = 15) -> float:
    """ECE_M of (N,) confidences and (N,) correctness (bool or 0/1), the formula above."""
    bins = reliability_bins(conf, correct, n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] / n * abs(b["acc"] - b["conf"]) for b in bins))


@torch.no_grad()
def confidences(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """(conf (N,), correct (N,) bool, logits (N, K)) of x (N, C, H, W) in [-1, 1], on the
    CPU in float32; the model's mode is the caller's."""
    parts = [logits_of(model, x[s]).float().cpu() for s in batches(len(x), batch_size)]
    logits = torch.cat(parts)
    p = torch.softmax(logits, dim=1)
    conf, pred = p.max(dim=1)
    return conf, pred == y.cpu(), logits


def evaluate_calibration(model: nn.Module, x: Tensor, y: Tensor, *, bins=ECE_BINS, batch_size: int = 256,
                png=None, title: str = "") -> dict:
    """ECE of the model (eval mode) on x (N, C, H, W) in [-1, 1], y (N,) for each bin
    count in ``bins``, and a 20-bin reliability diagram at ``png`` when given.

    Returns {"ece": {str(M): ECE_M}, "ece_n": N, "reliability": the 20-bin list of
    ``reliability_bins``, "mean_confidence", "accuracy"}."""
    with kept_modes(model):
        model.eval()
        conf, ok, _ = confidences(model, x, y, batch_size=batch_size)
    out = {"ece": {str(m): expected_calibration_error(conf, ok, m) for m in bins}, "ece_n": len(conf),
           "reliability": reliability_bins(conf, ok, DIAGRAM_BINS),
           "mean_confidence": float(conf.double().mean()), "accuracy": float(ok.double().mean())}
    if png is not None:
        e = out["ece"]
        notes = [", ".join(f"ECE ({m} bins) {100 * v:.2f} %" for m, v in e.items()),
                 f"accuracy {100 * out['accuracy']:.2f} %, mean confidence {100 * out['mean_confidence']:.2f} %",
                 "bars below the diagonal: over-confident; above: under-confident"]
        from .. import charts   # matplotlib, imported only where a chart is drawn
        charts.save_reliability(png, out["reliability"], title=title or f"reliability, {len(conf)} test points",
                               notes=notes)
    return out
