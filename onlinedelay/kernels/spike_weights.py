"""Weight gradients of a one-chunk sample summed per presynaptic spike (no delay learning).

The weight gradient of a projection whose synapses keep their delays for the whole sample, over a
sample summed as one chunk from step 0 (kernels/chunk.py: E = 0 at the start, X = 0 before step 0),
moves the filtering to the postsynaptic side::

    g_ji = sum_u P_j^u X_i^(u - d_ji)  =  sum over spikes (q, b, i) of  c R_j^(q + d_ji)
    R^v  = sum_(v <= u < n) alpha^(u - v) P^u          (backward over the chunk, kernels/sample.backward_filter)

with P the chunk factor of kernels/chunk.py: ``(n, B, N)`` rows of R replace the per-synapse filtered
traces; each spike adds one row of R (a unit whose synapses are neurons 0 .. N-1 in order with one
delay) or gathers along its synapses.  Each synapse sums its spikes in (step, batch) order in both
kernels below, so they give the same floats.

Our choice of two loop orders, by the size of R (``ThreeFactorLearner``, UNIT_ORDER_BYTES):

- :func:`spike_weight_gradient`, by step then unit: while the units are swept, the rows of R of one
  step (B N) stay in cache; a unit's spikes over the batch, side by side in the ring, are added four
  at a time into its gradient row, kept in CSC order (the caller adds it into CSR order).  Best when
  R is far larger than L2 (700 -> 256 at B = 32: 3.3 MB).
- :func:`unit_weight_gradient`, by blocks of units: the spikes of a block's units are listed from
  the ring a step at a time (one cache line per step for a block of 16 units at B = 1, not one per
  unit), every unit's spikes are added eight rows at a time into its gradient row, and the block's
  rows are added into the CSR gradient at once (no CSC copy, no pass over it).  Best when R fits in
  L2 (batch 1: 100 kB; 700 -> 256 at B = 1, alone: 0.33-0.47 ms against 0.74 for the step order
  and its transposing add; in place the cold lines of the gradient it adds into cost ~0.3 ms more).

Arrays: hist (n_slots, n_pre, B) presynaptic ring holding steps 0 .. n - 1 at slots 0 .. n - 1
(n <= n_slots); R (n, B, N); CSC arrays as in projections.EventIndex.
"""

from functools import partial

import numpy as np

from numba import prange

from ._jit import jit, jit_parallel
from .csc import transpose_add


def _spike_weight_gradient(hist, n, out_indptr, out_post, delay_csc, rows, R, picked, grad_csc):
    """grad_csc[k] += sum over the spikes (q, b) of synapse k's unit i of  c R[q + d_k, b, post_k],  q + d_k < n.

    R : (n, B, N) (kernels/sample.backward_filter); picked : (P, >= B) int32 scratch; grad_csc : (n_syn,)
    CSC order (a unit's synapses side by side, so a spike adds one contiguous row), accumulated.
    ``rows`` : (n_pre,) uint8, 1 where unit i's synapses are neurons 0 .. N-1 in order with one delay.
    Per step and unit, its spikes over the batch (contiguous in hist) are added four at a time into
    the unit's gradient row.  P parts of the units run side by side (the parallel build).
    """
    n_slots, n_pre, n_batch = hist.shape
    n_post = R.shape[2]
    n_parts = picked.shape[0]
    flat = R.reshape(-1)
    for part in prange(n_parts):
        batch = picked[part]
        for q in range(n):
            for i in range(part * n_pre // n_parts, (part + 1) * n_pre // n_parts):
                k0, k1 = np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])
                if k1 == k0:
                    continue
                m = 0
                for b in range(n_batch):            # branch-free: the batch entries with a spike
                    batch[m] = b
                    m += hist[q, i, b] != 0.0
                if m == 0:
                    continue
                if rows[i]:
                    u = q + delay_csc[k0]
                    if u < n:
                        _add_batch_rows(flat, (u * n_batch) * n_post, n_post, hist, q, i, batch, m, grad_csc, k0)
                else:
                    for k in range(k0, k1):
                        u = q + delay_csc[k]
                        if u < n:
                            acc = grad_csc[k]
                            for s in range(m):
                                b = batch[s]
                                acc += hist[q, i, b] * flat[np.uint64((u * n_batch + b) * n_post + out_post[k])]
                            grad_csc[k] = acc


