"""Delayed synaptic current read from a presynaptic history ring (pull model).

A projection keeps ``hist[b, slot, i]``: the activity of presynaptic unit ``i`` at absolute step
``s`` lives in ``slot = s % n_slots``.  A synapse with integer delay ``d`` reads
``hist[b, (t - d) % n_slots, i]`` at step ``t``.  Because the delay is pulled at read time, a
changed delay takes effect at once; spikes already in the ring are re-read with the new delay
(none is lost or duplicated as long as the delay does not change).
"""

from ._jit import jit


@jit
def ring_slot(now, delay, n_slots):
    """Slot of the step ``delay`` steps before the slot ``now`` (0 <= delay < n_slots); no division."""
    slot = now - delay
    return slot + n_slots if slot < 0 else slot


@jit
def delayed_current(hist, t, indptr, pre, delay_steps, weight, current):
    """Add the delayed weighted input of one projection to ``current``.

    current[b, j] += sum_{s in row j} weight[s] * hist[b, (t - delay_steps[s]) % n_slots, pre[s]]

    Parameters
    ----------
    hist : (B, n_slots, n_pre) float, presynaptic activity ring (counts per step)
    t : int, absolute step being computed (already written to slot t % n_slots)
    indptr : (n_post + 1,) int32, CSR row pointers; pre : (n_syn,) int32
    delay_steps : (n_syn,) int32, integer delay of each synapse, 0 <= d < n_slots
    weight : (n_syn,) float
    current : (B, n_post) float, accumulated in place
    """
    n_batch, n_slots, _ = hist.shape
    n_post = indptr.size - 1
    now = t % n_slots
    for b in range(n_batch):
        for j in range(n_post):
            acc = 0.0
            for s in range(indptr[j], indptr[j + 1]):
                acc += weight[s] * hist[b, ring_slot(now, delay_steps[s], n_slots), pre[s]]
            current[b, j] += acc
