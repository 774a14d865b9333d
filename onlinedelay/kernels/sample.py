"""Segment kernels: the work of a known input sequence done per input spike, not per synapse-step.

When the input of a whole sample is known (``Network.run``, ``ThreeFactorLearner.run_sample``),
the first layer's feedforward current over a segment of steps ``[first, first + n)`` is a sum over
the input spikes: spike ``(q, b, i)`` with count ``c`` adds ``c w_ji`` to ``cur[q + d_ji - first, b, j]``.
The neuron axis is innermost, so a unit whose synapses reach every neuron in order with one delay
(dense rows, no delays or axonal delays) adds one contiguous row; other units scatter.  The
additions into one ``cur[u, b, j]`` come in the push's order (step, then unit), so the sums equal
the push model's (kernels/events.py).  Silent inputs cost one test each.

The weight gradient of a projection whose synapses keep their delays for the whole sample (no
delay learning), over a sample summed as one chunk from step 0 (kernels/chunk.py: E = 0 at the
start, X = 0 before step 0), moves the filtering to the postsynaptic side::

    g_ji = sum_u P_j^u X_i^(u - d_ji)  =  sum over spikes (q, b, i) of  c R_j^(q + d_ji)
    R^v  = sum_(v <= u < n) alpha^(u - v) P^u          (backward over the chunk)

with P the chunk factor of kernels/chunk.py: ``(T, B, N)`` rows of R replace the per-synapse
filtered traces; each spike adds one row of R (dense rows) or gathers along its synapses.

Arrays: x (T, B, n_pre) input counts (any numeric dtype; cast exactly to the float type);
cur (n, B, N); records (n, N, B) as the network's per-step state; R (n, B, N).
"""

import numpy as np

from ._jit import jit
from .lif import lif_step
from .readout import readout_error, readout_step
from .surrogate import pseudo_derivative


@jit
def spike_current(x, first, n, max_delay, out_indptr, out_post, delay_csc, weight_csc, rows, counts, cur):
    """cur[u, b, j] = sum over synapses (i -> j, delay d) of w * x[first + u - d, b, i], for u in [0, n).

    x : (T, B, n_pre) counts; max_delay : int, the largest delay (older steps cannot reach the segment)
    out_indptr : (n_pre + 1,) CSC pointers; out_post, delay_csc : (n_syn,) int32 postsynaptic neuron and
    integer delay of each synapse, CSC order; weight_csc : (n_syn,) float, CSC order
    rows : (n_pre,) uint8, 1 where unit i's synapses are neurons 0 .. N-1 in order with one delay
    counts : (>= 1,) float scratch; cur : (n, B, N) float out (overwritten)
    """
    n_steps, n_batch, n_pre = x.shape
    n_post = cur.shape[2]
    flat = cur.reshape(-1)
    flat[:] = 0.0
    lo = max(0, first - max_delay)
    hi = min(n_steps, first + n)
    for q in range(lo, hi):
        for b in range(n_batch):
            for i in range(n_pre):
                if x[q, b, i] == 0:
                    continue
                counts[0] = x[q, b, i]              # the count in the float type, exactly
                c = counts[0]
                # unsigned indices: no wrap-around test, so LLVM vectorises the row
                k0, k1 = np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])
                if k1 == k0:
                    continue
                if rows[i]:
                    u = q + delay_csc[k0] - first
                    if 0 <= u < n:
                        base = np.uint64((u * n_batch + b) * n_post)
                        for jj in range(k1 - k0):
                            flat[base + jj] += weight_csc[k0 + jj] * c
                else:
                    for k in range(k0, k1):
                        u = q + delay_csc[k] - first
                        if 0 <= u < n:
                            flat[np.uint64((u * n_batch + b) * n_post + out_post[k])] += weight_csc[k] * c


@jit
def forward_segment(x, first, n, cur, hist, decay, gain, threshold, hard_reset, current, v, z, decay_eff,
                    w_out, b_out, decay_out, gain_out, y, y_rec, v_rec, z_rec):
    """Steps ``first .. first + n - 1`` of a one-layer network without recurrence, current given.

    x : (T, B, n_pre) counts, written into the ring ``hist`` (n_slots, n_pre, B) at slot t % n_slots;
    cur : (n, B, N) feedforward current of the segment (:func:`spike_current`);
    current, v, z, decay_eff : (N, B) the layer's state (kernels/lif.py); w_out, b_out, y : readout
    (kernels/readout.py); y_rec : (>= n, n_out, B) out, y after each step; v_rec, z_rec :
    (>= n, N, B) out, v and z after each step (pass (0, N, B) arrays to skip them).
    """
    n_slots = hist.shape[0]
    n_batch, n_pre = x.shape[1], x.shape[2]
    n_post = v.shape[0]
    keep = v_rec.shape[0] > 0
    for u in range(n):
        t = first + u
        if u >= n - n_slots:                    # older steps would be overwritten within the segment
            slot = t % n_slots
            for b in range(n_batch):
                for i in range(n_pre):
                    hist[slot, i, b] = x[t, b, i]
        for j in range(n_post):
            for b in range(n_batch):
                current[j, b] = cur[u, b, j]
        lif_step(current, decay, gain, threshold, hard_reset, v, z, decay_eff)
        readout_step(z, w_out, b_out, decay_out, gain_out, y)
        y_rec[u] = y
        if keep:
            v_rec[u] = v
            z_rec[u] = z


