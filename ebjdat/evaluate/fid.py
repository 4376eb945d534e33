"""FID and Inception Score of generated samples, when the means are at hand.

Both need the Inception-v3 network of the original TensorFlow implementations, whose
weights are a download (``weights-inception-2015-12-05-6726825d.pth`` from torch-fidelity's
GitHub releases; torchmetrics uses the same file). Offline machines cannot fetch it, so
ebjdat never tries: give the file's path (``--inception-weights``) and install
torch-fidelity (or torchmetrics[image], which brings it). Anything missing gives a
message saying what, never an exception.

With Inception pool features f (N, 2048) and logits l (N, 1008) of real (r) and
generated (g) images:

* ``FID = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` (means, covariances of f);
  ``tr (S_r S_g)^(1/2) = sum_i sqrt(lambda_i)`` over the eigenvalues of the symmetric PSD
  ``S_r^(1/2) S_g S_r^(1/2)`` (same spectrum as S_r S_g), in float64.
* ``IS = exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` equal chunks of the generated
  set, ``p = softmax(l)``; reported as the mean and std over chunks.

Small sets bias FID upwards (the published numbers use 50,000 samples); compare FIDs of
equal set sizes only.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
HOW = (f"download {WEIGHTS_FILE} (torch-fidelity's GitHub releases) on a machine with network and pass "
       "--inception-weights PATH; offline machines cannot download it")


def uint8_rgb(x: Tensor) -> Tensor:
    """(N, C, H, W) in [-1, 1], C = 1 or 3 -> (N, 3, H, W) uint8, as Inception expects."""
    x = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def _sqrtm_psd(a: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(f_real: Tensor, f_gen: Tensor) -> float:
    """FID between two feature sets (N_r, D), (N_g, D), in float64 (formula above)."""
    a, b = f_real.double(), f_gen.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    r = _sqrtm_psd(s_a)
    tr_sqrt = torch.linalg.eigvalsh(r @ s_b @ r).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + s_a.trace() + s_b.trace() - 2 * tr_sqrt)


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of ``exp(E KL(p(y|x) || p(y)))`` over ``splits`` chunks of (N, K) logits."""
    p = torch.softmax(logits.double(), dim=1)
    scores = []
    for chunk in torch.tensor_split(p, min(splits, len(p))):
        py = chunk.mean(0, keepdim=True)
        kl = (chunk * (chunk.clamp_min(1e-30).log() - py.clamp_min(1e-30).log())).sum(1).mean()
        scores.append(float(kl.exp()))
    t = torch.tensor(scores, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if len(t) > 1 else 0.0


def inception_extractor(weights, device):
    """torch-fidelity's Inception-v3 (FID and IS layers) loaded from a local file; returns
    ``f(uint8 (B, 3, H, W)) -> (features (B, 2048), logits (B, 1008))``. ImportError /
    FileNotFoundError say what is missing."""
    path = Path(weights) if weights is not None else None
    problems = []
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import (
            FeatureExtractorInceptionV3,
        )
    except ImportError:
        FeatureExtractorInceptionV3 = None
        problems.append("torch-fidelity is not installed (`pip install torch-fidelity`, or "
                        "`pip install torchmetrics[image]`, which brings it)")
    if path is None:
        problems.append(f"no Inception weights were given ({HOW})")
    elif not path.is_file():
        problems.append(f"the Inception weights file {path} does not exist ({HOW})")
    if problems:
        raise FileNotFoundError("FID/IS not computed: " + "; ".join(problems))
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path)).to(device).eval()

    @torch.no_grad()
    def extract(images: Tensor):
        f, logits = net(images.to(device))
        return f.reshape(len(images), -1).double().cpu(), logits.reshape(len(images), -1).double().cpu()

    return extract


def fid_is(generated: Tensor, real: Tensor, *, inception_weights=None, batch_size: int = 64, device=None,
           extractor=None, splits: int = 10) -> dict:
    """FID (generated vs real) and IS (generated) of (N, C, H, W) images in [-1, 1].

    Returns {"fid", "is", "is_std", "fid_n_generated", "fid_n_real"}, or {"fid_note":
    message} when torch-fidelity or the weights are missing or the computation fails.
    ``extractor`` replaces the Inception network (tests): uint8 images -> (features, logits).
    """
    return fid_is_sets({"": generated}, real, inception_weights=inception_weights, batch_size=batch_size,
                       device=device, extractor=extractor, splits=splits)


def fid_is_sets(sets: dict, real: Tensor, *, inception_weights=None, batch_size: int = 64, device=None,
                extractor=None, splits: int = 10) -> dict:
    """``fid_is`` of several generated sets {suffix: (N_s, C, H, W)} against one real set,
    with one Inception network and one pass over the real images: the keys of set s end
    in its suffix ("fid" + s, "is" + s, ...). One "fid_note" when the network is
    missing; a failing set gets its own "fid_note" + s."""
    try:
        if extractor is None:
            first = next(iter(sets.values()))
            extractor = inception_extractor(inception_weights, device or first.device)
    except FileNotFoundError as e:
        return {"fid_note": str(e)}
    except Exception as e:  # noqa: BLE001 -- an optional metric must never stop an evaluation
        return {"fid_note": f"FID/IS failed: {type(e).__name__}: {e}"}

    def features(x):
        parts = [extractor(uint8_rgb(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return torch.cat([f for f, _ in parts]), torch.cat([lg for _, lg in parts])

    out, real_f = {}, None
    for suffix, generated in sets.items():
        try:
            if min(len(generated), len(real)) < 2:
                raise ValueError("FID needs at least 2 images per set")
            if real_f is None:
                real_f = features(real)[0]
            gen_f, gen_logits = features(generated)
            is_mean, is_std = inception_score(gen_logits, splits)
            out.update({"fid" + suffix: frechet_distance(real_f, gen_f), "is" + suffix: is_mean,
                        "is_std" + suffix: is_std, "fid_n_generated" + suffix: len(generated),
                        "fid_n_real" + suffix: len(real)})
        except Exception as e:  # noqa: BLE001 -- an optional metric must never stop an evaluation
            out["fid_note" + suffix] = f"FID/IS failed: {type(e).__name__}: {e}"
    return out
