"""EB-JDAT training: TrainConfig (presets per variant), Trainer (published and fast modes)."""
from ..runs.config import TrainConfig
from .trainer import Trainer, TrainingDiverged

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged"]
