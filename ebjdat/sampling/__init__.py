"""Samplers other EBM projects import: the replay buffer, its initial distributions,
SGLD and JEM++'s PYLD, all on the device and CUDA-graph capturable."""
from .buffer import ReplayBuffer
from .init import ClassGaussianInit
from .pyld import PYLD
from .sgld import SGLD

__all__ = ["ReplayBuffer", "ClassGaussianInit", "SGLD", "PYLD"]
