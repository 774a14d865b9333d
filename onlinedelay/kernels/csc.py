"""A projection's integer delays in CSC order, what the segment kernels derive from them, and the
transposes between the CSR and CSC orders of a dense projection.

``segments.CscDelays`` keeps these per projection and re-derives them only when the integer delays
change (kernels/sample.py reads them: ``unit_rows`` flags, ``synapse_offsets``).  A dense projection's
CSC order is the transpose of its CSR rows (projections.to_csc, add_from_csc): :func:`transpose_copy`
and :func:`transpose_add` go by 8 x 8 blocks (700 x 256 float32: 0.28 -> 0.07 ms for the add, numpy's
strided loop against the blocks LLVM vectorised on its own), loaded as eight vectors and transposed
by shuffles (copy, alone: 0.10 -> 0.05-0.06 ms).
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

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


TRANSPOSE_BLOCK = 8     # the side of the blocks (a literal loop bound; the shuffles below are written for 8)


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes))


def _block_intrinsic(add: bool):
    """An intrinsic ``f(src, i0, j0, dst)``: dst[j0 + c, i0 + r] (+)= src[i0 + r, j0 + c] for r, c < 8,
    the eight rows of src loaded as vectors and transposed by three rounds of shuffles (unpack pairs,
    then pairs of pairs, then halves).  src, dst : 2-D arrays of one numeric type whose rows are
    contiguous; the caller keeps the block in bounds."""
    @intrinsic
    def block(typingctx, src, i0, j0, dst):
        if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.ndim == dst.ndim == 2
                and src.dtype == dst.dtype and isinstance(src.dtype, (types.Integer, types.Float))):
            return None

        def codegen(context, builder, signature, args):
            ty = signature.args
            arrays = [context.make_array(ty[k])(context, builder, args[k]) for k in (0, 3)]
            first_row, first_col = (context.cast(builder, args[k], ty[k], types.int64) for k in (1, 2))
            i64 = ir.IntType(64)
            element = context.get_data_type(ty[0].dtype)
            vector = ir.VectorType(element, 8)
            width = ir.Constant(i64, context.get_abi_sizeof(element))

            def row(array, r, c, k):                 # the address of array[r + k, c : c + 8]
                stride = cgutils.unpack_tuple(builder, array.strides, 2)[0]
                offset = builder.add(builder.mul(builder.add(r, ir.Constant(i64, k)), stride), builder.mul(c, width))
                byte = builder.gep(builder.bitcast(array.data, ir.IntType(8).as_pointer()), [offset])
                return builder.bitcast(byte, vector.as_pointer())

            rows = [builder.load(row(arrays[0], first_row, first_col, k), align=1) for k in range(8)]
            pairs = []
            for k in range(0, 8, 2):
                pairs += [_shuffle(builder, rows[k], rows[k + 1], [0, 8, 1, 9, 4, 12, 5, 13]),
                          _shuffle(builder, rows[k], rows[k + 1], [2, 10, 3, 11, 6, 14, 7, 15])]
            quads = []
            for h in (0, 4):
                for k in (h, h + 1):
                    quads += [_shuffle(builder, pairs[k], pairs[k + 2], [0, 1, 8, 9, 4, 5, 12, 13]),
                              _shuffle(builder, pairs[k], pairs[k + 2], [2, 3, 10, 11, 6, 7, 14, 15])]
            for k in range(4):
                for half, lanes in ((0, [0, 1, 2, 3, 8, 9, 10, 11]), (4, [4, 5, 6, 7, 12, 13, 14, 15])):
                    value = _shuffle(builder, quads[k], quads[k + 4], lanes)
                    ptr = row(arrays[1], first_col, first_row, k + half)
                    if add:
                        old = builder.load(ptr, align=1)
                        value = builder.fadd(old, value) if isinstance(element, (ir.FloatType, ir.DoubleType)) \
                            else builder.add(old, value)
                    builder.store(value, ptr, align=1)
            return context.get_dummy_value()

        return types.void(src, i0, j0, dst), codegen

    return block


_copy_block, _add_block = _block_intrinsic(False), _block_intrinsic(True)


@jit
def transpose_add(src, dst):
    """dst[j, i] += src[i, j].  src : (n, m), dst : (m, n), not overlapping, their rows contiguous (C-contiguous,
    or columns of a larger row-major array: kernels/spike_weights.unit_weight_gradient)."""
    _transpose(src, dst, True)


@jit
def transpose_copy(src, dst):
    """dst[j, i] = src[i, j].  src : (n, m), dst : (m, n), not overlapping, their rows contiguous."""
    _transpose(src, dst, False)


@jit
def _transpose(src, dst, add):
    """dst[j, i] = src[i, j] (+ dst[j, i] if ``add``): 8 x 8 blocks by vector shuffles (rows not
    contiguous: element by element), then the edges."""
    n, m = src.shape
    n8, m8 = n - n % TRANSPOSE_BLOCK, m - m % TRANSPOSE_BLOCK
    if src.strides[1] != src.itemsize or dst.strides[1] != dst.itemsize:
        n8 = m8 = 0
    for i0 in range(0, n8, TRANSPOSE_BLOCK):
        for j0 in range(0, m8, TRANSPOSE_BLOCK):
            if add:
                _add_block(src, i0, j0, dst)
            else:
                _copy_block(src, i0, j0, dst)
    for i in range(n):
        for j in range(m8 if i < n8 else 0, m):
            v = src[i, j]
            if add:
                v += dst[j, i]
            dst[j, i] = v
