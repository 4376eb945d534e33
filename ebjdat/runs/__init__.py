"""What a run leaves on the disk, read and written below both training and evaluation:
its settings (``config``: TrainConfig and its presets), its checkpoints (``checkpoint``:
atomic, checksummed, loaded with weights_only=True) and its folder (``folders``)."""
from .config import TrainConfig

__all__ = ["TrainConfig"]
