"""Generation quality the published way: the replay buffer after a per-class top-k
confidence filter, scored by torchmetrics' FID when torchmetrics is installed.

The published evaluation (its ``cond_fid``, run with ``--ratio 0.9``) does not draw
fresh samples. It takes the checkpoint's replay buffer as it is, gives every row the
model's predicted class ``c_i = argmax_k logits(x_i)_k`` and confidence ``p_i = max_k
softmax(logits(x_i))_k``, and keeps, per predicted class c with n_c rows, the k_c most
confident ones:

    k_c = floor(ratio * n_c)   for 0 < ratio < 1 (a fraction of each class),
    k_c = min(ratio, n_c)      for a whole number ratio >= 1 (a count per class).

The kept rows are scored with torchmetrics' ``FrechetInceptionDistance(feature=2048)``
against the real test images. ebjdat uses torchmetrics when it is importable (and
reports ``"torchmetrics"`` as the backend), else its own Inception FID (fid.py, the same
network and formula; backend ``"ebjdat"``). On the digits, where no Inception network
applies, the digits FD (generation.py) of the filtered buffer stands in.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from ..energy import logits_of
from .fid import fid_is, uint8_rgb
from .robustness import batches

DEFAULT_RATIO = 0.9   # the published script's --ratio


def check_ratio(ratio) -> float:
    """ratio as a float: a fraction in (0, 1) or a whole count >= 1; ValueError otherwise."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < ratio < float("inf"):
        raise ValueError(f"top-k ratio must be a fraction in (0, 1) or a whole count >= 1, got {ratio!r}")
    if ratio >= 1 and float(ratio) != int(ratio):
        raise ValueError(f"top-k ratio {ratio} >= 1 must be a whole count of rows per class")
    return float(ratio)


def topk_per_class(logits: Tensor, ratio: float = DEFAULT_RATIO) -> Tensor:
    """(K_total,) int64 indices into the rows of ``logits`` (N, K) kept by the per-class
    top-k confidence filter (module docstring): classes in order 0..K-1, within a class
    by decreasing confidence (ties: the lower index first)."""
    ratio = check_ratio(ratio)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError("logits must be an (N, K) float tensor")
    lg = logits.detach().double().cpu()
    conf, pred = torch.softmax(lg, dim=1).max(dim=1)
    keep = []
    for c in range(lg.shape[1]):
        members = torch.nonzero(pred == c).flatten()
        n_c = len(members)
        k = int(ratio * n_c) if ratio < 1 else min(int(ratio), n_c)
        if k == 0:
            continue
        # a stable sort of -conf: equal confidences keep their index order
        order = torch.sort(-conf[members], stable=True).indices[:k]
        keep.append(members[order])
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def filter_buffer(model: nn.Module, buffer: Tensor, *, ratio: float = DEFAULT_RATIO,
                  batch_size: int = 256) -> tuple[Tensor, dict]:
    """(kept rows (K_total, C, H, W) on the buffer's device, {"ratio", "buffer_size",
    "kept", "kept_per_class"}) of a replay buffer (M, C, H, W) in [-1, 1]; the model's
    mode is the caller's (eval)."""
    dev = next(model.parameters()).device
    logits = torch.cat([logits_of(model, buffer[s].to(dev)).float().cpu() for s in batches(len(buffer), batch_size)])
    idx = topk_per_class(logits, ratio)
    pred = logits.argmax(1)[idx]
    per_class = torch.bincount(pred, minlength=logits.shape[1]).tolist()
    return buffer[idx.to(buffer.device)], {"ratio": ratio, "buffer_size": len(buffer), "kept": len(idx),
                                           "kept_per_class": per_class}


def torchmetrics_fid(generated: Tensor, real: Tensor, *, inception_weights=None, device=None,
                     batch_size: int = 64) -> float:
    """torchmetrics' FrechetInceptionDistance(feature=2048) of (N, C, H, W) images in
    [-1, 1] (uint8 RGB, as it expects). ImportError when torchmetrics is missing; its own
    exceptions (e.g. no weights offline) pass through. ``inception_weights``: a local
    weights file, handed to torchmetrics versions that accept one."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    kw = {"feature_extractor_weights_path": str(inception_weights)} if inception_weights else {}
    try:
        metric = FrechetInceptionDistance(feature=2048, **kw)
    except TypeError:   # an older torchmetrics without a weights-path argument
        metric = FrechetInceptionDistance(feature=2048)
    if device is not None:
        metric = metric.to(device)
    for x, is_real in ((real, True), (generated, False)):
        for s in batches(len(x), batch_size):
            u8 = uint8_rgb(x[s])
            metric.update(u8.to(device) if device is not None else u8, real=is_real)
    return float(metric.compute())


def published_fid(generated: Tensor, real: Tensor, *, inception_weights=None, device=None,
                  batch_size: int = 64, extractor=None) -> dict:
    """FID of the filtered buffer ``generated`` against ``real`` (both (N, C, H, W) in
    [-1, 1]) the published way. Returns {"fid_published", "fid_published_backend"
    ("torchmetrics" or "ebjdat"), "fid_published_n"} plus "is_published" /
    "is_published_std" (ebjdat backend), or {"fid_published_note": why not}.
    ``extractor``: a stand-in Inception for fid.fid_is (tests)."""
    notes = []
    try:
        import torchmetrics  # noqa: F401 -- only whether it is there
        have_tm = True
    except ImportError:
        have_tm = False
    if have_tm and extractor is None:
        try:
            v = torchmetrics_fid(generated, real, inception_weights=inception_weights, device=device,
                                 batch_size=batch_size)
            return {"fid_published": v, "fid_published_backend": "torchmetrics",
                    "fid_published_n": len(generated)}
        except Exception as e:  # noqa: BLE001 -- fall back to ebjdat's FID, saying why
            notes.append(f"torchmetrics' FID failed ({type(e).__name__}: {e}); used ebjdat's")
    r = fid_is(generated, real, inception_weights=inception_weights, device=device, batch_size=batch_size,
               extractor=extractor)
    if "fid" not in r:
        return {"fid_published_note": "; ".join(notes + [r["fid_note"]])}
    out = {"fid_published": r["fid"], "is_published": r["is"], "is_published_std": r["is_std"],
           "fid_published_backend": "ebjdat", "fid_published_n": len(generated)}
    if notes or not have_tm:
        out["fid_published_note"] = "; ".join(notes or ["torchmetrics is not installed: ebjdat's Inception FID "
                                                        "(the same network and formula)"])
    return out
