"""Models that expose ``classify(x) -> logits``."""
from .small_cnn import SmallCNN
from .wideresnet import WideResNet

__all__ = ["SmallCNN", "WideResNet"]
