"""Delayed synaptic current read from a presynaptic history ring (pull model).

The network pushes spikes event by event (``events.py``); ``pulled_current`` pulls only the
steps it did not push (flagged in ``pulled``); the plain pull of every synapse, the reference the
push is tested against, is ``delayed_current`` in tests/pull_kernels.py.  ``write_counts`` validates one step of input
counts and writes it into a ring.

A projection keeps ``hist[slot, i, b]``: the activity of presynaptic unit ``i`` (batch element
``b``) at absolute step ``s`` lives in ``slot = s % n_slots``.  A synapse with integer delay ``d``
reads slot ``(t - d) % n_slots`` at step ``t``.  Because the delay is pulled at read time, a
changed delay takes effect at once; spikes already in the ring are re-read with the new delay
(none is lost or duplicated as long as the delay does not change).  The batch is the innermost
axis so that one synapse serves the whole batch with contiguous loads.
"""

import numpy as np
from numba import prange

from ._jit import jit, jit_parallel


@jit
def ring_slot(now, delay, n_slots):
    """Slot of the step ``delay`` steps before the slot ``now`` (0 <= delay < n_slots); no division."""
    slot = now - delay
    return slot + n_slots if slot < 0 else slot


def _pulled_current(hist, t, pulled, indptr, pre, delay_steps, weight, current):
    """Add the delayed input of the synapses whose source step was not pushed (flagged in ``pulled``).

    current[j, b] += sum_{s in row j, pulled[slot_s] != 0} weight[s] * hist[slot_s, pre[s], b],
    slot_s = (t - delay_steps[s]) % n_slots.  With every flag set this is the plain pull of every synapse.

    Parameters
    ----------
    hist : (n_slots, n_pre, B) float; t : int, absolute step being computed
    pulled : (n_slots,) uint8, 1 where that slot's step is read by this pull (not in the future ring)
    indptr : (n_post + 1,) int32; pre, delay_steps : (n_syn,) int32; weight : (n_syn,) float
    current : (n_post, B) float, accumulated in place
    """
    n_slots, _, n_batch = hist.shape
    n_post = indptr.size - 1
    now = t % n_slots
    for j in prange(n_post):
        for s in range(indptr[j], indptr[j + 1]):
            slot = ring_slot(now, delay_steps[s], n_slots)
            i = pre[s]
            if n_batch == 1:              # branch-free: the flags of a window are unpredictable
                current[j, 0] += (weight[s] * pulled[slot]) * hist[slot, i, 0]
            elif pulled[slot]:
                w = weight[s]
                for b in range(n_batch):
                    current[j, b] += w * hist[slot, i, b]


pulled_current = jit(_pulled_current)
pulled_current_parallel = jit_parallel(_pulled_current)


@jit
def write_counts(x, hist, slot):
    """Validate one step of spike counts and write it into the ring: hist[slot, i, b] = x[b, i].

    x : (B, n_pre) int, unsigned or float counts; hist : (n_slots, n_pre, B) float; slot : int.
    Returns 0, or 1 (and writes nothing) if an entry is negative, not a whole number or not finite.
    """
    n_batch, n_pre = x.shape
    for b in range(n_batch):
        for i in range(n_pre):
            v = x[b, i]
            if not v >= 0 or v - np.floor(v) != 0:      # NaN fails v >= 0; inf - inf is NaN
                return 1
    if n_batch == 1:                    # one loop (an inner loop of length 1 cost ~4 ns per unit)
        for i in range(n_pre):
            hist[slot, i, 0] = x[0, i]
        return 0
    for i in range(n_pre):
        for b in range(n_batch):
            hist[slot, i, b] = x[b, i]
    return 0
