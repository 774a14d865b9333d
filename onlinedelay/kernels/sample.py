"""Segment kernels: the work of a known input sequence done per input spike, not per synapse-step.

When the input of a whole sample is known (``Network.run``, ``ThreeFactorLearner.run_sample``),
the first layer's feedforward current over a segment of steps ``[first, first + n)`` is a sum over
the input spikes: spike ``(q, b, i)`` with count ``c`` adds ``c w_ji`` to ``cur[q + d_ji - first, b, j]``.
The neuron axis is innermost, so a unit whose synapses reach every neuron in order with one delay
(dense rows, no delays or axonal delays) adds one contiguous row; other units scatter.  The
additions into one ``cur[u, b, j]`` come in the push's order (step, then unit), so the sums equal
the push model's (kernels/events.py).  A row's spiking inputs are listed sixteen at a time
(kernels/listing.py).  How it is fast (issue 15; 700 -> 256, B = 32, 7 % input density): when
every unit is a row at one delay, eight spikes' rows are added per pass over an output row (the
same additions in the same order, an eighth of the output's loads and stores); scattered synapses
(synaptic delays) are summed one batch entry at a time into contiguous padded rows at precomputed
``delay * N + post`` offsets (the rows of cur lie B N apart and thrash the cache sets).  Tiling the neuron axis to keep a weight
block in L2 measured slower (each block rescans the inputs); a dense BLAS product ``X W^T``
(float32, one thread) only overtakes the spike sum above ~30 % input density.

The backward filter R of the weight gradients (below) is here too; the per-spike weight
gradients themselves are in kernels/spike_weights.py.

Arrays: x (T, B, n_pre) input counts (any numeric dtype; cast exactly to the float type);
cur (n, B, N); records (n, N, B) as the network's per-step state; R (n, B, N).
"""

from functools import partial

import numpy as np

from numba import prange

from ._jit import jit, jit_parallel
from .csc import TRANSPOSE_BLOCK, transpose_copy
from .lif import lif_columns, lif_neuron
from .listing import spiking_units
from .readout import readout_error_columns, readout_listed
from .surrogate import pseudo_derivative_value


