"""Event-driven (push) delayed current: presynaptic activity is scattered into a future-current ring.

A projection's synapses are also indexed by presynaptic unit (a CSC view of the CSR arrays, built
once because connectivity never changes): ``out_indptr`` (n_pre + 1,).  The push reads copies in
this order of the weights (``weight_csc``) and of the integer delays, folded with the postsynaptic
neuron into one index ``target = delay * n_post + post`` (the synapses of one unit lie side by
side: one cache line for 16 of them instead of two lines per synapse through the CSR index, and
one flat index per synapse); the network refreshes them whenever its parameters change
(``Network.parameters_changed``) and at reset.

``future[slot, j, b]`` (n_slots, n_post, B) holds the current that will reach neuron ``j`` at the
absolute step ``a`` with ``slot = a % n_slots``; activity pushed at step ``t`` through a synapse
of delay ``d`` lands in slot ``(t + d) % n_slots`` (0 <= d < n_slots).  At step ``t`` the network
pushes ``x^t`` (and ``z^(t-1)``), then takes slot ``t % n_slots`` as its current and zeroes it.
A step whose push would cost more than pulling it (dense activity over a large batch) is not
pushed: it is flagged in ``pulled`` and read by ``ring.pulled_current`` instead.  The sums equal
the pull model (every synapse pulled, tests/pull_kernels.py) up to the order of the additions into one
``current[j, b]`` (the same order without delays).

``forward_step`` is one whole network step (counts written, input and recurrent spikes pushed,
current taken, LIF and readout) in a single call, for the steps that need no pull.

Cost model (ns per synapse, float32): pushing one unit's spikes to ``a`` of ``B`` batch elements
one at a time costs ~3a, pushing its whole row ~4 + 0.2 B, pulling a synapse for the whole batch
~5 + 0.12 B; only the ratios matter (the measurements: docs/benchmarks.md, tuning constants).
"""

import numpy as np

from ._jit import jit
from .lif import lif_step
from .readout import readout_step
from .ring import write_counts

SCALAR_COST = 3.0        # per synapse and active batch element, pushed one at a time
ROW_COST = 4.0           # per synapse, whole row: ROW_COST + ROW_COST_PER_LANE * B
ROW_COST_PER_LANE = 0.2
PULL_COST = 5.0          # per synapse, pull: PULL_COST + PULL_COST_PER_LANE * B
PULL_COST_PER_LANE = 0.12


def pull_cost(n_syn: int, n_batch: int) -> float:
    """Estimated cost of pulling ``n_syn`` synapses for ``n_batch`` batch elements (push_events' units)."""
    return n_syn * (PULL_COST + PULL_COST_PER_LANE * n_batch)


@jit
def push_events(hist, slot, out_indptr, target, weight_csc, future, budget, pulled):
    """Scatter the activity in ``hist[slot]`` into the future ring, unless that would cost more than ``budget``.

    future[(slot + d) % n_slots, j, b] += weight_csc[k] * hist[slot, i, b], target[k] = d * n_post + j,
    for every presynaptic unit i with some activity and every k in [out_indptr[i], out_indptr[i + 1]).
    Silent units cost nothing; a unit with few active batch elements pushes only those, one with
    many its whole contiguous row of B values (SIMD).

    Parameters
    ----------
    hist : (n_slots, n_pre, B) float, presynaptic activity ring (counts per step)
    slot : int, ring slot of the pushing step (the same in ``hist``, ``future`` and ``pulled``)
    out_indptr : (n_pre + 1,) int32, CSC pointers: unit i's synapses are k in [out_indptr[i], out_indptr[i + 1])
    target : (n_syn,) int32 or uint16, CSC order, ``delay * n_post + post`` (0 <= delay < n_slots): the
        synapse's row of the flattened ring ``future.reshape(n_slots * n_post, B)`` counted from ``slot``
    weight_csc : (n_syn,) float, CSC order
    future : (n_slots, n_post, B) float, C-contiguous future-current ring, accumulated in place
    budget : float, push only if the estimated cost (module cost model) is at most this; inf: always
        (no estimate is made), negative: never
    pulled : (n_slots,) uint8, set to 0 at ``slot`` when pushed, to 1 when declined (to be pulled)

    Returns
    -------
    1 if the step was pushed, 0 if declined (``future`` untouched).
    """
    # Indices are unsigned: numba then emits no negative-index wrap-around (half the time here).
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
    if n_batch == 1:                                    # streaming: one scalar per unit
        _push_single(hist, now, out_indptr, target, weight_csc, future)
        return 1
    n_rows = np.uint64(future.shape[0] * future.shape[1])
    base = now * np.uint64(future.shape[1])
    rows = future.reshape(future.shape[0] * future.shape[1], n_batch)
    for i in range(n_pre):
        start, stop = np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])
        if start == stop:
            continue
        active = 0
        for b in range(n_batch):
            if hist[now, i, b] != 0:
                active += 1
        if active == 0:
            continue
        if SCALAR_COST * active > row_cost:             # many active: the whole row (SIMD)
            for k in range(start, stop):
                row = base + np.uint64(target[k])
                if row >= n_rows:
                    row -= n_rows
                w = weight_csc[k]
                for b in range(n_batch):
                    rows[row, b] += w * hist[now, i, b]
        else:                                           # few active: only those batch elements
            for b in range(n_batch):
                xv = hist[now, i, b]
                if xv == 0:
                    continue
                for k in range(start, stop):
                    row = base + np.uint64(target[k])
                    if row >= n_rows:
                        row -= n_rows
                    rows[row, b] += weight_csc[k] * xv
    return 1


