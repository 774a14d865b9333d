"""numba kernels: plain arrays in, arrays changed in place, nothing allocated, nothing raised.

Array conventions: hidden neurons ``j``, synapses ``s`` stored as CSR rows (``indptr`` of length
n_post + 1, ``pre`` presynaptic index of each synapse), readout units ``k``, and the batch ``b``
always the innermost (contiguous) axis: per-neuron arrays are (n, B), per-synapse traces
(n_syn, B).  Presynaptic histories are offset rings ``hist[slot, i, b]`` with
``slot = t % n_slots`` for the absolute step ``t`` since the last reset; nothing is ever shifted.
Kernels named ``*_parallel`` are the same code built with ``parallel=True`` (rows over threads).
The forward current is pushed event by event into a future-current ring (``events.py``); steps
not pushed are pulled by ``pulled_current`` (tests/pull_kernels.py pulls every synapse: the reference).
"""

import sys
from typing import NamedTuple

from ._jit import build
from .events import forward_step, push_events, take_current
from .lif import lif_step
from .readout import readout_error, readout_step, readout_traces
from .ring import pulled_current, pulled_current_parallel, write_counts
from .surrogate import gaussian_taps, pseudo_derivative, xi_from_taps, xi_from_taps_parallel
from .traces import (delay_traces, delay_traces_parallel, learning_signal, synaptic_delay_traces,
                     synaptic_delay_traces_parallel, weight_traces, weight_traces_parallel)
from .updates import adam_step, round_delays, sgd_step

__all__ = [
    "write_counts", "push_events", "take_current", "forward_step", "lif_step", "readout_step",
    "pseudo_derivative", "readout_error", "learning_signal", "readout_traces",
    "weight_traces", "gaussian_taps", "xi_from_taps", "delay_traces", "synaptic_delay_traces",
    "adam_step", "sgd_step", "round_delays",
    "pulled_current", "pulled_current_parallel",
    "weight_traces_parallel", "xi_from_taps_parallel", "delay_traces_parallel",
    "synaptic_delay_traces_parallel",
]


class SynapseKernels(NamedTuple):
    """The per-synapse kernels in use (serial or parallel builds); the chunk kernels of the soft
    reset are picked by the learner."""

    weight_traces: object
    xi_from_taps: object
    delay_traces: object
    synaptic_delay_traces: object
    pulled_current: object    # the pull of the steps that were not pushed (forward current)


def synapse_kernels(parallel: bool) -> SynapseKernels:
    """The serial or parallel builds of the per-step per-synapse kernels."""
    return SynapseKernels(*(build(sys.modules[__name__], name, parallel) for name in SynapseKernels._fields))
