"""Chunked soft-reset trace kernels (kernels/chunk.py) == the step-by-step float64 recursion.

The reference runs the per-step recursions of tests/reference.py with the constant decay alpha
(the soft reset) on the whole history; the kernels sum the same traces chunk by chunk from the
mirrored filtered-trace ring, the weight traces up to the chunk end and the delay traces K steps
behind (then flushed with zero input), as the learner drives them.  After every chunk the traces
and gradients must equal the reference at that step.  Axonal delays are synaptic delays tied per
presynaptic unit, so the same reference checks them.
"""

import numpy as np
import pytest

from onlinedelay.kernels import chunk as KC
from reference import csr_rows, ref_synaptic_delay_traces, ref_weight_traces
from test_kernels import (ALPHA, BUILDS, DTYPES, TRACE_ARGS, _post_factors, _ref_taps, assert_close, cast, f32,
                          make_csr, run_kernel, spikes)

GAIN, DECAY_OUT, GAIN_OUT = TRACE_ARGS


def run(name, build, *args):
    """Kernel ``name`` of kernels/chunk.py; the parallel build must equal the serial one bit for bit."""
    return run_kernel(name, build, *args, module=KC)


# (batch, n_pre, n_post, max_delay, K, sigma, n_steps, rate, min_fan, chunk)
CASES = {
    "basic": (2, 5, 4, 4, 2, 1.0, 14, 0.6, 1, 4),
    "chunk1": (2, 4, 3, 5, 3, 1.0, 13, 0.7, 1, 1),
    "batch1": (1, 4, 3, 3, 3, 1.0, 11, 0.8, 1, 3),
    "wide": (5, 6, 3, 6, 3, 1.2, 31, 0.5, 2, 7),
    "long_chunk": (3, 5, 4, 6, 3, 1.0, 29, 0.6, 1, 16),
    "short_sample": (2, 4, 3, 3, 3, 1.0, 2, 1.0, 1, 4),       # fewer steps than the lag K
    "counts": (2, 4, 4, 5, 2, 0.8, 12, 2.5, 1, 5),
    "silent": (2, 4, 3, 3, 2, 1.0, 8, 0, 1, 3),
}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("mode", ["synaptic", "axonal"])
@pytest.mark.parametrize("case", list(CASES))
def test_chunked_traces_equal_the_recursion(case, mode, seed, dtype, build):
    B, n_pre, n_post, max_d, K_, sigma, n_steps, rate, min_fan, chunk = CASES[case]
    rng = np.random.default_rng(3100 + seed)
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=min_fan)
    n_syn, post = pre.size, csr_rows(indptr)
    n_units = n_syn if mode == "synaptic" else n_pre
    unit_delay = f32(rng.uniform(0, max_d, n_units))
    unit_delay[: max(1, n_units // 3)] = f32(rng.uniform(0, K_ - 0.6, max(1, n_units // 3)))   # read ahead
    delay = unit_delay if mode == "synaptic" else unit_delay[pre]          # real delay of every synapse
    centre, taps = _ref_taps(unit_delay, K_, sigma)
    d_int = (centre if mode == "synaptic" else centre[pre]).astype(np.int32)
    weight = f32(rng.normal(0, 1, n_syn))
    x = spikes(rng, (n_steps, B, n_pre), rate)
    factors = [_post_factors(rng, B, n_post) for _ in range(n_steps)]
    psi_all = cast(np.stack([f[0].T for f in factors]), dtype)           # (T, n_post, B)
    sig_all = cast(np.stack([f[1].T for f in factors]), dtype)

    n_hist = KC.history_slots(chunk, max_d, K_)
    n_slots = chunk + 1
    hist = np.zeros((n_slots, n_pre, B), dtype)
    xh, xearly = np.zeros((n_pre, 2 * n_hist, B), dtype), np.zeros((n_pre, K_, B), dtype)
    n_buf = n_steps + K_
    P, Q = np.zeros((n_post, n_buf, B), dtype), np.zeros((n_post, n_buf, B), dtype)
    A, Pa, Qa = (np.zeros((n_post, B), dtype) for _ in range(3))
    scratch = np.full((n_post, KC.SCRATCH_ROWS, B), np.nan, dtype)      # the kernels must not read it first
    early = np.full(n_buf, np.nan)
    ebar_w, grad_w = np.zeros((n_syn, B), dtype), np.zeros(n_syn, dtype)
    ebar_d, grad_d = np.zeros((n_syn, B), dtype), np.zeros(n_syn, dtype)
    fused_w, fused_g = np.zeros((n_syn, B), dtype), np.zeros(n_syn, dtype)   # weights in the delay pass
    no_w, no_g = np.zeros((0, B), dtype), np.zeros(0, dtype)
    signal_u, edge_u = np.zeros((n_units, n_buf, B), dtype), np.zeros((n_units, B), dtype)
    centre_k, taps_k, weight_k, pre_of_delay = (centre.astype(np.int32), cast(taps, dtype), cast(weight, dtype),
                                                np.arange(n_units, dtype=np.int32))
    delay_of_syn = np.arange(n_syn, dtype=np.int32) if mode == "synaptic" else pre.copy()
    zeros = np.zeros((B, n_syn))
    r_w, r_d = (zeros, zeros, np.zeros(n_syn)), (zeros, zeros, np.zeros(n_syn))
    r_w_at = {0: r_w}                                                     # reference weight traces by step
    decay = np.full((B, n_post), ALPHA)
    scale = GAIN_OUT * GAIN
    w_next = d_next = 0
    ref_t = 0
    ends = list(range(chunk, n_steps, chunk)) + [n_steps]
    for t_end in ends:
        final = t_end == n_steps
        for t in range(w_next, t_end):
            hist[t % n_slots] = x[t].T
        x_end = t_end + K_ if final else t_end
        run("filter_history", build, hist, w_next, x_end, t_end - 1, ALPHA, xh, xearly)
        for u in range(w_next, min(x_end, n_steps + K_)):                   # X^u, zero input after the end
            expected = sum(ALPHA ** (u - v) * x[v] for v in range(min(u, n_steps - 1) + 1)).T
            assert_close(xh[:, u % n_hist], expected, dtype, 1.0 + np.abs(expected).max(), f"X at u={u}")
            assert_close(xh[:, u % n_hist + n_hist], expected, dtype, 1.0 + np.abs(expected).max(), "mirror")
        n = t_end - w_next
        run("chunk_factors", build, psi_all, sig_all, w_next, n, w_next, DECAY_OUT, scale, ALPHA, P, Q, A, Pa, Qa, early)
        keep = not final                  # the last chunk of a sample leaves the traces as they were
        before_w, before_d = ebar_w.copy(), ebar_d.copy()
        run("weight_chunk", build, xh, w_next, n, indptr, pre, d_int, P, Q, A, DECAY_OUT ** n, ebar_w, grad_w, keep,
            scratch)
        for ref_t in range(ref_t, t_end):
            psi, signal, _ = factors[ref_t]
            r_w = ref_weight_traces(x, ref_t, post, pre, d_int, psi, signal, decay, *TRACE_ARGS, *r_w)
            r_w_at[ref_t + 1] = r_w
        ref_t = t_end
        if keep:
            assert_close(ebar_w.T, r_w[1], dtype, 1.0 + np.abs(r_w[1]).max(), f"ebar_w at {t_end}")
        else:
            np.testing.assert_array_equal(ebar_w, before_w)
        assert_close(grad_w, r_w[2], dtype, 1.0 + np.abs(r_w[2]).max(), f"grad_w at {t_end}")

        d_end = t_end if final else max(d_next, t_end - K_)
        n = d_end - d_next
        if n > 0:
            run("chunk_factors", build, psi_all, sig_all, d_next, n, d_next, DECAY_OUT, scale, ALPHA,
                P, Q, A, Pa, Qa, early)
            if mode == "synaptic":
                fused = seed == 0                 # weight traces of the same steps in the same pass, or not
                run("synaptic_delay_chunk", build, xh, xearly, d_next, n, indptr, pre, centre_k, taps_k, weight_k,
                    P, Q, np.stack([A, Pa, Qa]), DECAY_OUT ** n, ebar_d, grad_d,
                    *((fused_w, fused_g) if fused else (no_w, no_g)),
                    keep, scratch)
                if fused:
                    ref = r_w_at[d_end]
                    if keep:
                        assert_close(fused_w.T, ref[1], dtype, 1.0 + np.abs(ref[1]).max(), f"fused ebar_w at {d_end}")
                    assert_close(fused_g, ref[2], dtype, 1.0 + np.abs(ref[2]).max(), f"fused grad_w at {d_end}")
            else:
                run("unit_delay_signal", build, xh, xearly, d_next, n, pre_of_delay, centre_k, taps_k,
                    signal_u, edge_u)
                run("unit_delay_chunk", build, signal_u, edge_u, n, indptr, delay_of_syn, weight_k,
                    P, Q, A, Pa, Qa, DECAY_OUT ** n, ebar_d, grad_d, keep, scratch)
            for tau in range(d_next, d_end):
                psi, signal, _ = factors[tau]
                r_d = ref_synaptic_delay_traces(x, tau, min(tau + K_, n_steps - 1), post, pre, delay, K_, sigma,
                                                weight, psi, signal, decay, *TRACE_ARGS, *r_d)
            if keep:
                assert_close(ebar_d.T, r_d[1], dtype, 1.0 + np.abs(r_d[1]).max(), f"ebar_d at {d_end}")
            else:
                np.testing.assert_array_equal(ebar_d, before_d)
            assert_close(grad_d, r_d[2], dtype, 1.0 + np.abs(r_d[2]).max(), f"grad_d at {d_end}")
        w_next, d_next = t_end, d_end
    assert d_next == n_steps
    if rate != 0:
        assert np.abs(grad_d).max() > 0 and np.abs(grad_w).max() > 0



@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, shifted", [(1, False), (3, True), (4, False)])
def test_dense_projection_by_blas_equals_the_recursion(B, shifted, dtype, parallel):
    """dense.py: every unit connected to every neuron, one delay per presynaptic unit (axonal or 0)."""
    from onlinedelay.dense import dense_weight_chunk

    rng = np.random.default_rng(40 + B)
    n_pre, n_post, max_d, n_steps, chunk = 5, 4, 4, 23, 6
    indptr = (np.arange(n_post + 1) * n_pre).astype(np.int32)
    pre = np.tile(np.arange(n_pre, dtype=np.int32), n_post)
    post = csr_rows(indptr)
    shift = (rng.integers(0, max_d + 1, n_pre) if shifted else np.zeros(n_pre)).astype(np.int32)
    d_int = shift[pre]
    x = spikes(rng, (n_steps, B, n_pre), 0.7)
    factors = [_post_factors(rng, B, n_post) for _ in range(n_steps)]
    psi_all = cast(np.stack([f[0].T for f in factors]), dtype)
    sig_all = cast(np.stack([f[1].T for f in factors]), dtype)
    n_hist = KC.history_slots(chunk, max_d, 0)
    hist = np.zeros((n_steps, n_pre, B), dtype)
    xh, xearly = np.zeros((n_pre, 2 * n_hist, B), dtype), np.zeros((n_pre, 0, B), dtype)
    P, Q = np.zeros((n_post, chunk, B), dtype), np.zeros((n_post, chunk, B), dtype)
    A, Pa, Qa = (np.zeros((n_post, B), dtype) for _ in range(3))
    ebar, grad = np.zeros((B, n_post, n_pre), dtype), np.zeros(n_post * n_pre, dtype)
    windows = np.zeros(n_pre * chunk * B, dtype)
    decay = np.full((B, n_post), ALPHA)
    r_w = (np.zeros((B, pre.size)), np.zeros((B, pre.size)), np.zeros(pre.size))
    for first in range(0, n_steps, chunk):
        n = min(chunk, n_steps - first)
        hist[first:first + n] = x[first:first + n].transpose(0, 2, 1)
        KC.filter_history(hist, first, first + n, n_steps - 1, ALPHA, xh, xearly)
        KC.chunk_factors(psi_all, sig_all, first, n, first, DECAY_OUT, GAIN_OUT * GAIN, ALPHA, P, Q, A, Pa, Qa,
                         np.zeros(n))
        keep = first + n < n_steps
        before = ebar.copy()
        dense_weight_chunk(xh, first, n, shift, P, Q, A, DECAY_OUT ** n, ebar, grad, windows, parallel, keep)
        for t in range(first, first + n):
            psi, signal, _ = factors[t]
            r_w = ref_weight_traces(x, t, post, pre, d_int, psi, signal, decay, *TRACE_ARGS, *r_w)
        if keep:
            assert_close(ebar.reshape(B, -1), r_w[1], dtype, 1.0 + np.abs(r_w[1]).max(), f"ebar at {first + n}")
        else:
            np.testing.assert_array_equal(ebar, before)
        assert_close(grad, r_w[2], dtype, 1.0 + np.abs(r_w[2]).max(), f"grad at {first + n}")
    assert np.abs(grad).max() > 0
