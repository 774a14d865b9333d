"""Delay and weight gradients of a one-chunk sample summed per presynaptic spike (soft reset).

When a whole sample is one chunk (steps ``u`` in ``[0, n)``, traces zero at the start, kernels/chunk.py),
the delay input of synapse ``k`` (unit ``i``, neuron ``j``, Gaussian taps ``tap_q`` at lags
``m_q = c - K + q`` around its forward delay ``c``) is ``V^u = sum_q tap_q sum_(v <= u) alpha^(u - v) x_i^(v - m_q)``,
so the chunk sums move to the postsynaptic side, as for the weights (kernels/sample.py)::

    g_d[k] = w_k sum_q tap_q S[k, q],   g_w[k] = S[k, K],
    S[k, q] = sum over the spikes (r, b) of unit i of  cnt R_j^(r + m_q)    (R = 0 outside [0, n))
    R^v = sum_(v <= u < n) alpha^(u - v) P^u                                 (P: the chunk factor)

Axonal delays (one per unit) are the same sums with the unit's taps; their per-synapse gradients
are summed by unit afterwards.  Work per spike: ``W`` contiguous lags of one row of ``R`` per outgoing
synapse, added to that synapse's lag sums ``S[k, :W]`` (``W >= 2K + 1``, the taps are applied
once per sample).

Our choice of layout: ``R`` transposed per batch element, ``RT[b, j, pad + v] = R_j^v`` with ``pad = K``
zeros in front and zeros after step ``n - 1``, so a synapse's ``W`` lags are one contiguous,
branch-free read ``RT[b, j, r + c : r + c + W]``, summed in one vector register per synapse (an
intrinsic: numba's loop vectoriser does not combine scalar accumulators); spikes listed per (unit,
batch element), so a synapse's lags are added over all its unit's spikes in a batch element at
once, four synapses per pass over the spikes; units in blocks (``block`` units per pass over the
batch, a block per thread) so a block's lag sums stay in L2, and neurons in tiles so the rows of
``RT[b]`` a tile reads stay in L1 while every unit of the block reads them.

Arrays: hist (n_slots, n_pre, B) presynaptic ring (step r at slot r, all steps held);
psi, signal (n_buf, N, B); RT (B, N, L), ``L >= pad + max(r) + max delay + W - K``;
spike lists ptr (n_pre B + 1,) int64, step (n_spikes,) int32, count (n_spikes,) float;
CSC synapse arrays as in projections.EventIndex; lag sums S (n_syn, W) in CSC order.
"""

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import jit, jit_parallel
from .surrogate import TAP_BLOCK, is_float32, tap_factors, tap_factors_float32

LANES = 8     # lags per synapse summed as one vector (the default window, K = 3: 2K + 1 = 7 taps, padded)