@jit
def learn_segment(first, n, row, y_rec, v_rec, z_rec, labels, loss_weights, loss_start, gamma, threshold,
                  decay_out, gain_out, probs, delta, psi_buf, zbar, bbar, delta_rec, zbar_rec, bbar_rec, votes):
    """The learner's per-step, per-neuron work over a recorded segment of a one-layer network.

    Per step t = first + u (as ``ThreeFactorLearner.step``): readout error into ``probs``/``delta``
    (kept in ``delta_rec[u]``), votes, pseudo-derivative into ``psi_buf[row + u]``, and the readout's
    filtered traces ``zbar``/``bbar`` (kept in ``zbar_rec[u]``/``bbar_rec[u]``).  The products over the
    neurons -- learning signal and readout gradients -- are left to matrix products over the segment.
    y_rec : (>= n, n_out, B); v_rec, z_rec : (>= n, N, B) (:func:`forward_segment`);
    labels : (B,) int64; loss_weights : (T,); loss_start : first voting step; votes : (n_out, B)
    float64, softmax summed over the voting steps; delta_rec : (>= n, n_out, B), zbar_rec :
    (>= n, N, B), bbar_rec : (>= n, B) out.  Returns (loss, spikes).
    """
    loss = 0.0
    spikes = 0.0
    n_out, n_batch = probs.shape
    n_post = zbar.shape[0]
    for u in range(n):
        t = first + u
        loss += readout_error(y_rec[u], labels, loss_weights[t], probs, delta)
        delta_rec[u] = delta
        if t >= loss_start:
            for k in range(n_out):
                for b in range(n_batch):
                    votes[k, b] += probs[k, b]
        pseudo_derivative(v_rec[u], gamma, threshold, psi_buf[row + u])
        z = z_rec[u]
        for b in range(n_batch):
            bbar[b] = decay_out * bbar[b] + 1.0
            bbar_rec[u, b] = bbar[b]
        for j in range(n_post):
            for b in range(n_batch):
                value = decay_out * zbar[j, b] + gain_out * z[j, b]
                zbar[j, b] = value
                zbar_rec[u, j, b] = value
                spikes += z[j, b]
    return loss, spikes


@jit
def backward_filter(psi, signal, lo, n, kappa, scale, alpha, lam, R):
    """R[v, b, j] = sum_(v <= u < n) alpha^(u - v) P[u, j, b],  P^u = scale psi^u Lam^u, Lam^u = L^u + kappa Lam^(u+1).

    psi, signal : (n_buf, N, B), steps at rows lo .. lo + n - 1; kappa : readout decay;
    scale : zeta_o zeta; alpha : membrane decay; lam : (N, B) scratch; R : (>= n, B, N) out.
    """
    _, n_post, n_batch = psi.shape
    lam[...] = 0.0
    for u in range(n - 1, -1, -1):
        for j in range(n_post):
            for b in range(n_batch):
                lam[j, b] = signal[lo + u, j, b] + kappa * lam[j, b]
                p = scale * psi[lo + u, j, b] * lam[j, b]
                R[u, b, j] = p if u == n - 1 else p + alpha * R[u + 1, b, j]


@jit
def spike_weight_gradient(hist, n, out_indptr, out_post, delay_csc, rows, R, grad_csc):
    """grad_csc[k] += sum over the spikes (q, b) of synapse k's unit i of  c R[q + d_k, b, post_k],  q + d_k < n.

    hist : (n_slots, n_pre, B) presynaptic ring, holding steps 0 .. n - 1 (n <= n_slots);
    R : (n, B, N) (:func:`backward_filter`); grad_csc : (n_syn,) CSC order (a unit's synapses side
    by side, so a spike adds one contiguous row), accumulated.  ``rows`` as in :func:`spike_current`.
    """
    n_slots, n_pre, n_batch = hist.shape
    n_post = R.shape[2]
    flat = R.reshape(-1)
    for q in range(n):
        slot = q % n_slots
        for b in range(n_batch):                  # one (step, batch) at a time: its rows of R stay in cache
            for i in range(n_pre):
                c = hist[slot, i, b]
                if c == 0.0:
                    continue
                # unsigned indices: no wrap-around test, so LLVM vectorises the row
                k0, k1 = np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])
                if rows[i]:
                    u = q + delay_csc[k0]
                    if u < n:
                        base = np.uint64((u * n_batch + b) * n_post)
                        for jj in range(k1 - k0):
                            grad_csc[k0 + jj] += c * flat[base + jj]
                else:
                    for k in range(k0, k1):
                        u = q + delay_csc[k]
                        if u < n:
                            grad_csc[k] += c * flat[np.uint64((u * n_batch + b) * n_post + out_post[k])]


def unit_rows(out_indptr, out_post, delay_csc) -> np.ndarray:
    """(n_pre,) uint8: 1 where unit i's synapses are neurons 0 .. N-1 in order with one delay."""
    n_pre = out_indptr.size - 1
    rows = np.zeros(n_pre, np.uint8)
    if out_post.size == 0:
        return rows
    n_post = int(out_post.max()) + 1
    full = np.flatnonzero(np.diff(out_indptr) == n_post)
    if full.size:
        k = out_indptr[full][:, None] + np.arange(n_post)
        same = (out_post[k] == np.arange(n_post)).all(axis=1) & (delay_csc[k] == delay_csc[k[:, :1]]).all(axis=1)
        rows[full[same]] = 1
    return rows
