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

Our choice of two loop orders (``ThreeFactorLearner._spike_weight_gradients``): by blocks of steps for a
dense projection, and for a sparse one whose R exceeds UNIT_ORDER_BYTES; by blocks of units otherwise.

- :func:`spike_weight_gradient`, by blocks of steps: each unit's spikes are listed once, in (step,
  batch) order (:func:`unit_spike_lists`: a bit per (step, batch, unit) from a vectorised compare,
  read back with count-trailing-zeros), then R is taken ``block_steps`` steps at a time (a block of
  ~1 MB stays in L2) and every unit adds the rows of its spikes that land in the block eight at a
  time into its gradient row (kept in L1), in CSC order (the caller adds it into CSR order).  Alone,
  700 -> 256 at B = 32 (R 3.3 MB): 3.4 ms (lists 0.4) against 5.4 for the step-by-step order it
  replaced, whose per-(step, unit) batch lists read the counts across the units' stride and whose
  gradient rows came from L2 for every 1-4 spikes.
- :func:`unit_weight_gradient`, by blocks of units: the spikes of a block's units are listed from
  the ring a step at a time (one cache line per step for a block of 16 units at B = 1, not one per
  unit), every unit's spikes are added eight rows at a time into its gradient row, and the block's
  rows are added into the CSR gradient at once (no CSC copy, no pass over it).  Best for a sparse
  projection whose R fits in L2 (140 -> 256 at density 0.2, B = 1: 0.89 against 1.01-1.07 ms per
  sample); a dense one at B = 1 trains faster by steps (1.18-1.21 against 1.43-1.95 ms, 700 -> 256).

