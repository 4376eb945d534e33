"""Samplers other EBM projects import: the replay buffer, its initial distributions,
SGLD, JEM++'s PYLD and MALA (Metropolis-adjusted Langevin), all on the device; SGLD and
PYLD CUDA-graph capturable."""
from .buffer import ReplayBuffer
from .init import ClassGaussianInit
from .mala import MALA
from .pyld import PYLD
from .sgld import SGLD, Trace

__all__ = ["ReplayBuffer", "ClassGaussianInit", "SGLD", "PYLD", "MALA", "Trace"]
