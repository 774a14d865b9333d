"""Event-driven (push) delayed current: presynaptic activity is scattered into a future-current ring.

A projection's synapses are also indexed by presynaptic unit (a CSC view of the CSR arrays, built
once because connectivity never changes): ``out_indptr`` (n_pre + 1,), ``out_syn`` (n_syn,) the
CSR index of each outgoing synapse, ``out_post`` (n_syn,) its postsynaptic neuron.  Weights and
delays are read live from the CSR arrays through ``out_syn`` when a spike is pushed.

``future[slot, j, b]`` (n_slots, n_post, B) holds the current that will reach neuron ``j`` at the
absolute step ``a`` with ``slot = a % n_slots``; activity pushed at step ``t`` through a synapse
of delay ``d`` lands in slot ``(t + d) % n_slots`` (0 <= d < n_slots).  At step ``t`` the network
pushes ``x^t`` (and ``z^(t-1)``), then takes slot ``t % n_slots`` as its current and zeroes it.
A step whose push would cost more than pulling it (dense activity over a large batch) is not
pushed: it is flagged in ``pulled`` and read by ``ring.pulled_current`` instead.  The sums equal
the pull model (``ring.delayed_current``) up to the order of the additions into one
``current[j, b]`` (the same order without delays).

Cost model (ns per synapse, float32, measured on the 2-core development machine): pushing one
unit's spikes to ``a`` of ``B`` batch elements one at a time costs ~3a, pushing its whole row
~4 + 0.2 B, pulling a synapse for the whole batch ~5 + 0.12 B.  Only ratios matter.
"""

import numpy as np

from ._jit import jit

SCALAR_COST = 3.0        # per synapse and active batch element, pushed one at a time
ROW_COST = 4.0           # per synapse, whole row: ROW_COST + ROW_COST_PER_LANE * B
ROW_COST_PER_LANE = 0.2
PULL_COST = 5.0          # per synapse, pull: PULL_COST + PULL_COST_PER_LANE * B
PULL_COST_PER_LANE = 0.12


def pull_cost(n_syn: int, n_batch: int) -> float:
    """Estimated cost of pulling ``n_syn`` synapses for ``n_batch`` batch elements (push_events' units)."""
    return n_syn * (PULL_COST + PULL_COST_PER_LANE * n_batch)


@jit
def push_events(hist, slot, out_indptr, out_syn, out_post, delay_steps, weight, future, budget, pulled):
    """Scatter the activity in ``hist[slot]`` into the future ring, unless that would cost more than ``budget``.

    future[(slot + d_s) % n_slots, out_post[k], b] += weight[s] * hist[slot, i, b]
    for every presynaptic unit i with some activity, every k in [out_indptr[i], out_indptr[i + 1]),
    s = out_syn[k], d_s = delay_steps[s].  Silent units cost nothing; a unit with few active batch
    elements pushes only those, one with many its whole contiguous row of B values (SIMD).

    Parameters
    ----------
    hist : (n_slots, n_pre, B) float, presynaptic activity ring (counts per step)
    slot : int, ring slot of the pushing step (the same in ``hist``, ``future`` and ``pulled``)
    out_indptr : (n_pre + 1,) int32; out_syn, out_post : (n_syn,) int32, CSC view of the CSR arrays
    delay_steps : (n_syn,) int32, CSR order, 0 <= d < n_slots; weight : (n_syn,) float, CSR order
    future : (n_slots, n_post, B) float, future-current ring, accumulated in place
    budget : float, push only if the estimated cost (module cost model) is at most this; inf: always
        (no estimate is made), negative: never
    pulled : (n_slots,) uint8, set to 0 at ``slot`` when pushed, to 1 when declined (to be pulled)

    Returns
    -------
    1 if the step was pushed, 0 if declined (``future`` untouched).
    """
    # Indices are unsigned: numba then emits no negative-index wrap-around (half the time here).
    n_slots = np.uint64(future.shape[0])
    n_batch = future.shape[2]
    now = np.uint64(slot)
    n_pre = np.uint64(out_indptr.size - 1)
    row_cost = ROW_COST + ROW_COST_PER_LANE * n_batch
    if budget < np.inf:                                 # estimate first: decline before writing anything
        cost = 0.0
        for i in range(n_pre):
            active = 0
            for b in range(n_batch):
                if hist[now, i, b] != 0:
                    active += 1
            if active:
                cost += (out_indptr[i + 1] - out_indptr[i]) * min(SCALAR_COST * active, row_cost)
                if cost > budget:
                    break
        if cost > budget:                               # (a negative budget declines even a silent step)
            pulled[now] = 1
            return 0
    pulled[now] = 0
    for i in range(n_pre):
        start, stop = np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])
        if start == stop:
            continue
        if n_batch == 1:                                # streaming: one scalar per unit
            xv = hist[now, i, 0]
            if xv == 0:
                continue
            for k in range(start, stop):
                s = np.uint64(out_syn[k])
                dst = now + np.uint64(delay_steps[s])
                if dst >= n_slots:
                    dst -= n_slots
                future[dst, np.uint64(out_post[k]), 0] += weight[s] * xv
            continue
        active = 0
        for b in range(n_batch):
            if hist[now, i, b] != 0:
                active += 1
        if active == 0:
            continue
        if SCALAR_COST * active > row_cost:             # many active: the whole row (SIMD)
            for k in range(start, stop):
                s = np.uint64(out_syn[k])
                dst = now + np.uint64(delay_steps[s])
                if dst >= n_slots:
                    dst -= n_slots
                j = np.uint64(out_post[k])
                w = weight[s]
                for b in range(n_batch):
                    future[dst, j, b] += w * hist[now, i, b]
        else:                                           # few active: only those batch elements
            for b in range(n_batch):
                xv = hist[now, i, b]
                if xv == 0:
                    continue
                for k in range(start, stop):
                    s = np.uint64(out_syn[k])
                    dst = now + np.uint64(delay_steps[s])
                    if dst >= n_slots:
                        dst -= n_slots
                    future[dst, np.uint64(out_post[k]), b] += weight[s] * xv
    return 1


@jit
def take_current(future, slot, current):
    """current[j, b] = future[slot, j, b], then future[slot] = 0 (the slot is reused at slot + n_slots).

    future : (n_slots, n_post, B) float; slot : int; current : (n_post, B) float, overwritten
    """
    n_post, n_batch = current.shape
    for j in range(n_post):
        for b in range(n_batch):
            current[j, b] = future[slot, j, b]
            future[slot, j, b] = 0.0
