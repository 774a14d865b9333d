"""The named network configurations of ``onlinedelay bench``.

To add a configuration, add one line to :data:`_ALL_CONFIGS` (any :class:`NetworkConfig`,
layered ones included): ``--config NAME`` measures it, and so does the default run, which
measures every configuration but ``tiny`` (:data:`DEFAULT_CONFIGS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import NetworkConfig


@dataclass(frozen=True)
class BenchConfig:
    """A named network configuration of the benchmark.

    Attributes
    ----------
    name : str, the name given to ``--config``
    description : str, one line for the table
    network : NetworkConfig, the network measured
    """

    name: str
    description: str
    network: NetworkConfig

    def network_config(self) -> NetworkConfig:
        """The :class:`NetworkConfig` this benchmark configuration runs."""
        return self.network

    @property
    def n_inputs(self) -> int:
        return self.network.n_inputs

    @property
    def n_outputs(self) -> int:
        return self.network.n_outputs

    def to_dict(self) -> dict:
        """Plain data (for the memory child's command line); :func:`from_dict` inverts it."""
        return {"name": self.name, "description": self.description, "network": self.network.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "BenchConfig":
        return cls(data["name"], data["description"], NetworkConfig.from_dict(data["network"]))


def _net(n_inputs: int, delays: str, density: float, n_hidden: int = 256, n_outputs: int = 20,
         max_delay_steps: int = 25) -> NetworkConfig:
    return NetworkConfig(n_inputs=n_inputs, n_hidden=n_hidden, n_outputs=n_outputs, input_delays=delays,
                         max_delay_steps=max_delay_steps, density=density)


_ALL_CONFIGS = (
    BenchConfig("syn140-dense", "140-256-20, synaptic delays, density 1.0", _net(140, "synaptic", 1.0)),
    BenchConfig("syn140-sparse", "140-256-20, synaptic delays, density 0.2", _net(140, "synaptic", 0.2)),
    BenchConfig("axon140-dense", "140-256-20, axonal delays, density 1.0", _net(140, "axonal", 1.0)),
    BenchConfig("axon140-sparse", "140-256-20, axonal delays, density 0.2", _net(140, "axonal", 0.2)),
    BenchConfig("none140-dense", "140-256-20, no delays, density 1.0", _net(140, "none", 1.0)),
    BenchConfig("none140-sparse", "140-256-20, no delays, density 0.2", _net(140, "none", 0.2)),
    BenchConfig("syn700-dense", "700-256-20, synaptic delays, density 1.0", _net(700, "synaptic", 1.0)),
    BenchConfig("none700-dense", "700-256-20, no delays, density 1.0", _net(700, "none", 1.0)),
    BenchConfig("conv2-140", "140-256-256-20, synaptic input delays, conv recurrence (k = 3) with axonal delays, "
                "readout of both layers",
                NetworkConfig(n_inputs=140, n_hidden=256, n_layers=2, input_delays="synaptic", recurrent="conv",
                              recurrent_delays="axonal", readout="all", max_delay_steps=25)),
    BenchConfig("tiny", "20-16-4, synaptic delays (max 5), density 0.5 -- smoke tests",
                _net(20, "synaptic", 0.5, n_hidden=16, n_outputs=4, max_delay_steps=5)),
)
CONFIGS = {c.name: c for c in _ALL_CONFIGS}
DEFAULT_CONFIGS = tuple(c.name for c in _ALL_CONFIGS if c.name != "tiny")
QUICK_CONFIGS = ("syn140-sparse", "none140-sparse")
# (dense, sparse) pairs whose speed ratio the report derives
SPARSE_PAIRS = (("syn140-dense", "syn140-sparse"), ("axon140-dense", "axon140-sparse"),
                ("none140-dense", "none140-sparse"))
