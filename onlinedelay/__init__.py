"""onlinedelay: online three-factor learning of weights and delays in spiking networks.

Importing the package compiles nothing; kernels compile on first use (or ``onlinedelay warmup``)
and are cached on disk.
"""

from .config import LearningConfig, NetworkConfig
from .learning import ThreeFactorLearner
from .network import Network
from .projections import dense_mask, dense_weights, synapse_delays
from .state import Gradients

from ._version import __version__

__all__ = ["NetworkConfig", "LearningConfig", "Network", "ThreeFactorLearner", "Gradients",
           "dense_weights", "dense_mask", "synapse_delays", "__version__"]
