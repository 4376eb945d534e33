"""EB-JDAT training: TrainConfig (presets per variant), Trainer (reference and fast modes)."""
from .config import TrainConfig
from .trainer import Trainer, TrainingDiverged

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged"]
