"""ebjdat: fast Energy-based Joint Distribution Adversarial Training on NVIDIA GPUs.

``ebjdat.ops``: fused SGLD / PGD update ops; ``ReplayBuffer``, ``SGLD``, ``PYLD``,
``ClassGaussianInit``: samplers; ``PGD``: the attack; ``ebjdat.energy``: energies.
"""
from . import energy, ops
from .attacks import PGD
from .sampling import PYLD, SGLD, ClassGaussianInit, ReplayBuffer

__version__ = "0.1.0"
__all__ = ["ops", "energy", "PGD", "ReplayBuffer", "ClassGaussianInit", "SGLD", "PYLD",
           "__version__"]
