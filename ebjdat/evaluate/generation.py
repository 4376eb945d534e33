"""Generation quality on the digits, on the CPU in seconds: a Fréchet distance in the
feature space of an independent digits network ("digits FD") and that network's accuracy
on samples of a known or intended class.

The network (``FeatureNet``: three convolutions and a 16-d hidden layer, no
normalisation) was trained by ``scripts/train_digits_features.py`` on the embedded
training split only, never on generated images; its weights ship as
``digits_features.pt`` beside this file, with the command, the seed and its test accuracy
in ``digits_features.json``.

* ``gen_fd = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` over the 16-d features
  of the published code set (the test split) and the generated set: 0 for identical
  distributions; small sets bias it upwards, so compare equal set sizes only.
* ``gen_cond_acc``: the fraction of generated images the network assigns to the class
  they are meant to have (the conditioning class of a class-conditional chain, or the
  trained model's own prediction for unconditional samples).
"""
from __future__ import annotations

import functools
import json
from importlib import resources

import torch
from torch import Tensor, nn

from ..validate import nonfinite_rows
from .fid import frechet_distance

SHAPE, N_CLASSES, HIDDEN = (1, 8, 8), 10, 16


class FeatureNet(nn.Module):
    """(B, 1, 8, 8) in [-1, 1] -> (B, 10) logits; ``features``: (B, 16), the last hidden layer.

    conv3x3(1, 32) -> ReLU -> conv3x3(32, 64, stride 2) -> ReLU -> conv3x3(64, 64, stride 2)
    -> ReLU -> flatten (64 x 2 x 2) -> Linear(256, 16) -> ReLU -> Linear(16, 10). Sixteen
    features, not more: the Fréchet distance of two finite sets of one distribution grows
    with the feature count (64 features: 38 between the two halves of the test split, 16:
    16), and the test split has only 359 images."""

    def __init__(self, width: int = 32, hidden: int = HIDDEN):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(2 * w * 4, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, N_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def applies_to(shape: tuple, n_classes: int) -> bool:
    """Whether the digits metrics fit images of this shape and class count."""
    return tuple(shape) == SHAPE and n_classes == N_CLASSES


def record() -> dict:
    """The training record of the shipped weights (command, seed, test accuracy, sha256)."""
    return json.loads(resources.files(__package__).joinpath("digits_features.json").read_text())


@functools.lru_cache(maxsize=1)
def feature_net() -> FeatureNet:
    """The shipped network in eval mode on the CPU, its weights checked against the record."""
    from ..runs.checkpoint import load_checkpoint, state_digest
    with resources.as_file(resources.files(__package__).joinpath("digits_features.pt")) as path:
        state = load_checkpoint(path)
    if state_digest(state) != record()["sha256"]:
        raise ValueError("ebjdat/evaluate/digits_features.pt does not match digits_features.json; "
                         "rerun scripts/train_digits_features.py")
    net = FeatureNet()
    net.load_state_dict(state)
    return net.eval()


@torch.no_grad()
def _apply(x: Tensor) -> tuple[Tensor, Tensor]:
    """(features (N, HIDDEN), predicted classes (N,)) of (N, 1, 8, 8) images, float64 features."""
    net = feature_net()
    f, pred = [], []
    for chunk in torch.split(x.detach().float().cpu().clamp(-1, 1), 1024):
        h = net.features(chunk)
        f.append(h.double())
        pred.append(net.head(h).argmax(1))
    return torch.cat(f), torch.cat(pred)


def digits_fd(x_gen: Tensor, x_ref: Tensor) -> float:
    """The Fréchet distance of two (N, 1, 8, 8) image sets in the network's feature space."""
    if min(len(x_gen), len(x_ref)) < 2:
        raise ValueError("the digits FD needs at least 2 images per set")
    for what, x in (("generated", x_gen), ("reference", x_ref)):
        if (bad := nonfinite_rows(x)):
            raise ValueError(f"the {what} images hold non-finite values: {bad} of {len(x)} images have NaN or "
                             f"inf pixels (a diverged sampler or model); no Fréchet distance of them")
    return frechet_distance(_apply(x_ref)[0], _apply(x_gen)[0])


def class_accuracy(x: Tensor, y: Tensor) -> float:
    """The fraction of (N, 1, 8, 8) images x the network assigns to their class y (N,)."""
    if len(x) == 0:
        raise ValueError("class_accuracy needs at least one image")
    return float((_apply(x)[1] == y.cpu()).double().mean())


def generation_metrics(x_gen: Tensor, x_ref: Tensor, y_gen: Tensor) -> dict:
    """{"gen_fd", "gen_cond_acc", "gen_n"}: digits FD of x_gen against x_ref and the
    network's accuracy on x_gen for the classes y_gen (N,) they are meant to have."""
    return {"gen_fd": digits_fd(x_gen, x_ref), "gen_cond_acc": class_accuracy(x_gen, y_gen), "gen_n": len(x_gen)}


def fd_scale_points(n: int = 500, seed: int = 0) -> dict:
    """The digits FD to the test split of n images from known sets, the scale on which a
    gen_fd of n samples reads: "train" (real training digits), "train + N(0, s^2)" for
    s = 0.1, 0.2, 0.3, 0.5 (clamped to [-1, 1]), "class_gaussian" (the JEM++ / SADA-JEM
    initial distribution fitted to the training split), "uniform" (U(-1, 1) noise); and
    "halfway", between class_gaussian and train: the default run's generation floor."""
    from ..data import load_dataset
    from ..sampling import ClassGaussianInit
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    g = torch.Generator().manual_seed(seed)
    real = train.x[torch.randperm(len(train), generator=g)[:n]]
    points = {"train": digits_fd(real, test.x)}
    for s in (0.1, 0.2, 0.3, 0.5):
        points[f"train + N(0, {s}^2)"] = digits_fd((real + s * torch.randn(real.shape, generator=g)).clamp(-1, 1),
                                                   test.x)
    init = ClassGaussianInit.fit(train.x, train.y, train.n_classes, generator=g)
    points["class_gaussian"] = digits_fd(init(n), test.x)
    points["uniform"] = digits_fd(torch.rand(n, *SHAPE, generator=g) * 2 - 1, test.x)
    points["halfway"] = (points["class_gaussian"] + points["train"]) / 2
    return points



def fresh_starts(init, n: int, shape: tuple, seed: int, device) -> Tensor:
    """n fresh chain starts (n, *shape) on device from a run's initial distribution: a
    ClassGaussianInit (or its state_dict) drawn with a generator of its own, or None for
    U(-1, 1). The run's own generators are not touched."""
    from ..sampling import ClassGaussianInit
    g = torch.Generator().manual_seed(seed)
    if init is None or init == "uniform":
        return (torch.rand((n, *shape), generator=g) * 2 - 1).to(device)
    state = init.state_dict() if isinstance(init, ClassGaussianInit) else init
    own = ClassGaussianInit.from_state_dict({k: v.cpu() for k, v in state.items() if k != "kind"}, generator=g)
    return own(n).to(device)


def labelled_metrics(model, x_gen: Tensor, x_ref: Tensor, *, suffix: str = "", batch_size: int = 256) -> dict:
    """generation_metrics of x_gen with the trained model's own classes as the intended
    ones; keys end in ``suffix`` ("" for buffer samples, "_fresh" for fresh chains)."""
    from ..energy import logits_of
    with torch.no_grad():
        y = torch.cat([logits_of(model, c).argmax(1) for c in x_gen.split(batch_size)])
    return {k + suffix: v for k, v in generation_metrics(x_gen, x_ref, y).items()}


def grid_accuracy(model, x: Tensor, y: Tensor | None, n_classes: int, *, batch_size: int = 256) -> float | None:
    """The digits network's accuracy on a grid's samples x (N, C, H, W) for the classes
    they are meant to have: the conditioning classes y (N,) of class-conditional chains,
    or, with y None, the trained ``model``'s own predictions (taken in eval mode; its mode
    is restored). None where the digits metrics do not apply (another image shape or
    class count), or for an empty x: no judgement, rather than a wrong one. The grid's
    title flags noise by it (``ebjdat.plots.flag_noise``)."""
    if len(x) == 0 or not applies_to(tuple(x.shape[1:]), n_classes):
        return None
    if y is None:
        from ..energy import logits_of
        from .wrapper import kept_modes
        with kept_modes(model), torch.no_grad():
            model.eval()
            y = torch.cat([logits_of(model, c).argmax(1) for c in x.split(batch_size)])
    return class_accuracy(x, y)