Loops over units index with unsigned integers: with signed ones numba checks for negative indices,
and that alone stopped the compares above from vectorising (0.2 against 1.5 ms for the counts).  The
masks are written out in the kernel: a jitted helper per 64 units, taking the array, counts its
references at every call (two atomic operations) and made them 3x slower.  (The input current lists
its rows' spiking units sixteen at a time instead: kernels/listing.py.)

Arrays: hist (n_slots, n_pre, B) presynaptic ring holding steps 0 .. n - 1 at slots 0 .. n - 1
(n <= n_slots), or its transpose x (n_slots, B, n_pre) (by steps: a sample's counts are contiguous
along the units that way); R (n, B, N); CSC arrays as in projections.EventIndex.
"""

from functools import partial

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ._jit import jit, jit_parallel
from .csc import transpose_add


def _unit_spike_lists(x, n, masks, ptr, n_parts):
    """List the spikes of steps 0 .. n - 1 per unit, first step of 2: their bits and counts.

    x : (>= n, B, n_pre) counts (the ring, or a sample's counts, transposed: contiguous along the
    units, the compares then vectorise); masks : (>= n B, ceil(n_pre / 64)) uint64 out, bit j of
    ``masks[q B + b, c]`` set where x[q, b, 64 c + j] != 0; ptr : (n_pre + 1,) int64 out, unit i's
    spikes will be entries ptr[i] .. ptr[i + 1] - 1 of the lists (:func:`spike_weight_gradient` fills
    them).  P parts of the 64-unit chunks run side by side (the parallel build).  Returns the number
    of spikes.
    """
    _, n_batch, n_pre = x.shape
    n_chunks = (n_pre + 63) // 64
    for part in prange(n_parts):            # unsigned indices: numba's negative-index checks stop vectorising
        c0, c1 = part * n_chunks // n_parts, (part + 1) * n_chunks // n_parts
        i0, i1 = np.uint64(64 * c0), np.uint64(min(n_pre, 64 * c1))
        counts = np.zeros(i1 - i0, np.int32)
        for q in range(n):
            for b in range(n_batch):
                for i in range(i0, i1):                  # branch-free: vectorised
                    counts[i - i0] += x[q, b, i] != 0
        for i in range(i0, i1):
            ptr[i + np.uint64(1)] = counts[i - i0]
        for q in range(n):
            for b in range(n_batch):
                for c in range(c0, c1):                  # written out (a helper taking x: 3x slower)
                    base, width = np.uint64(64 * c), np.uint64(min(64, n_pre - 64 * c))
                    w = np.uint64(0)
                    if width == 64:                      # a constant trip count: vectorised
                        for j in range(np.uint64(64)):
                            w |= np.uint64(x[q, b, base + j] != 0) << j
                    else:
                        for j in range(width):
                            w |= np.uint64(x[q, b, base + j] != 0) << j
                    masks[q * n_batch + b, c] = w
    ptr[0] = 0
    for i in range(n_pre):
        ptr[i + 1] += ptr[i]
    return ptr[n_pre]


def _spike_weight_gradient(x, n, out_indptr, out_post, delay_csc, rows, R, masks, ptr, cursor, offsets, coefs,
                           block_steps, n_parts, grad_csc):
    """grad_csc[k] += sum over the spikes (q, b) of synapse k's unit i of  c R[q + d_k, b, post_k],  q + d_k < n.

    x : (>= n, B, n_pre) counts as in :func:`unit_spike_lists`; R : (n, B, N) (kernels/sample.backward_filter);
    masks, ptr from :func:`unit_spike_lists`; scratch
    cursor (n_pre,) int64, offsets (>= ptr[n_pre],) int32 (a spike's row q B + b of R: n B < 2^31) and
    coefs (same) float; grad_csc : (n_syn,) CSC order (a unit's synapses side by side), accumulated.
    ``rows`` : (n_pre,) uint8, 1 where unit i's synapses are neurons 0 .. N-1 in order with one delay.
    Each part (P parts of the 64-unit chunks, side by side in the parallel build) lists its units'
    spikes in (step, batch) order from the bits, then takes R in blocks of ``block_steps`` steps
    (kept in L2): every unit adds the rows of its spikes that land in the block eight at a time into
    its gradient row (kept in L1).  Units that are not rows gather along their synapses.
    """
    _, n_batch, n_pre = x.shape
    n_post = R.shape[2]
    n_chunks = (n_pre + 63) // 64
    flat = R.reshape(-1)
    for part in prange(n_parts):
        c0, c1 = part * n_chunks // n_parts, (part + 1) * n_chunks // n_parts
        i0, i1 = 64 * c0, min(n_pre, 64 * c1)
        for i in range(i0, i1):
            cursor[i] = ptr[i]
        for r in range(n * n_batch):                     # the lists, in (step, batch) order
            q, b = r // n_batch, r % n_batch
            for c in range(c0, c1):
                w = masks[r, c]
                while w != 0:
                    i = np.uint64(64 * c) + count_trailing_zeros(w)
                    e = np.uint64(cursor[i])
                    offsets[e] = r
                    coefs[e] = x[q, b, i]                # the count in the float type, exactly
                    cursor[i] = e + 1
                    w &= w - np.uint64(1)
        for i in range(i0, i1):
            cursor[i] = ptr[i]
        for u0 in range(0, n, block_steps):
            u1 = min(n, u0 + block_steps)
            for i in range(i0, i1):
                k0, k1 = np.uint64(out_indptr[i]), np.uint64(out_indptr[i + 1])
                if k1 == k0:
                    continue
                if rows[i]:                               # the spikes that land in steps u0 .. u1 - 1
                    d = delay_csc[k0]
                    s0 = s1 = cursor[i]
                    while s1 < ptr[i + 1] and offsets[s1] < (u1 - d) * n_batch:
                        s1 += 1
                    cursor[i] = s1
                    _add_rows(grad_csc, k0, n_post, flat, offsets, d * n_batch, n_post, coefs, s0, s1)
                elif u0 == 0:                             # scattered synapses: all steps at once
                    for k in range(k0, k1):
                        d = delay_csc[k]
                        a = grad_csc[k]
                        for s in range(ptr[i], ptr[i + 1]):
                            if offsets[s] >= (n - d) * n_batch:
                                break
                            a += coefs[s] * flat[np.uint64((offsets[s] + d * n_batch) * n_post + out_post[k])]
                        grad_csc[k] = a


@intrinsic
def count_trailing_zeros(typingctx, x):
    """The number of trailing zero bits of an unsigned integer x != 0 (LLVM's cttz)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return x(x), codegen


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
                    _add_rows(row, k0 - kb, n_post, flat, offs, d * step, 1, cnt, s0, s1)
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
def _add_rows(out, o0, width, src, offsets, shift, stride, coefs, s0, s1):
    """out[o0 : o0 + width] += coefs[s] src[(offsets[s] + shift) stride : ... + width] for s0 <= s < s1, in
    that order, eight (then four, then one) rows per pass over the output row."""
    width, o0 = np.uint64(width), np.uint64(o0)
    s = s0
    while s + 8 <= s1:
        ra, rb = np.uint64((offsets[s] + shift) * stride), np.uint64((offsets[s + 1] + shift) * stride)
        rc, rd = np.uint64((offsets[s + 2] + shift) * stride), np.uint64((offsets[s + 3] + shift) * stride)
        re, rf = np.uint64((offsets[s + 4] + shift) * stride), np.uint64((offsets[s + 5] + shift) * stride)
        rg, rh = np.uint64((offsets[s + 6] + shift) * stride), np.uint64((offsets[s + 7] + shift) * stride)
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
        ra, rb = np.uint64((offsets[s] + shift) * stride), np.uint64((offsets[s + 1] + shift) * stride)
        rc, rd = np.uint64((offsets[s + 2] + shift) * stride), np.uint64((offsets[s + 3] + shift) * stride)
        ca, cb, cc, cd = coefs[s], coefs[s + 1], coefs[s + 2], coefs[s + 3]
        for jj in range(width):
            v = out[o0 + jj] + ca * src[ra + jj]
            v = v + cb * src[rb + jj]
            v = v + cc * src[rc + jj]
            out[o0 + jj] = v + cd * src[rd + jj]
        s += 4
    while s < s1:
        ra, ca = np.uint64((offsets[s] + shift) * stride), coefs[s]
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


unit_spike_lists = jit(_unit_spike_lists)
unit_spike_lists_parallel = jit_parallel(_unit_spike_lists)
spike_weight_gradient = jit(_spike_weight_gradient, contract=True)
spike_weight_gradient_parallel = jit_parallel(_spike_weight_gradient, contract=True)
unit_weight_gradient = jit(_unit_weight_gradient, contract=True)
unit_weight_gradient_parallel = jit_parallel(_unit_weight_gradient, contract=True)
