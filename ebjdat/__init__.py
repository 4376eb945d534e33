"""ebjdat: fast Energy-based Joint Distribution Adversarial Training on NVIDIA GPUs."""
from . import ops

__version__ = "0.1.0"
__all__ = ["ops", "__version__"]