@partial(jit, contract=True)
def _add_batch_rows(flat, ubase, n_post, hist, q, i, picked, m, grad_csc, k0):
    """grad_csc[k0 : k0 + N] += hist[q, i, b] R[u, b, :] for b in picked[:m], in that order, four
    rows per pass over the gradient row (``ubase`` = u B N, the offset of R[u] in ``flat``)."""
    width = np.uint64(n_post)
    s = 0
    while s + 4 <= m:
        ba, bb, bc, bd = picked[s], picked[s + 1], picked[s + 2], picked[s + 3]
        ca, cb, cc, cd = hist[q, i, ba], hist[q, i, bb], hist[q, i, bc], hist[q, i, bd]
        ra, rb = np.uint64(ubase + ba * n_post), np.uint64(ubase + bb * n_post)
        rc, rd = np.uint64(ubase + bc * n_post), np.uint64(ubase + bd * n_post)
        for jj in range(width):
            v = grad_csc[k0 + jj] + ca * flat[ra + jj]
            v = v + cb * flat[rb + jj]
            v = v + cc * flat[rc + jj]
            grad_csc[k0 + jj] = v + cd * flat[rd + jj]
        s += 4
    while s < m:
        b = picked[s]
        c, r = hist[q, i, b], np.uint64(ubase + b * n_post)
        for jj in range(width):
            grad_csc[k0 + jj] += c * flat[r + jj]
        s += 1


def _unit_weight_gradient(hist, n, out_indptr, out_syn, out_post, delay_csc, rows, R, blocks, offsets, coefs,
                          cursor, acc, grad, dense):
    """grad[out_syn[k]] += sum over the spikes (q, b) of synapse k's unit of  c R[q + d_k, b, post_k],  q + d_k < n.

    The sums of :func:`spike_weight_gradient` by blocks of units, added straight into ``grad`` (n_syn,),
    CSR order.  blocks : (n_blocks + 1,) int32 unit boundaries (:func:`unit_blocks`); scratch per part
    (P parts of the blocks run side by side in the parallel build): offsets (P, >= U n B) int64 and
    coefs (P, >= U n B) float, a unit's spikes (offset (q B + b) N in R, count) at ``U`` = the most
    units of a block; cursor (P, >= U) int64; acc (P, >= the most synapses of a block) float;
    dense : True when the projection is dense, ``grad`` then (N, n_pre) row-major (CSR order is the
    transpose of CSC order): a block's rows are added by 8 x 8 transposing blocks (alone 0.42 -> 0.35
    ms for 700 -> 256 at batch 1), not through ``out_syn`` one entry at a time.
    """
    n_pre, n_batch = hist.shape[1], hist.shape[2]
    n_post = R.shape[2]
    n_parts = offsets.shape[0]
    n_blocks = blocks.size - 1
    flat = R.reshape(-1)
    cap = n * n_batch                       # the most spikes a unit can have
    step = n_batch * n_post                 # one step of R
    for part in prange(n_parts):
        offs, cnt, pos, row = offsets[part], coefs[part], cursor[part], acc[part]
        for blk in range(part * n_blocks // n_parts, (part + 1) * n_blocks // n_parts):
            i0, i1 = blocks[blk], blocks[blk + 1]
            kb, ke = np.uint64(out_indptr[i0]), np.uint64(out_indptr[i1])
            for ii in range(i1 - i0):
                pos[ii] = ii * cap
            for q in range(n):                # list the block's spikes, a step at a time (branch-free)
                for ii in range(i1 - i0):
                    if n_batch == 1:              # no inner loop of length 1 (~2.4 -> 1.6 ns per entry)
                        e = pos[ii]
                        cnt[e] = hist[q, i0 + ii, 0]
                        offs[e] = q * n_post
                        pos[ii] = e + (cnt[e] != 0.0)
                        continue
                    for b in range(n_batch):
                        e = pos[ii]
                        cnt[e] = hist[q, i0 + ii, b]     # the count in the float type, exactly
                        offs[e] = (q * n_batch + b) * n_post
                        pos[ii] = e + (cnt[e] != 0.0)
            for k in range(ke - kb):
                row[k] = 0.0
            for ii in range(i1 - i0):
                i = i0 + ii
                k0, k1 = np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])
                s0, s1 = ii * cap, pos[ii]
                if k1 == k0 or s1 == s0:
                    continue
                if rows[i]:
                    d = delay_csc[k0]
                    while s1 > s0 and offs[s1 - 1] >= (n - d) * step:   # spikes that arrive after step n - 1
                        s1 -= 1
                    _add_rows(row, k0 - kb, n_post, flat, offs, d * step, cnt, s0, s1)
                    continue
                for k in range(k0, k1):
                    d = delay_csc[k]
                    shift, end = d * step + out_post[k], (n - d) * step
                    a = row[k - kb]
                    for s in range(s0, s1):
                        if offs[s] >= end:
                            break
                        a += cnt[s] * flat[np.uint64(offs[s] + shift)]
                    row[k - kb] = a
            if dense:
                nu = i1 - i0
                transpose_add(row[:nu * n_post].reshape(nu, n_post), grad.reshape(n_post, n_pre)[:, i0:i1])
                continue
            for k in range(kb, ke):
                grad[out_syn[k]] += row[k - kb]


