"""SmallCNN: a three-convolution classifier for the embedded 8x8 digits (any H, W >= 4),
cheap enough that JEM-style training runs in seconds on a CPU."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .wideresnet import norm_layer


class SmallCNN(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> (B, n_classes) logits via ``classify`` / ``forward``.

    conv3x3(C, w) -> norm -> LReLU -> conv3x3(w, 2w, stride 2) -> norm -> LReLU
    -> conv3x3(2w, 2w, stride 2) -> norm -> LReLU -> average pool to 2x2 -> flatten (8w)
    -> Linear(8w, 2w) (the features) -> Linear(2w, K). An 8x8 input becomes 8 -> 4 -> 2
    pixels per side, so the pool passes it unchanged. norm: "batch" (BatchNorm with
    PyTorch momentum 0.9, as the published code's WideResNet) or None; leak: LeakyReLU slope.

    Why 2x2 and not a global average: the energy then sees where in the digit its strokes
    are. Measured on the default digits run (seeds 0 and 1, docs/generation-digits.md): clean
    0.925 / 0.930 -> 0.939 / 0.964, PGD 0.875 / 0.875 -> 0.894 / 0.911, fresh-chain digits
    FD 18.3 / 21.6 -> 15.9 / 18.3, buffer FD 28.9 / 32.3 -> 27.1 / 31.3.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: int = 32,
                 norm: str | None = "batch", leak: float = 0.2):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), norm_layer(w, norm), nn.LeakyReLU(leak),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), norm_layer(2 * w, norm), nn.LeakyReLU(leak),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), norm_layer(2 * w, norm), nn.LeakyReLU(leak),
        )
        self.proj = nn.Linear(2 * w * 4, 2 * w)
        self.head = nn.Linear(2 * w, n_classes)
        self.feature_dim = 2 * w

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, feature_dim) features of the 2x2-pooled map."""
        return self.proj(F.adaptive_avg_pool2d(self.body(x), 2).flatten(1))

    def classify(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(x)
