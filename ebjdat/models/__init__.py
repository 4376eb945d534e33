"""Models that expose ``classify(x) -> logits``."""
from .wideresnet import WideResNet

__all__ = ["WideResNet"]
