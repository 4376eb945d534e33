"""The JEM WideResNet: pre-activation wide residual blocks with LeakyReLU(0.2), optional
BatchNorm (momentum 0.9, as the published code), biased 3x3 convolutions, global average pooling
and a linear class head. WRN-28-10 is ``WideResNet(depth=28, width=10)``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def norm_layer(channels: int, norm: str | None) -> nn.Module:
    if norm in (None, "none"):
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels, momentum=0.9)
    raise ValueError(f"norm must be None, 'none' or 'batch', got {norm!r}")


class WideBlock(nn.Module):
    """out = conv2(act(bn2(conv1(act(bn1(x)))))) + shortcut(x); conv2 carries the stride."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str | None, leak: float):
        super().__init__()
        self.bn1, self.bn2 = norm_layer(cin, norm), norm_layer(cout, norm)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1)
        self.act = nn.LeakyReLU(leak)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride)
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.act(self.bn1(x)))
        return self.conv2(self.act(self.bn2(out))) + self.shortcut(x)


class WideResNet(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> (B, n_classes) logits via ``classify`` / ``forward``.

    depth = 6n + 4 (n blocks per stage), stages of 16k, 32k, 64k channels (k = width).
    """

    def __init__(self, depth: int = 28, width: int = 10, n_classes: int = 10,
                 in_channels: int = 3, norm: str | None = None, leak: float = 0.2):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        blocks, cin = [], widths[0]
        for stage, cout in enumerate(widths[1:]):
            for i in range(n):
                blocks.append(WideBlock(cin, cout, 2 if stage and i == 0 else 1, norm, leak))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = norm_layer(cin, norm)
        self.act = nn.LeakyReLU(leak)
        self.head = nn.Linear(cin, n_classes)
        self.feature_dim = cin

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, feature_dim) pooled features."""
        out = self.act(self.bn(self.blocks(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def classify(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(x)
