"""Delay gradients summed per presynaptic spike (kernels/spike_delays.py) == their definitions.

The kernels against plain float64 NumPy sums (dense and sparse rows, synaptic and axonal delays,
delays near 0 so taps read ahead of step 0, counts above 1, the recurrent train's extra step
t_last = n, the default window and another width, small blocks and tiles, serial and parallel
builds); the learner's one-chunk flush (per spike) against chunks of 8 steps (the chunk kernels),
feedforward and recurrent, one and two layers.
"""

import numpy as np
import pytest

from onlinedelay import segments
from onlinedelay.config import LearningConfig, NetworkConfig
from onlinedelay.kernels import spike_delays as KD
from onlinedelay.kernels import surrogate as KG
from onlinedelay.learning import ThreeFactorLearner
from onlinedelay.network import Network
from onlinedelay.projections import event_index
from onlinedelay.state import Projection
from test_kernels import _ref_taps, dense_csr, make_csr, spikes


def _hist(rng, n, t_last, n_slots, n_pre, B, rate=0.7):
    """A ring holding steps 0 .. t_last (counts, some above 1) and stale values after them."""
    hist = rng.normal(size=(n_slots, n_pre, B))            # stale entries: never read
    x = spikes(rng, (t_last + 1, n_pre, B), rate)
    hist[:t_last + 1] = x
    assert x.max() > 1
    return hist, x


def test_spike_lists_hold_every_spike_in_order():
    rng = np.random.default_rng(1)
    n_slots, n_pre, B, t_last = 12, 5, 3, 9
    hist, x = _hist(rng, 0, t_last, n_slots, n_pre, B)
    ptr, cursor = np.zeros(B * n_pre + 1, np.int64), np.zeros(B * n_pre + 4, np.int64)
    small = (np.zeros(3, np.int32), np.zeros(3))
    total = KD.spike_lists(hist, t_last, ptr, cursor, *small)
    assert total == np.count_nonzero(x) > 3 and not small[0].any()       # too small: counted, not filled
    step, count = np.zeros(total, np.int32), np.zeros(total)
    assert KD.spike_lists(hist, t_last, ptr, cursor, step, count) == total
    for b in range(B):
        for i in range(n_pre):
            e = i * B + b
            r = np.flatnonzero(x[:, i, b])
            np.testing.assert_array_equal(step[ptr[e]:ptr[e + 1]], r)
            np.testing.assert_array_equal(count[ptr[e]:ptr[e + 1]], x[r, i, b])


@pytest.mark.parametrize("parallel", [False, True])
def test_lag_filter_is_the_anticausal_sum(parallel):
    rng = np.random.default_rng(2)
    n_buf, N, B, n, pad, L = 14, 4, 3, 11, 3, 25
    psi, signal = rng.normal(size=(n_buf, N, B)), rng.normal(size=(n_buf, N, B))
    kappa, scale, alpha = 0.8, 0.6, 0.9
    RT = rng.normal(size=(B, N, L))                        # stale values must be overwritten
    work, carry = rng.normal(size=(N, n, B)), rng.normal(size=(2, N, B))     # scratch: overwritten
    (KD.lag_filter_parallel if parallel else KD.lag_filter)(psi, signal, n, kappa, scale, alpha, pad, work, carry, RT)
    lam = np.zeros((n, N, B))
    for u in range(n - 1, -1, -1):
        lam[u] = signal[u] + (kappa * lam[u + 1] if u + 1 < n else 0)
    P = scale * psi[:n] * lam
    ref = np.zeros((B, N, L))
    for v in range(n):
        ref[:, :, pad + v] = sum(alpha ** (u - v) * P[u] for u in range(v, n)).T
    np.testing.assert_allclose(RT, ref, rtol=1e-13, atol=1e-13)