def _spike_current(x, first, n, max_delay, out_indptr, offsets, weight_csc, rows, units, counts, padded, cur):
    """cur[u, b, j] = sum over synapses (i -> j, delay d) of w * x[first + u - d, b, i], for u in [0, n).

    x : (T, B, n_pre) counts; max_delay : int, the largest delay (older steps cannot reach the segment)
    out_indptr : (n_pre + 1,) CSC pointers; offsets : (n_syn,) int32 ``delay * N + post`` of each synapse,
    CSC order (kernels/csc.synapse_offsets); weight_csc : (n_syn,) float, CSC order
    rows : (n_pre,) uint8, 1 where unit i's synapses are neurons 0 .. N-1 in order with one delay
    units : (P, >= n_pre) int32 scratch; counts : (P, >= 8) float scratch;
    padded : (P, >= (n + 2 max_delay) N) float scratch (used unless every unit with synapses is a row);
    cur : (n, B, N) float out (overwritten).  P parts of the batch run side by side (the parallel
    build; splitting the neuron axis instead made each part scan every input: 700 -> 256 at B = 32 on
    2 threads 4.5 against 3.0 ms, serial 5.3).
    """
    n_steps, n_batch, n_pre = x.shape
    n_post = cur.shape[2]
    n_parts = units.shape[0]
    lo = max(0, first - max_delay)
    hi = min(n_steps, first + n)
    delay = _common_row_delay(out_indptr, offsets, rows, n_post)
    if delay == -2:                              # scattered synapses: one batch entry at a time
        for part in prange(n_parts):
            _scatter_current(x, first, n, lo, hi, max_delay, out_indptr, offsets, weight_csc, units[part],
                             counts[part], padded[part], cur, part * n_batch // n_parts,
                             (part + 1) * n_batch // n_parts)
        return
    flat = cur.reshape(-1)
    for part in prange(n_parts):
        b0, b1 = _column_range(part, n_parts, n_batch)
        for u in range(n):
            flat[(u * n_batch + b0) * n_post:(u * n_batch + b1) * n_post] = 0.0
        scan, cnt = units[part], counts[part]
        for q in range(lo, hi):
            for b in range(b0, b1):
                m = spiking_units(x, q, b, scan)
                if delay >= 0:                   # every row at one delay: all of them into one row of cur
                    u = q + delay - first
                    if 0 <= u < n:
                        _add_rows(flat, np.uint64((u * n_batch + b) * n_post), n_post, weight_csc, out_indptr,
                                  scan, m, x, q, b, cnt)
                    continue
                for s in range(m):
                    i = scan[s]
                    k0 = np.uint64(out_indptr[i])
                    u = q + offsets[out_indptr[i]] // n_post - first
                    if 0 <= u < n:
                        cnt[0] = x[q, b, i]              # the count in the float type, exactly
                        c = cnt[0]
                        base = np.uint64((u * n_batch + b) * n_post)
                        for jj in range(np.uint64(n_post)):
                            flat[base + jj] += weight_csc[k0 + jj] * c


spike_current = jit(_spike_current)
spike_current_parallel = jit_parallel(_spike_current)


@jit
def _common_row_delay(out_indptr, offsets, rows, n_post):
    """The delay of every unit when all are rows, -1 if the rows' delays differ, -2 if some unit is
    not a row (scattered synapses, or none)."""
    delay = -3
    for i in range(out_indptr.size - 1):
        if not rows[i]:                           # scattered, or no synapses at all
            return -2
        d = offsets[out_indptr[i]] // n_post
        if delay == -3:
            delay = d
        elif d != delay:
            delay = -1
    return -2 if delay == -3 else delay


@jit
def _add_rows(flat, base, width, weight_csc, out_indptr, units, m, x, q, b, counts):
    """flat[base : base + width] += x[q, b, i] w_i[0 : width] for the units i in units[:m], in that
    order, eight (then four, then one) rows per pass over the output row: the same additions in the
    same order, an eighth of the loads and stores of the output."""
    width = np.uint64(width)
    s = 0
    while s + 8 <= m:
        for r in range(8):
            counts[r] = x[q, b, units[s + r]]     # the counts in the float type, exactly
        ka, kb, kc, kd = (np.uint64(out_indptr[units[s]]), np.uint64(out_indptr[units[s + 1]]),
                          np.uint64(out_indptr[units[s + 2]]), np.uint64(out_indptr[units[s + 3]]))
        ke, kf, kg, kh = (np.uint64(out_indptr[units[s + 4]]), np.uint64(out_indptr[units[s + 5]]),
                          np.uint64(out_indptr[units[s + 6]]), np.uint64(out_indptr[units[s + 7]]))
        ca, cb, cc, cd, ce, cf, cg, ch = (counts[0], counts[1], counts[2], counts[3], counts[4], counts[5],
                                          counts[6], counts[7])
        for jj in range(width):
            v = flat[base + jj] + weight_csc[ka + jj] * ca
            v = v + weight_csc[kb + jj] * cb
            v = v + weight_csc[kc + jj] * cc
            v = v + weight_csc[kd + jj] * cd
            v = v + weight_csc[ke + jj] * ce
            v = v + weight_csc[kf + jj] * cf
            v = v + weight_csc[kg + jj] * cg
            flat[base + jj] = v + weight_csc[kh + jj] * ch
        s += 8
    while s + 4 <= m:
        for r in range(4):
            counts[r] = x[q, b, units[s + r]]
        ka, kb, kc, kd = (np.uint64(out_indptr[units[s]]), np.uint64(out_indptr[units[s + 1]]),
                          np.uint64(out_indptr[units[s + 2]]), np.uint64(out_indptr[units[s + 3]]))
        ca, cb, cc, cd = counts[0], counts[1], counts[2], counts[3]
        for jj in range(width):
            v = flat[base + jj] + weight_csc[ka + jj] * ca
            v = v + weight_csc[kb + jj] * cb
            v = v + weight_csc[kc + jj] * cc
            flat[base + jj] = v + weight_csc[kd + jj] * cd
        s += 4
    while s < m:
        counts[0] = x[q, b, units[s]]
        ka, ca = np.uint64(out_indptr[units[s]]), counts[0]
        for jj in range(width):
            flat[base + jj] += weight_csc[ka + jj] * ca
        s += 1


@jit
def _scatter_current(x, first, n, lo, hi, max_delay, out_indptr, offsets, weight_csc, units, counts, padded, cur,
                     b0, b1):
    """:func:`spike_current` for scattered synapses, batch entries b0 .. b1 - 1 one at a time: its steps are summed
    into ``padded`` (n + 2 max_delay, N) contiguous rows (row ``q + d - first + max_delay``, so no
    bounds test and no cache-set conflicts between the rows of cur, B N apart), then copied into cur."""
    n_post = cur.shape[2]
    n_rows = n + 2 * max_delay
    for b in range(b0, b1):
        padded[:n_rows * n_post] = 0.0
        for q in range(lo, hi):
            m = spiking_units(x, q, b, units)
            rbase = np.uint64((q - first + max_delay) * n_post)
            for s in range(m):
                i = units[s]
                counts[0] = x[q, b, i]              # the count in the float type, exactly
                c = counts[0]
                for k in range(np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])):
                    padded[rbase + np.uint64(offsets[k])] += weight_csc[k] * c
        for u in range(n):
            row = (u + max_delay) * n_post
            for j in range(n_post):
                cur[u, b, j] = padded[row + j]


