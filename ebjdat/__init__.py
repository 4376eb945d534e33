"""ebjdat: fast Energy-based Joint Distribution Adversarial Training on NVIDIA GPUs.

``ebjdat.ops``: fused SGLD / MALA / PGD update ops; ``ReplayBuffer``, ``SGLD``, ``PYLD``,
``MALA``, ``ClassGaussianInit``: samplers; ``PGD``: the attack; ``ebjdat.energy``: energies.
"""
from . import energy, ops
from .attacks import PGD
from .sampling import MALA, PYLD, SGLD, ClassGaussianInit, ReplayBuffer

__version__ = "0.1.0"
__all__ = ["ops", "energy", "PGD", "ReplayBuffer", "ClassGaussianInit", "SGLD", "PYLD", "MALA",
           "__version__"]
