"""A projection's integer delays in CSC order, what the segment kernels derive from them, and the
transposes between the CSR and CSC orders of a dense projection.

``segments.CscDelays`` keeps these per projection and re-derives them only when the integer delays
change (kernels/sample.py reads them: ``unit_rows`` flags, ``synapse_offsets``).  A dense projection's
CSC order is the transpose of its CSR rows (projections.to_csc, add_from_csc): :func:`transpose_copy`
and :func:`transpose_add` go by 8 x 8 blocks that LLVM turns into vector shuffles (700 x 256 float32:
0.28 -> 0.07 ms for the add, numpy's strided loop against this).
"""

import numpy as np

from ._jit import jit


@jit
def csc_delays(delay_steps, out_syn, delay_csc):
    """delay_csc[k] = delay_steps[out_syn[k]] (CSC order); returns how many entries changed.

    delay_steps : (n_syn,) int, CSR order; out_syn : (n_syn,) int32; delay_csc : (n_syn,) int32, in/out.
    """
    changed = 0
    for k in range(out_syn.size):
        d = delay_steps[out_syn[k]]
        changed += d != delay_csc[k]
        delay_csc[k] = d
    return changed


@jit
def copy_changes(src, dst):
    """dst[:] = src (1-D, the same length) if they differ; returns how many entries changed (a contiguous,
    read-only pass when nothing changed: cheaper than the gather of :func:`csc_delays`, so a refresh tests
    this first)."""
    changed = 0
    for k in range(src.size):
        changed += src[k] != dst[k]
    if changed:
        dst[:] = src
    return changed


@jit
def synapse_offsets(out_post, delay_csc, n_post):
    """(n_syn,) int32 ``delay_csc * n_post + out_post``: a synapse's place in a block of rows of N neurons."""
    offsets = np.empty(out_post.size, np.int32)
    for k in range(out_post.size):
        offsets[k] = delay_csc[k] * n_post + out_post[k]
    return offsets


@jit
def unit_rows(out_indptr, out_post, delay_csc):
    """(n_pre,) uint8: 1 where unit i's synapses are neurons 0 .. N-1 in order with one delay
    (N = 1 + the largest neuron index); each unit's test stops at its first other synapse."""
    n_pre = out_indptr.size - 1
    rows = np.zeros(n_pre, np.uint8)
    if out_post.size == 0:
        return rows
    n_post = out_post.max() + 1
    for i in range(n_pre):
        k0 = out_indptr[i]
        if out_indptr[i + 1] - k0 != n_post:
            continue
        row = 1
        for j in range(n_post):
            if out_post[k0 + j] != j or delay_csc[k0 + j] != delay_csc[k0]:
                row = 0
                break
        rows[i] = row
    return rows


TRANSPOSE_BLOCK = 8     # the side of the blocks (a literal loop bound: the block is unrolled and vectorised)


@jit
def transpose_add(src, dst):
    """dst[j, i] += src[i, j].  src : (n, m), dst : (m, n), not overlapping (C-contiguous, or dst the
    columns of a larger row-major array: kernels/spike_weights.unit_weight_gradient)."""
    _transpose(src, dst, True)


@jit
def transpose_copy(src, dst):
    """dst[j, i] = src[i, j].  src : (n, m), dst : (m, n), C-contiguous, not overlapping."""
    _transpose(src, dst, False)


@jit
def _transpose(src, dst, add):
    """dst[j, i] = src[i, j] (+ dst[j, i] if ``add``): 8 x 8 blocks, then the edges."""
    n, m = src.shape
    n8, m8 = n - n % TRANSPOSE_BLOCK, m - m % TRANSPOSE_BLOCK
    for i0 in range(0, n8, TRANSPOSE_BLOCK):
        for j0 in range(0, m8, TRANSPOSE_BLOCK):
            for a in range(TRANSPOSE_BLOCK):
                for b in range(TRANSPOSE_BLOCK):
                    v = src[i0 + a, j0 + b]
                    if add:
                        v += dst[j0 + b, i0 + a]
                    dst[j0 + b, i0 + a] = v
    for i in range(n):
        for j in range(m8 if i < n8 else 0, m):
            v = src[i, j]
            if add:
                v += dst[j, i]
            dst[j, i] = v
