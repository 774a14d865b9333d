"""numba kernels: plain arrays in, arrays changed in place, nothing allocated, nothing raised.

Array conventions: batch first (``b``), hidden neurons ``j``, synapses ``s`` stored as CSR rows
(``indptr`` of length n_post + 1, ``pre`` presynaptic index of each synapse), readout units ``k``.
Presynaptic histories are offset rings ``hist[b, slot, i]`` with ``slot = t % n_slots`` for the
absolute step ``t`` since the last reset; nothing is ever shifted.
"""

from .lif import lif_step
from .readout import readout_error, readout_step, readout_traces
from .ring import delayed_current
from .surrogate import gaussian_taps, gaussian_xi, pseudo_derivative, xi_from_taps
from .traces import delay_traces, learning_signal, weight_traces
from .updates import adam_step, round_delays, sgd_step

__all__ = [
    "delayed_current", "lif_step", "readout_step",
    "pseudo_derivative", "readout_error", "learning_signal", "readout_traces",
    "weight_traces", "gaussian_xi", "gaussian_taps", "xi_from_taps", "delay_traces",
    "adam_step", "sgd_step", "round_delays",
]
