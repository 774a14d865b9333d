"""The plain pull of every synapse: the reference the event-driven forward pass is tested against.

Only the tests use it (the forward pass pushes spikes and pulls the steps it did not push,
``onlinedelay.kernels.ring.pulled_current``), so it lives here, built with the package's decorators.
"""

from numba import prange

from onlinedelay.kernels._jit import jit, jit_parallel
from onlinedelay.kernels.ring import ring_slot


def _delayed_current(hist, t, indptr, pre, delay_steps, weight, current):
    """Add the delayed weighted input of one projection to ``current``.

    current[j, b] += sum_{s in row j} weight[s] * hist[(t - delay_steps[s]) % n_slots, pre[s], b]

    Parameters
    ----------
    hist : (n_slots, n_pre, B) float, presynaptic activity ring (counts per step)
    t : int, absolute step being computed (already written to slot t % n_slots)
    indptr : (n_post + 1,) int32, CSR row pointers; pre : (n_syn,) int32
    delay_steps : (n_syn,) int32, integer delay of each synapse, 0 <= d < n_slots
    weight : (n_syn,) float
    current : (n_post, B) float, accumulated in place
    """
    n_slots, _, n_batch = hist.shape
    n_post = indptr.size - 1
    now = t % n_slots
    for j in prange(n_post):
        for s in range(indptr[j], indptr[j + 1]):
            w = weight[s]
            slot = ring_slot(now, delay_steps[s], n_slots)
            i = pre[s]
            for b in range(n_batch):
                current[j, b] += w * hist[slot, i, b]


delayed_current = jit(_delayed_current)
delayed_current_parallel = jit_parallel(_delayed_current)