@jit
def _column_range(part, n_parts, n_batch):
    """The batch columns b0 .. b1 - 1 of part ``part`` of ``n_parts``, as unsigned integers: loops and indices
    that numba knows are not negative need no wraparound test, so the column loops vectorise (measured
    on the forward segment, 700 -> 256, B = 32: 10.2 -> 6.7 ms)."""
    return np.uint64(part * n_batch // n_parts), np.uint64((part + 1) * n_batch // n_parts)


def _forward_segment(x, first, n, ring_first, cur, hist, decay, gain, threshold, hard_reset, current, v, z, decay_eff,
                     gamma, psi_rec, z_rec, zbar, w_out, b_out, decay_out, gain_out, y, y_rec, n_parts):
    """Steps ``first .. first + n - 1`` of a one-layer network without recurrence, current given.

    x : (T, B, n_pre) counts, written into the ring ``hist`` (n_slots, n_pre, B) at slot t % n_slots
    for the steps t >= ring_first (and within the last n_slots of the segment: older would be overwritten);
    cur : (n, B, N) feedforward current of the segment (:func:`spike_current`);
    current, v, z, decay_eff : (N, B) the layer's state (kernels/lif.py).  A learner passes z_rec and
    psi_rec (>= n, N, B), out: z and the pseudo-derivative of v (kernels/surrogate.py, ``gamma``) after
    each step, written in the LIF step's pass, with its readout trace zbar (N, B), in place,
    zbar = decay_out zbar + gain_out z each step (as ``ThreeFactorLearner.step``), and sums the readout
    from z_rec afterwards (kernels/readout.readout_segment); returns the number of spikes.  Inference
    passes (0, N, B) arrays (zbar: any) and gets 0: the readout (w_out, b_out,
    decay_out, gain_out, y: kernels/readout.py) is summed here step by step as stepping sums it
    (readout.readout_listed), into y_rec (>= n, n_out, B) out, y after each step.
    n_parts : parts run side by side (the parallel build): of the batch (its columns are independent), or
    for a learner of the neurons (and of the ring's units; the step is elementwise), whose LIF step then
    runs as one flat loop over each part's (neuron, column) entries, contiguous in the (N, B) state (loops
    of B columns per neuron: 700 -> 256 at B = 32, alone, 3.4 -> 2.7 ms; on 2 threads 3.3 -> 1.6 ms).
    """
    n_slots = hist.shape[0]
    n_batch, n_pre = x.shape[1], x.shape[2]
    n_post = v.shape[0]
    learner = z_rec.shape[0] > 0
    scale = gamma / threshold
    if n_batch == 1:
        return _forward_column(x, first, n, ring_first, cur, hist, decay, gain, threshold, hard_reset, current, v,
                               z, decay_eff, gamma, psi_rec, z_rec, zbar, w_out, b_out, decay_out, gain_out, y, y_rec)
    if learner:      # one flat loop over the (neuron, column) entries of each part: see the docstring
        size = v.size
        state = (current.reshape(1, size), v.reshape(1, size), z.reshape(1, size), decay_eff.reshape(1, size))
        z_flat, psi_flat, zbar_flat = z_rec.reshape(-1), psi_rec.reshape(-1), zbar.reshape(-1)
        counts = np.zeros(n_parts, np.int64)
        for part in prange(n_parts):
            spikes = 0         # z is 0 or 1: the count of spikes is their sum (an integer sum vectorises)
            j0, j1 = _column_range(part, n_parts, n_post)
            i0, i1 = _column_range(part, n_parts, n_pre)
            e0, e1 = j0 * np.uint64(n_batch), j1 * np.uint64(n_batch)
            for u in range(n):
                t = first + u
                if u >= n - n_slots and t >= ring_first:
                    slot = t % n_slots
                    for i in range(i0, i1):
                        for b in range(np.uint64(n_batch)):
                            hist[slot, i, b] = x[t, b, i]
                transpose_copy(cur[u][:, j0:j1], current[j0:j1])     # by shuffles (2.2 -> 2.0 ms alone)
                base = np.uint64(u * size)
                for e in range(e0, e1):
                    lif_neuron(state[0], decay, gain, threshold, hard_reset, state[1], state[2], state[3], 0, e)
                    spike = state[2][0, e]
                    z_flat[base + e] = spike
                    psi_flat[base + e] = pseudo_derivative_value(state[1][0, e], scale, threshold)
                    zbar_flat[e] = decay_out * zbar_flat[e] + gain_out * spike
                    spikes += spike != 0.0
            counts[part] = spikes
        return float(counts.sum())
    w_t, n_out = _transposed(w_out), w_out.shape[0]
    for part in prange(n_parts):
        b0, b1 = _column_range(part, n_parts, n_batch)
        listed, acc = np.empty(n_post, np.int64), np.empty(n_out, y.dtype)
        for u in range(n):
            t = first + u
            if u >= n - n_slots and t >= ring_first:
                slot = t % n_slots
                for i in range(n_pre):              # contiguous stores, loads n_pre apart (faster than b outer)
                    for b in range(b0, b1):
                        hist[slot, i, b] = x[t, b, i]
            for j in range(n_post):
                for b in range(b0, b1):
                    current[j, b] = cur[u, b, j]
            lif_columns(current, decay, gain, threshold, hard_reset, v, z, decay_eff, b0, b1)
            readout_listed(z, w_t, b_out, decay_out, gain_out, y, b0, b1, listed, acc)
            for k in range(n_out):
                for b in range(b0, b1):
                    y_rec[u, k, b] = y[k, b]
    return 0.0


@jit
def _transposed(a):
    """A contiguous copy of the transpose of the 2-D array ``a`` (the readout weights, once per segment)."""
    out = np.empty((a.shape[1], a.shape[0]), a.dtype)
    transpose_copy(a, out)
    return out


@jit
def _forward_column(x, first, n, ring_first, cur, hist, decay, gain, threshold, hard_reset, current, v, z, decay_eff,
                    gamma, psi_rec, z_rec, zbar, w_out, b_out, decay_out, gain_out, y, y_rec):
    """:func:`forward_segment` at batch 1: the same operations, with the (N, 1) state seen as (1, N) rows so
    that the loops over the neurons are contiguous and vectorise (700 -> 256, 100 steps: 0.65 -> ~0.3 ms
    per sample in place; the loops over columns of length 1 took ~25 ns per neuron-step)."""
    n_slots, n_pre = hist.shape[0], x.shape[2]
    n_post = v.shape[0]
    learner = z_rec.shape[0] > 0
    rows = (current.reshape(1, n_post), v.reshape(1, n_post), z.reshape(1, n_post), decay_eff.reshape(1, n_post))
    cur_rows = cur.reshape(n, n_post)
    psi_rows, z_rows = psi_rec.reshape(psi_rec.shape[0], n_post), z_rec.reshape(z_rec.shape[0], n_post)
    ring = hist.reshape(n_slots, n_pre)
    zbar_row = zbar.reshape(-1)
    scale = gamma / threshold
    w_t, listed, acc = _transposed(w_out), np.empty(n_post, np.int64), np.empty(y.shape[0], y.dtype)
    spikes = 0
    for u in range(n):
        t = first + u
        if u >= n - n_slots and t >= ring_first:
            slot = t % n_slots
            for i in range(n_pre):
                ring[slot, i] = x[t, 0, i]
        rows[0][0, :] = cur_rows[u]
        if learner:                             # the LIF step, its records and psi in one pass
            for j in range(np.uint64(n_post)):
                lif_neuron(rows[0], decay, gain, threshold, hard_reset, rows[1], rows[2], rows[3], 0, j)
                spike = rows[2][0, j]
                z_rows[u, j] = spike
                psi_rows[u, j] = pseudo_derivative_value(rows[1][0, j], scale, threshold)
                zbar_row[j] = decay_out * zbar_row[j] + gain_out * spike
                spikes += spike != 0.0
            continue
        lif_columns(rows[0], decay, gain, threshold, hard_reset, rows[1], rows[2], rows[3], 0, n_post)
        readout_listed(z, w_t, b_out, decay_out, gain_out, y, 0, 1, listed, acc)
        y_rec[u, :, 0] = y[:, 0]
    return float(spikes)


forward_segment = jit(_forward_segment)
forward_segment_parallel = jit_parallel(_forward_segment)


def _learn_segment(first, n, y_rec, labels, loss_weights, loss_start, decay_out, probs, delta, bbar, delta_rec,
                   votes, sums):
    """The learner's per-step, per-neuron work over a recorded segment of a one-layer network.

    Per step t = first + u (as ``ThreeFactorLearner.step``): readout error into ``probs``/``delta``
    (kept in ``delta_rec[u]``), votes, and the readout's bias trace ``bbar``, carried to the segment's
    end (the pseudo-derivative and the spikes' trace zbar are advanced by :func:`forward_segment`).  The products over
    the neurons are left to the segment: the learning signal and the readout gradients
    (kernels/readout.readout_gradients) as matrix products.
    y_rec : (>= n, n_out, B) (:func:`forward_segment`);
    labels : (B,) int64; loss_weights : (T,); loss_start : first voting step; votes : (n_out, B)
    float64, softmax summed over the voting steps; delta_rec : (>= n, n_out, B) out;
    sums : (P,) float64 scratch, the loss of each of the P parts of the batch run side by side (the
    parallel build; the batch columns are independent).  Returns the loss.
    """
    n_parts = sums.shape[0]
    n_out, n_batch = probs.shape
    for part in prange(n_parts):
        c0, c1 = _column_range(part, n_parts, n_batch)
        loss = 0.0
        for u in range(n):
            t = first + u
            loss += readout_error_columns(y_rec[u], labels, loss_weights[t], probs, delta, c0, c1)
            for k in range(n_out):
                for b in range(c0, c1):
                    delta_rec[u, k, b] = delta[k, b]
            if t >= loss_start:
                for k in range(n_out):
                    for b in range(c0, c1):
                        votes[k, b] += probs[k, b]
            for b in range(c0, c1):
                bbar[b] = decay_out * bbar[b] + 1.0
        sums[part] = loss
    loss = 0.0
    for part in range(n_parts):
        loss += sums[part]
    return loss


learn_segment = jit(_learn_segment)
learn_segment_parallel = jit_parallel(_learn_segment)


def _backward_filter(psi, signal, lo, n, kappa, scale, alpha, lam, R, n_parts):
    """R[v, b, j] = sum_(v <= u < n) alpha^(u - v) P[u, j, b],  P^u = scale psi^u Lam^u, Lam^u = L^u + kappa Lam^(u+1).

    psi, signal : (n_buf, N, B), steps at rows lo .. lo + n - 1; kappa : readout decay;
    scale : zeta_o zeta; alpha : membrane decay; lam : (N, B) scratch; R : (>= n, B, N) out;
    n_parts : batch parts run side by side (the parallel build).  Per step, P (N, B) is formed in
    float64 (the same products as summing it straight into R), then R's (b, j) rows are written by
    8 x 8 blocks (TRANSPOSE_BLOCK) instead of a strided element of P at a time (700 -> 256, B = 32,
    alone: 1.7 -> 1.2 ms).
    """
    _, n_post, n_batch = psi.shape
    tb = TRANSPOSE_BLOCK
    j_blocks = n_post - n_post % tb
    for part in prange(n_parts):
        b0, b1 = _column_range(part, n_parts, n_batch)
        c0, c1 = part * n_batch // n_parts, (part + 1) * n_batch // n_parts     # signed: block arithmetic
        prod = np.empty((n_post, n_batch))
        for j in range(n_post):
            for b in range(b0, b1):
                lam[j, b] = 0.0
        for u in range(n - 1, -1, -1):
            if b1 - b0 == n_batch:                 # all the columns: one flat loop (contiguous, vectorised)
                ps, sg, lm, pr = psi[lo + u].reshape(-1), signal[lo + u].reshape(-1), lam.reshape(-1), prod.reshape(-1)
                for e in range(np.uint64(n_post * n_batch)):
                    lm[e] = sg[e] + kappa * lm[e]
                    pr[e] = scale * ps[e] * lm[e]
            else:
                for j in range(n_post):
                    for b in range(b0, b1):
                        lam[j, b] = signal[lo + u, j, b] + kappa * lam[j, b]
                        prod[j, b] = scale * psi[lo + u, j, b] * lam[j, b]
            last = u == n - 1                        # R[n] is not part of the sum
            c = c0
            while c + tb <= c1:                     # R's rows are (b, j): the transposing pass, by blocks
                for j0 in range(0, j_blocks, tb):
                    for bi in range(tb):
                        for ji in range(tb):
                            _filter_entry(prod, R, u, c + bi, j0 + ji, last, alpha)
                for bi in range(tb):
                    for j in range(j_blocks, n_post):
                        _filter_entry(prod, R, u, c + bi, j, last, alpha)
                c += tb
            for b in range(c, c1):
                for j in range(n_post):
                    _filter_entry(prod, R, u, b, j, last, alpha)


@partial(jit, inline=True)
def _filter_entry(prod, R, u, b, j, last, alpha):
    """R[u, b, j] = P[j, b] (+ alpha R[u + 1, b, j] unless ``last``): one entry of :func:`backward_filter`."""
    if last:
        R[u, b, j] = prod[j, b]
    else:
        R[u, b, j] = prod[j, b] + alpha * R[u + 1, b, j]


backward_filter = jit(_backward_filter)
backward_filter_parallel = jit_parallel(_backward_filter)