def _projection(rng, n_pre, n_post, dense, axonal, max_delay):
    """A CSR projection with real delays (per synapse or per unit; some below 1/2: taps read ahead)."""
    indptr, pre = dense_csr(n_pre, n_post) if dense else make_csr(rng, n_pre, n_post, min_fan=0)
    n_delays = n_pre if axonal else pre.size
    delay = rng.uniform(0, max_delay, n_delays)
    delay[:2] = 0.1, 0.9                                   # centres 0 and 1: taps before step 0
    delay_of_syn = pre.copy() if axonal else np.arange(pre.size, dtype=np.int32)
    empty = np.zeros(0)
    proj = Projection(indptr, pre, rng.normal(size=pre.size), delay, np.zeros(pre.size, np.int32),
                      delay_of_syn.astype(np.int32), np.zeros(0, np.int32), empty, np.zeros(0, np.int32),
                      empty, empty, empty, empty)
    return proj


CASES = [pytest.param(d, a, id=f"{'dense' if d else 'sparse'}-{'axonal' if a else 'synaptic'}")
         for d in (True, False) for a in (False, True)]


@pytest.mark.parametrize("dense,axonal", CASES)
@pytest.mark.parametrize("half_width", [3, 2])             # the 8-lane vector path and the any-width path
@pytest.mark.parametrize("recurrent", [False, True])       # the recurrent train holds step t_last = n too
@pytest.mark.parametrize("parallel", [False, True])
def test_spike_delay_gradients_are_the_sums_over_spikes(dense, axonal, half_width, recurrent, parallel):
    rng = np.random.default_rng(3 + 2 * half_width + recurrent)
    n, B, n_pre, n_post, max_delay, n_slots = 13, 3, 7, 9, 5, 16
    proj = _projection(rng, n_pre, n_post, dense, axonal, max_delay)
    n_taps, width = 2 * half_width + 1, 2 * half_width + 2
    centre, taps = _ref_taps(proj.delay, half_width, 1.0)
    index = event_index(proj, n_pre, max_delay)
    centre_csc = centre[proj.delay_of_syn[index.out_syn]]
    t_last = n if recurrent else n - 1
    hist, x = _hist(rng, n, t_last, n_slots, n_pre, B)
    R = rng.normal(size=(n, B, n_post))
    L = t_last + max_delay + width + 1
    RT = np.zeros((B, n_post, L))
    RT[:, :, half_width:half_width + n] = R.transpose(1, 2, 0)
    ptr, cursor = np.zeros(B * n_pre + 1, np.int64), np.zeros(B * n_pre, np.int64)
    total = KD.spike_lists(hist, t_last, ptr, cursor, np.zeros(0, np.int32), np.zeros(0))
    step, count = np.zeros(total, np.int32), np.zeros(total)
    KD.spike_lists(hist, t_last, ptr, cursor, step, count)
    sums = np.full((proj.pre.size, width), np.nan)
    g_d, g_w = np.zeros(proj.pre.size), np.zeros(proj.pre.size)
    lag_sums = KD.spike_lag_sums_parallel if parallel else KD.spike_lag_sums
    lag_sums(ptr, step, count, index.out_indptr, index.out_post, centre_csc, RT, 2, 3, cursor, sums)
    g_d, g_w = _lag_gradients_csr(parallel, sums, index, proj, proj.delay, half_width, 1.0, True)
    # the definitions: per synapse, over the spikes of its unit and the taps' lags inside [0, n)
    post = np.repeat(np.arange(n_post), np.diff(proj.indptr))
    ref_d, ref_w = np.zeros(proj.pre.size), np.zeros(proj.pre.size)
    for s in range(proj.pre.size):
        p, i = proj.delay_of_syn[s], proj.pre[s]
        for r in range(t_last + 1):
            for q in range(n_taps):
                v = r + centre[p] - half_width + q
                if 0 <= v < n:
                    term = x[r, i] @ R[v, :, post[s]]
                    ref_d[s] += proj.weight[s] * taps[p, q] * term
                    ref_w[s] += term if q == half_width else 0.0
    assert np.abs(ref_d).max() > 0 and np.abs(ref_w).max() > 0
    np.testing.assert_allclose(g_d, ref_d, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_w, ref_w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axonal", [False, True])
@pytest.mark.parametrize("with_w", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("half_width", [3, 2])             # the default window (specialised) and another
@pytest.mark.parametrize("parallel", [False, True])
def test_lag_gradients_apply_the_taps_of_each_delay(axonal, with_w, dtype, half_width, parallel):
    """Several tap blocks (and a partial one), sparse CSC order, sigma 0.7: against the taps of the
    definition (float64 NumPy)."""
    rng = np.random.default_rng(11 + axonal)
    n_pre, n_post, sigma = 60, 23, 0.7
    proj = _projection(rng, n_pre, n_post, False, axonal, 9)
    n_syn = proj.pre.size
    assert n_syn > 2 * KG.TAP_BLOCK + 1
    index = event_index(proj, n_pre, 9)
    sums = rng.normal(size=(n_syn, 2 * half_width + 2))
    g_d, g_w = rng.normal(size=n_syn), rng.normal(size=n_syn)       # accumulated into
    ref_d, ref_w, w_before = g_d.copy(), g_w.copy(), g_w.copy()
    _, taps = _ref_taps(proj.delay.astype(dtype).astype(np.float64), half_width, sigma)
    csc_of_syn = np.argsort(index.out_syn)
    ref_d += proj.weight * np.einsum("sq,sq->s", taps[proj.delay_of_syn], sums[csc_of_syn, :2 * half_width + 1])
    ref_w += sums[csc_of_syn, half_width]
    d, w = _lag_gradients_csr(parallel, sums, index, proj, proj.delay.astype(dtype), half_width, sigma, with_w)
    np.testing.assert_allclose(g_d + d, ref_d, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(g_w + w, ref_w if with_w else w_before, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("half_width", [3, 2])
def test_float32_lag_gradients_have_float32_accuracy(half_width):
    """Float32 sums and delays take float32 taps (surrogate.tap_factors_float32): within a few float32
    ulps of the float64 taps on the same values."""
    rng = np.random.default_rng(5)
    n_syn, width = 3 * KG.TAP_BLOCK + 17, 2 * half_width + 2
    sums = rng.normal(size=(n_syn, width)).astype(np.float32)
    delay = np.concatenate([rng.uniform(0, 9, n_syn - 4), [0.0, 0.5, 8.5, 9.0]]).astype(np.float32)
    weight = rng.normal(size=n_syn).astype(np.float32)
    out = {}
    for dt in (np.float32, np.float64):
        g_d, g_w = np.full(n_syn, np.nan, dt), np.full(n_syn, np.nan, dt)
        KD.lag_gradients(sums.astype(dt), delay.astype(dt), half_width, 0.8, weight.astype(dt), g_d, g_w)
        out[dt] = g_d.astype(np.float64), g_w.astype(np.float64)
    scale = np.abs(weight) * np.abs(sums).sum(axis=1) * 3.0       # |w| sum |S| max|tap| (sigma 0.8)
    np.testing.assert_array_less(np.abs(out[np.float32][0] - out[np.float64][0]), 4e-7 * scale + 1e-30)
    np.testing.assert_array_equal(out[np.float32][1], out[np.float64][1])
    assert not np.array_equal(out[np.float32][0], out[np.float64][0])    # the float32 taps were used


def test_float32_exp_is_within_two_ulps():
    x = np.concatenate([np.linspace(-87.0, 88.0, 20001), [-100.0, 100.0, 0.0, -1e-8]]).astype(np.float32)
    got = np.array([KG.exp_float32(v) for v in x], np.float64)
    ref = np.exp(np.clip(x.astype(np.float64), -87.0, 88.0))
    assert np.all(np.abs(got - ref) <= 2 * np.spacing(ref.astype(np.float32)).astype(np.float64))


def _lag_gradients_csr(parallel, sums, index, proj, delay, half_width, sigma, with_w):
    """lag_gradients on CSC copies of the delays and weights; its (g_d, g_w) back in CSR order (zero
    weight gradient without ``with_w``)."""
    out = index.out_syn
    g_d, g_w = np.full(out.size, np.nan), np.full(out.size if with_w else 0, np.nan)
    (KD.lag_gradients_parallel if parallel else KD.lag_gradients)(
        sums, delay[proj.delay_of_syn][out], half_width, sigma, proj.weight[out], g_d, g_w)
    csr_d, csr_w = np.zeros(out.size), np.zeros(out.size)
    csr_d[out] = g_d
    if with_w:
        csr_w[out] = g_w
    return csr_d, csr_w


# -- the learner: one chunk (per spike) against chunks of 8 steps ----------------------------------


def _net_config(delays, density=1.0, recurrent="none", recurrent_delays="none", n_layers=1):
    return NetworkConfig(n_inputs=24, n_hidden=16, n_outputs=4, input_delays=delays, density=density,
                         max_delay_steps=7, threshold=0.3, recurrent=recurrent, recurrent_delays=recurrent_delays,
                         n_layers=n_layers)


LEARNERS = [
    pytest.param(_net_config("synaptic"), id="synaptic-dense"),
    pytest.param(_net_config("synaptic", 0.5), id="synaptic-sparse"),
    pytest.param(_net_config("axonal"), id="axonal-dense"),
    pytest.param(_net_config("axonal", 0.4), id="axonal-sparse"),
    pytest.param(_net_config("synaptic", 0.6, "dense", "synaptic"), id="recurrent-synaptic"),
    pytest.param(_net_config("axonal", 1.0, "dense", "axonal"), id="recurrent-axonal"),
    pytest.param(_net_config("none", 1.0, "dense", "synaptic"), id="recurrent-only"),
    pytest.param(_net_config("synaptic", 0.7, "dense", "axonal", n_layers=2), id="two-layers"),
    pytest.param(_net_config("synaptic", 1.0, "conv", "axonal", n_layers=2), id="two-layers-conv"),
]


@pytest.mark.parametrize("cfg", LEARNERS)
def test_per_spike_delay_gradients_equal_the_chunked_traces(cfg):
    rng = np.random.default_rng(1)
    x, labels = rng.poisson(0.25, size=(50, 3, 24)).astype(np.uint8), rng.integers(0, 4, 3)
    lc = LearningConfig()
    a = ThreeFactorLearner(Network(cfg, seed=8, batch_size=3, dtype="float64"), lc)
    b = ThreeFactorLearner(Network(cfg, seed=8, batch_size=3, dtype="float64"), lc, chunk_steps=8)
    ga, gb = a.sample_gradients(x, labels), b.sample_gradients(x, labels)
    for rule_a, rule_b in zip(a.rules, b.rules):        # the per-spike flush ran (no trace touched)
        assert rule_a.traces_touched is False and rule_b.traces_touched is True
    learned = 0
    for u, v in zip(ga.layers, gb.layers):
        for p, q in zip(u, v):
            for got, want in zip(p, q):
                if want.size:
                    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()
                    learned += int(np.abs(want).max() > 0)
    n_learned = sum(int(g.size > 0) for layer in gb.layers for proj in layer for g in proj[:2])
    assert learned == n_learned            # every weight and delay gradient is nonzero: the case tests them


def test_per_spike_delay_gradients_with_two_threads_equal_one(monkeypatch):
    """The parallel builds (units in blocks over threads) give the serial builds' gradients."""
    monkeypatch.setattr(segments, "PARALLEL_WORK", 0)         # small networks: the parallel builds too
    cfg = _net_config("synaptic", 0.7, "dense", "axonal")
    rng = np.random.default_rng(2)
    x, labels = rng.poisson(0.25, size=(40, 3, 24)).astype(np.uint8), rng.integers(0, 4, 3)
    grads = [ThreeFactorLearner(Network(cfg, seed=3, batch_size=3, dtype="float64", threads=threads)).sample_gradients(
        x, labels) for threads in (1, 2)]
    for (_, one), (_, two) in zip(grads[0].learned(), grads[1].learned()):
        np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-14)
    assert np.abs(grads[0].layers[0].recurrent.delay).max() > 0
    assert KD.spike_lag_sums_parallel.signatures and KD.lag_filter_parallel.signatures   # they ran