def _lag_sums_intrinsic(n_syn: int):
    """An intrinsic that adds, for the ``n_syn`` synapses k .. k + n_syn - 1 of one unit, each spike's
    window of LANES lags into the synapse's lag sums, one vector register per synapse::

        sums[k', :] += sum_(s0 <= s < s1) count[s] flat[boff + post[k'] n_lags + centre[k'] + step[s] : + LANES]

    (numba's loop vectoriser does not see LANES scalar accumulators as one vector; several synapses per
    pass over the spikes share the spike loads).  flat, count, sums : 1-D, one float type, sums
    (n_syn_total LANES,); post, centre : int32 (CSC); step : int32.  The caller keeps every index in bounds.
    """
    @intrinsic
    def lag_sums(typingctx, flat, boff, n_lags, post, centre, k, step, count, s0, s1, sums):
        if not (isinstance(flat, types.Array) and isinstance(sums, types.Array) and isinstance(count, types.Array)
                and flat.dtype == sums.dtype == count.dtype and flat.dtype in (types.float32, types.float64)):
            return None
        sig = types.void(flat, boff, n_lags, post, centre, k, step, count, s0, s1, sums)

        def codegen(context, builder, signature, args):
            i64, i32 = ir.IntType(64), ir.IntType(32)
            vty = ir.VectorType(context.get_value_type(flat.dtype), LANES)
            name = f"llvm.fma.v{LANES}" + ("f32" if flat.dtype == types.float32 else "f64")
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
            ty = signature.args
            data = {i: context.make_array(ty[i])(context, builder, args[i]).data for i in (0, 3, 4, 6, 7, 10)}
            boff64, nl64, k64, first, last = (context.cast(builder, args[i], ty[i], types.int64) for i in (1, 2, 5, 8, 9))
            bases, accs, rows = [], [], []
            for m in range(n_syn):
                km = builder.add(k64, ir.Constant(i64, m))
                j = builder.sext(builder.load(builder.gep(data[3], [km])), i64)
                c = builder.sext(builder.load(builder.gep(data[4], [km])), i64)
                bases.append(builder.add(boff64, builder.add(builder.mul(j, nl64), c)))
                row = builder.bitcast(builder.gep(data[10], [builder.mul(km, ir.Constant(i64, LANES))]),
                                      vty.as_pointer())
                acc = cgutils.alloca_once(builder, vty)        # promoted to a register by LLVM
                builder.store(builder.load(row, align=1), acc)
                accs.append(acc)
                rows.append(row)
            undef = ir.Constant(vty, ir.Undefined)
            splat = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
            with cgutils.for_range_slice(builder, first, last, ir.Constant(i64, 1), inc=True) as (s, _):
                r = builder.sext(builder.load(builder.gep(data[6], [s])), i64)
                c = builder.load(builder.gep(data[7], [s]))
                cv = builder.shuffle_vector(builder.insert_element(undef, c, ir.Constant(i32, 0)), undef, splat)
                for base, acc in zip(bases, accs):
                    ptr = builder.bitcast(builder.gep(data[0], [builder.add(base, r)]), vty.as_pointer())
                    builder.store(builder.call(fma, [cv, builder.load(ptr, align=1), builder.load(acc)]), acc)
            for acc, row in zip(accs, rows):
                builder.store(builder.load(acc), row, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return lag_sums


_lag_sums4 = _lag_sums_intrinsic(4)
_lag_sums1 = _lag_sums_intrinsic(1)


@jit
def spike_lists(hist, t_last, ptr, cursor, step, count):
    """List the spikes of steps 0 .. t_last per (unit, batch element): entry ``e = i B + b`` holds
    ``step[ptr[e]:ptr[e + 1]]`` (ascending) and their counts.

    hist : (n_slots, n_pre, B), t_last < n_slots; ptr : (n_pre B + 1,) int64 out; cursor : (>= n_pre B,)
    int64 scratch; step : (cap,) int32 out; count : (cap,) float out.  Returns the number of spikes;
    the lists are filled only if it is at most ``cap`` (else call again with larger arrays).
    """
    _, n_pre, n_batch = hist.shape
    n_lists = n_pre * n_batch
    ptr[:] = 0
    for r in range(t_last + 1):
        for i in range(n_pre):
            first = i * n_batch + 1
            for b in range(n_batch):                 # branch-free: vectorised
                ptr[first + b] += hist[r, i, b] != 0.0
    for e in range(n_lists):
        ptr[e + 1] += ptr[e]
    total = ptr[n_lists]
    if total > step.size:
        return total
    cursor[:n_lists] = ptr[:n_lists]
    for r in range(t_last + 1):
        for i in range(n_pre):
            for b in range(n_batch):
                c = hist[r, i, b]
                if c != 0.0:
                    e = i * n_batch + b
                    step[cursor[e]] = r
                    count[cursor[e]] = c
                    cursor[e] += 1
    return total


def _lag_filter(psi, signal, n, kappa, scale, alpha, pad, work, carry, RT):
    """RT[b, j, pad + v] = R_j^v = sum_(v <= u < n) alpha^(u - v) P^u for v in [0, n), zero elsewhere in the row.

    P^u = scale psi^u Lam^u, Lam^u = L^u + kappa Lam^(u+1) (Lam^n = 0); psi, signal : (>= n, N, B),
    step u at row u; kappa : readout decay; scale : zeta_o zeta; alpha : membrane decay;
    work : (N, >= n, B), carry : (>= 2, N, B) scratch (the recursions run over the batch in ``carry``,
    R into ``work``, then each neuron's rows are transposed into RT); RT : (B, N, L) out.
    """
    n_batch, n_post, n_lags = RT.shape
    flat = RT.reshape(-1)
    for j in prange(n_post):
        w, lam, acc = work[j, :n], carry[0, j], carry[1, j]
        lam[:] = 0.0
        acc[:] = 0.0
        for u in range(n - 1, -1, -1):
            for b in range(n_batch):
                lam[b] = signal[u, j, b] + kappa * lam[b]
                acc[b] = scale * psi[u, j, b] * lam[b] + alpha * acc[b]
                w[u, b] = acc[b]
        flat_w = w.reshape(-1)
        for b in range(n_batch):                 # unsigned indices: no wrap-around test, so LLVM vectorises
            row = np.uint64((b * n_post + j) * n_lags)
            for v in range(pad):
                flat[row + np.uint64(v)] = 0.0
            for u in range(n):
                flat[row + np.uint64(pad + u)] = flat_w[np.uint64(u * n_batch + b)]
            for v in range(pad + n, n_lags):
                flat[row + np.uint64(v)] = 0.0


@jit
def _lag_sums_any(flat, boff, n_lags, post, centre, k, k_end, j_end, step, count, s0, s1, width, lags):
    """The lag sums of :func:`spike_lag_sums` for any window width: synapses k .. (neurons < j_end, up to
    k_end), one lag at a time.  Returns the first synapse not done."""
    while k < k_end and post[k] < j_end:
        base = boff + post[k] * n_lags + centre[k]
        for s in range(s0, s1):
            cnt = count[s]
            o = base + step[s]
            for q in range(width):
                lags[k * width + q] += cnt * flat[o + q]
        k += 1
    return k


def _spike_lag_sums(ptr, step, count, out_indptr, out_post, centre_csc, RT, block, tile, cursor, sums):
    """S[k, q] = sum over the spikes (r, b) of synapse k's unit of  cnt RT[b, post_k, r + centre_k + q],  q < W.

    ptr, step, count : from :func:`spike_lists`; out_indptr (n_pre + 1,), out_post, centre_csc (n_syn,)
    int32: CSC view (a unit's synapses in ascending neuron order) and the taps' centre (forward delay)
    of each synapse; RT : (B, N, L) from :func:`lag_filter`; block : units per pass over the batch;
    tile : neurons whose rows of RT[b] are read by every unit of the block before the next ones (the
    rows stay in L1); cursor : (>= n_pre,) int64 scratch; sums : (n_syn, W) out (overwritten).
    """
    n_batch, n_post, n_lags = RT.shape
    n_pre = out_indptr.size - 1
    width = sums.shape[1]
    flat = RT.reshape(-1)
    lags = sums.reshape(-1)
    n_blocks = (n_pre + block - 1) // block
    for blk in prange(n_blocks):
        i0 = blk * block
        i1 = min(n_pre, i0 + block)
        for q in range(out_indptr[i0] * width, out_indptr[i1] * width):
            lags[q] = 0.0
        for b in range(n_batch):
            boff = b * n_post * n_lags
            for i in range(i0, i1):
                cursor[i] = out_indptr[i]
            for j_end in range(tile, n_post + tile, tile):
                for i in range(i0, i1):
                    e = i * n_batch + b
                    s0, s1 = ptr[e], ptr[e + 1]
                    if s0 == s1:
                        continue
                    k, k_end = cursor[i], out_indptr[i + 1]
                    if width != LANES:
                        k = _lag_sums_any(flat, boff, n_lags, out_post, centre_csc, k, k_end, j_end, step, count,
                                          s0, s1, width, lags)
                    while k + 4 <= k_end and out_post[k + 3] < j_end:     # four synapses per pass, then one
                        _lag_sums4(flat, boff, n_lags, out_post, centre_csc, k, step, count, s0, s1, lags)
                        k += 4
                    while k < k_end and out_post[k] < j_end:
                        _lag_sums1(flat, boff, n_lags, out_post, centre_csc, k, step, count, s0, s1, lags)
                        k += 1
                    cursor[i] = k


def _tap_sums(flat, delay, k0, n, half_width, width, inv_var, step, acc):
    """acc[e] = sum_q tap_q(delay[e]) flat[(k0 + e) width + q], q = 0 .. 2K, for e < n, the taps of
    surrogate.gaussian_taps without their factor 1 / (sqrt(2 pi) sigma^3) (surrogate.tap_factors,
    then the same recurrence from the centre tap outward as surrogate.tap_block).  Inlined: called
    with constant K and width the loop over the taps unrolls and the loop over ``e`` vectorises."""
    for e in range(n):
        u, g, ratio_up, ratio_down = tap_factors(delay[e], inv_var, step)
        base = (k0 + e) * width + half_width
        a = u * g * flat[base]
        up, down = g, g
        for m in range(1, half_width + 1):
            up *= ratio_up
            down *= ratio_down
            ratio_up *= step
            ratio_down *= step
            a += (u + m) * up * flat[base + m] + (u - m) * down * flat[base - m]
        acc[e] = a


tap_sums = jit(_tap_sums, contract=True, inline=True)


def _tap_sums_float32(flat, delay, k0, n, half_width, width, inv_var, step, acc):
    """:func:`tap_sums` of float32 sums and delays in float32 arithmetic (surrogate.tap_factors_float32;
    inv_var, step : float32): eight lanes per vector and a shorter exponential."""
    for e in range(n):
        u, g, ratio_up, ratio_down = tap_factors_float32(delay[e], inv_var, step)
        base = (k0 + e) * width + half_width
        a = u * g * flat[base]
        up, down = g, g
        for m in range(1, half_width + 1):
            up *= ratio_up
            down *= ratio_down
            ratio_up *= step
            ratio_down *= step
            lag = np.float32(m)
            a += (u + lag) * up * flat[base + m] + (u - lag) * down * flat[base - m]
        acc[e] = a


tap_sums_float32 = jit(_tap_sums_float32, contract=True, inline=True)


def _lag_gradients(sums, delay, half_width, sigma, weight, grad_d, grad_w):
    """grad_d[k] = w_k sum_q tap_q S[k, q] and grad_w[k] = S[k, K], every array in CSC order.

    sums : (n_syn, W) from :func:`spike_lag_sums`; delay : (n_syn,) each synapse's real delay (steps),
    its Gaussian taps (width K = half_width, sigma in steps) computed here a block of synapses at a
    time (:func:`tap_sums`: no table; specialised for the default window W = LANES); weight : (n_syn,);
    grad_d, grad_w : (n_syn,) out (pass an empty grad_w to skip the weight gradient).  Float32 sums and
    delays take float32 taps (:func:`tap_sums_float32`), float64 ones float64 taps.  Everything is
    read and written in order (the caller adds the CSC gradients into CSR order once: the gathers
    and scatters between the two orders per synapse cost more than the taps; 700 -> 256 synaptic at
    batch 1: the kernel 4.8 -> 2.9 ms per sample, then 0.7 ms with two exponentials and float32 taps;
    the CSC copies and transposing adds (kernels/csc.py) ~0.4 ms more).
    """
    n_syn, width = delay.size, sums.shape[1]
    with_w = grad_w.size > 0
    inv_var = 1.0 / (sigma * sigma)
    scale = inv_var / (math.sqrt(2.0 * math.pi) * sigma)
    step = math.exp(-inv_var)
    flat = sums.reshape(-1)
    n_blocks = (n_syn + TAP_BLOCK - 1) // TAP_BLOCK
    for blk in prange(n_blocks):
        k0 = blk * TAP_BLOCK
        n = min(n_syn, k0 + TAP_BLOCK) - k0
        d, acc = delay[k0:k0 + n], grad_d[k0:k0 + n]
        if is_float32(flat) and is_float32(delay):          # float32 gradients: float32 taps
            if width == LANES and half_width == LANES // 2 - 1:
                tap_sums_float32(flat, d, k0, n, LANES // 2 - 1, LANES, np.float32(inv_var), np.float32(step), acc)
            else:
                tap_sums_float32(flat, d, k0, n, half_width, width, np.float32(inv_var), np.float32(step), acc)
        elif width == LANES and half_width == LANES // 2 - 1:
            tap_sums(flat, d, k0, n, LANES // 2 - 1, LANES, inv_var, step, acc)
        else:
            tap_sums(flat, d, k0, n, half_width, width, inv_var, step, acc)
        for e in range(n):
            acc[e] = weight[k0 + e] * (scale * acc[e])
        if with_w:
            for e in range(n):
                grad_w[k0 + e] = flat[(k0 + e) * width + half_width]


lag_filter = jit(_lag_filter, contract=True)
lag_filter_parallel = jit_parallel(_lag_filter, contract=True)
spike_lag_sums = jit(_spike_lag_sums, contract=True)
spike_lag_sums_parallel = jit_parallel(_spike_lag_sums, contract=True)
lag_gradients = jit(_lag_gradients, contract=True)
lag_gradients_parallel = jit_parallel(_lag_gradients, contract=True)