@partial(jit, contract=True)
def _add_rows(out, o0, width, src, offsets, shift, coefs, s0, s1):
    """out[o0 : o0 + width] += coefs[s] src[offsets[s] + shift : ... + width] for s0 <= s < s1, in that
    order, eight (then four, then one) rows per pass over the output row."""
    width, o0 = np.uint64(width), np.uint64(o0)
    s = s0
    while s + 8 <= s1:
        ra, rb = np.uint64(offsets[s] + shift), np.uint64(offsets[s + 1] + shift)
        rc, rd = np.uint64(offsets[s + 2] + shift), np.uint64(offsets[s + 3] + shift)
        re, rf = np.uint64(offsets[s + 4] + shift), np.uint64(offsets[s + 5] + shift)
        rg, rh = np.uint64(offsets[s + 6] + shift), np.uint64(offsets[s + 7] + shift)
        ca, cb, cc, cd = coefs[s], coefs[s + 1], coefs[s + 2], coefs[s + 3]
        ce, cf, cg, ch = coefs[s + 4], coefs[s + 5], coefs[s + 6], coefs[s + 7]
        for jj in range(width):
            v = out[o0 + jj] + ca * src[ra + jj]
            v = v + cb * src[rb + jj]
            v = v + cc * src[rc + jj]
            v = v + cd * src[rd + jj]
            v = v + ce * src[re + jj]
            v = v + cf * src[rf + jj]
            v = v + cg * src[rg + jj]
            out[o0 + jj] = v + ch * src[rh + jj]
        s += 8
    while s + 4 <= s1:
        ra, rb = np.uint64(offsets[s] + shift), np.uint64(offsets[s + 1] + shift)
        rc, rd = np.uint64(offsets[s + 2] + shift), np.uint64(offsets[s + 3] + shift)
        ca, cb, cc, cd = coefs[s], coefs[s + 1], coefs[s + 2], coefs[s + 3]
        for jj in range(width):
            v = out[o0 + jj] + ca * src[ra + jj]
            v = v + cb * src[rb + jj]
            v = v + cc * src[rc + jj]
            out[o0 + jj] = v + cd * src[rd + jj]
        s += 4
    while s < s1:
        ra, ca = np.uint64(offsets[s] + shift), coefs[s]
        for jj in range(width):
            out[o0 + jj] += ca * src[ra + jj]
        s += 1


def unit_blocks(out_indptr: np.ndarray, max_units: int, max_synapses: int) -> np.ndarray:
    """(n_blocks + 1,) int32 boundaries of consecutive units, each block at most ``max_units`` units and
    (unless one unit has more) ``max_synapses`` synapses: a block's gradient rows stay in L1."""
    bounds, n_pre = [0], out_indptr.size - 1
    for i in range(1, n_pre):
        if i - bounds[-1] >= max_units or out_indptr[i + 1] - out_indptr[bounds[-1]] > max_synapses:
            bounds.append(i)
    if n_pre:
        bounds.append(n_pre)
    return np.array(bounds, np.int32)


spike_weight_gradient = jit(_spike_weight_gradient, contract=True)
spike_weight_gradient_parallel = jit_parallel(_spike_weight_gradient, contract=True)
unit_weight_gradient = jit(_unit_weight_gradient, contract=True)
unit_weight_gradient_parallel = jit_parallel(_unit_weight_gradient, contract=True)