@jit
def _push_single(hist, now, out_indptr, target, weight_csc, future):
    """push_events at batch 1 (always pushed; ``now`` is the slot as uint64): one flat index per synapse."""
    n_rows = np.uint64(future.shape[0] * future.shape[1])
    base = now * np.uint64(future.shape[1])
    flat = future.reshape(future.size)
    for i in range(np.uint64(out_indptr.size - 1)):
        xv = hist[now, i, 0]
        if xv == 0:
            continue
        for k in range(np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])):
            row = base + np.uint64(target[k])
            if row >= n_rows:
                row -= n_rows
            flat[row] += weight_csc[k] * xv


@jit
def event_targets(delay_steps, out_syn, out_post, n_post, delays_seen, target):
    """If ``delay_steps`` differs from ``delays_seen``: target[k] = delay_steps[out_syn[k]] * n_post + out_post[k]
    and delays_seen = delay_steps.  Returns how many delays changed.

    delay_steps, delays_seen : (n_syn,) int, CSR order (delays_seen in/out); out_syn, out_post : (n_syn,)
    int32, CSC order; target : (n_syn,) uint16 or int32 out (the caller checks the range).
    """
    changed = 0
    for s in range(delay_steps.size):
        changed += delay_steps[s] != delays_seen[s]
    if changed:
        for k in range(out_syn.size):
            target[k] = delay_steps[out_syn[k]] * n_post + out_post[k]
        delays_seen[:] = delay_steps
    return changed


@jit
def take_current(future, slot, current):
    """current[j, b] = future[slot, j, b], then future[slot] = 0 (the slot is reused at slot + n_slots).

    future : (n_slots, n_post, B) float; slot : int; current : (n_post, B) float, overwritten
    """
    n_post, n_batch = current.shape
    if n_batch == 1:                    # one loop (an inner loop of length 1 cost ~4 ns per neuron)
        for j in range(n_post):
            current[j, 0] = future[slot, j, 0]
            future[slot, j, 0] = 0.0
        return
    for j in range(n_post):
        for b in range(n_batch):
            current[j, b] = future[slot, j, b]
            future[slot, j, b] = 0.0


@jit
def forward_step(x, t, pull_until, hist_in, in_indptr, in_target, in_weight, pulled_in,
                 hist_rec, rec_indptr, rec_target, rec_weight, pulled_rec, future, current,
                 decay, gain, threshold, hard_reset, v, z, decay_eff, w_out, b_out, decay_out, gain_out, y):
    """One whole network step whose spikes are all pushed (no pull window open), in one call.

    At the step ``now = t[0]``, ``slot = now % n_slots``: ``write_counts(x, hist_in, slot)``, push
    ``hist_in[slot]`` (``push_events``, budget inf); with recurrence (``hist_rec`` has slots)
    ``hist_rec[slot] = z`` and push it; ``take_current(future, slot, current)``; ``lif_step``;
    ``readout_step``; ``t[0] = now + 1``.  The same kernels in the same order as the step-by-step
    path, so the results are identical.

    Parameters
    ----------
    x : (B, n_in) spike counts (any dtype ``write_counts`` takes); t : (1,) int64, steps since reset
    pull_until : (2,) int64, nothing is done while ``now < pull_until[k]`` (a step that pulls)
    hist_in, in_indptr, in_target, in_weight, pulled_in : the input projection's ring, CSC pointers,
        CSC copies of the targets (delay * n_post + post) and weights, pull flags (as for ``push_events``)
    hist_rec, rec_indptr, rec_target, rec_weight, pulled_rec : the same for the recurrent
        projection (``hist_rec`` with 0 slots: no recurrence)
    future : (n_slots, N, B) future-current ring; current : (N, B) out
    decay, gain, threshold, hard_reset, v, z, decay_eff : as for ``lif_step``
    w_out, b_out, decay_out, gain_out, y : as for ``readout_step``

    Returns
    -------
    0 done; 1 invalid counts (nothing written, ``t`` unchanged); 2 a pull is due at this step
    (nothing done: the caller takes the step-by-step path).
    """
    now = t[0]
    if now < pull_until[0] or now < pull_until[1]:
        return 2
    slot = now % hist_in.shape[0]
    if write_counts(x, hist_in, slot):
        return 1
    push_events(hist_in, slot, in_indptr, in_target, in_weight, future, np.inf, pulled_in)
    if hist_rec.shape[0]:
        n_rec, n_batch = z.shape
        for j in range(n_rec):
            for b in range(n_batch):
                hist_rec[slot, j, b] = z[j, b]
        push_events(hist_rec, slot, rec_indptr, rec_target, rec_weight, future, np.inf, pulled_rec)
    take_current(future, slot, current)
    lif_step(current, decay, gain, threshold, hard_reset, v, z, decay_eff)
    readout_step(z, w_out, b_out, decay_out, gain_out, y)
    t[0] = now + 1
    return 0
