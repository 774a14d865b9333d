"""Segments of a known sequence (segments.py, kernels/sample.py) == stepping one step at a time.

The kernels against plain float64 NumPy sums; ``Network.run`` against ``Network.step``;
``run_sample`` (segments, learner work per segment) against ``learner.step``; the per-spike weight
gradient of a one-chunk sample against the chunked traces of kernels/chunk.py (short chunks
never take the per-spike path); and the learner's reset, which skips trace arrays a sample left
untouched, against a fresh learner.
"""

import dataclasses

import numba
import numpy as np
import pytest

from onlinedelay.config import LearningConfig, NetworkConfig
from onlinedelay.kernels import csc as KCSC
from onlinedelay.kernels import listing as KL
from onlinedelay.kernels import readout as KR
from onlinedelay.kernels import sample as KS
from onlinedelay.kernels import spike_weights as KW
from onlinedelay.learning import ThreeFactorLearner
from onlinedelay.network import Network
from onlinedelay.projections import event_index
from onlinedelay import learning, segments
from onlinedelay.segments import SEGMENT_STEPS, supports_segments
from onlinedelay.state import Projection
from test_kernels import dense_csr, make_csr, spikes

# -- kernels against NumPy ---------------------------------------------------------------------


def _projection(rng, n_pre, n_post, dense, unit_delays, max_delay):
    """(indptr, pre, delay_steps, weight) of a random CSR projection."""
    indptr, pre = dense_csr(n_pre, n_post) if dense else make_csr(rng, n_pre, n_post, min_fan=0)
    per_unit = rng.integers(0, max_delay + 1, n_pre)
    delay = per_unit[pre] if unit_delays else rng.integers(0, max_delay + 1, pre.size)
    return indptr, pre, delay.astype(np.int32), rng.normal(0, 1, pre.size)


def _csc(indptr, pre, delay, weight, n_pre, max_delay):
    proj = Projection(indptr=indptr, pre=pre, delay_steps=delay, weight=weight.astype(np.float64),
                      **{f: np.zeros(0) for f in Projection._fields if f not in ("indptr", "pre", "delay_steps",
                                                                                   "weight")})
    index = event_index(proj, n_pre, max_delay)
    delay_csc = delay[index.out_syn].astype(np.int32)
    return index, delay_csc, KCSC.unit_rows(index.out_indptr, index.out_post, delay_csc)


CASES = [  # (dense, unit_delays, max_delay)
    pytest.param(True, True, 0, id="dense-no-delays"),
    pytest.param(True, True, 5, id="dense-axonal"),
    pytest.param(True, False, 5, id="dense-synaptic"),
    pytest.param(False, True, 4, id="sparse-axonal"),
    pytest.param(False, False, 4, id="sparse-synaptic"),
]


BUILDS = [pytest.param("", 1, id="serial"), pytest.param("_parallel", 1, id="parallel-1"),
          pytest.param("_parallel", 3, id="parallel-3")]     # (build suffix, parts)


@pytest.mark.parametrize("build,parts", BUILDS)
@pytest.mark.parametrize("dense,unit_delays,max_delay", CASES)
@pytest.mark.parametrize("first,n", [(0, 17), (6, 9), (12, 5)])
def test_spike_current_is_the_delayed_sum(dense, unit_delays, max_delay, first, n, build, parts):
    rng = np.random.default_rng(7)
    T, B, n_pre, n_post = 17, 3, 9, 6
    indptr, pre, delay, weight = _projection(rng, n_pre, n_post, dense, unit_delays, max_delay)
    index, delay_csc, rows = _csc(indptr, pre, delay, weight, n_pre, max_delay)
    assert rows.all() == (dense and unit_delays)
    x = spikes(rng, (T, B, n_pre), 0.6).astype(np.uint8)
    cur = np.full((n, B, n_post), np.nan)
    getattr(KS, "spike_current" + build)(
        x, first, n, max_delay, index.out_indptr, KCSC.synapse_offsets(index.out_post, delay_csc, n_post),
        weight[index.out_syn], rows, np.zeros((parts, n_pre), np.int32), np.zeros((parts, 8)),
        np.zeros((parts, (n + 2 * max_delay) * n_post)), cur)
    ref = np.zeros((n, B, n_post))
    post = np.repeat(np.arange(n_post), np.diff(indptr))
    for s in range(pre.size):
        for u in range(n):
            q = first + u - delay[s]
            if 0 <= q < T:
                ref[u, :, post[s]] += weight[s] * x[q, :, pre[s]]
    np.testing.assert_allclose(cur, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("N, B", [(4, 3), (19, 21), (16, 16), (9, 1)])    # 8 x 8 blocks and their edges
@pytest.mark.parametrize("build,parts", BUILDS)
def test_backward_filter_is_the_anticausal_sum(build, parts, N, B):
    rng = np.random.default_rng(3)
    n_buf, lo, n = 12, 2, 9
    psi, signal = rng.normal(size=(n_buf, N, B)), rng.normal(size=(n_buf, N, B))
    kappa, scale, alpha = 0.8, 0.7, 0.9
    R = np.full((n_buf, B, N), np.nan)
    getattr(KS, "backward_filter" + build)(psi, signal, lo, n, kappa, scale, alpha, np.zeros((N, B)), R, parts)
    lam = np.array([sum(kappa ** (w - u) * signal[lo + w] for w in range(u, n)) for u in range(n)])
    P = scale * psi[lo:lo + n] * lam
    ref = np.array([sum(alpha ** (w - v) * P[w] for w in range(v, n)) for v in range(n)])
    np.testing.assert_allclose(R[:n], ref.transpose(0, 2, 1), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("first_segment", [True, False])
def test_readout_gradients_are_the_filtered_sums(B, first_segment):
    """With the traces before the segment (zero at a sample's first, zbar0 then passed as (0, B)): the sums
    over steps of delta zbar^T and delta bbar, as the per-step rule forms them."""
    rng = np.random.default_rng(11 + B)
    n, n_out, N, kappa, gain = 13, 4, 7, 0.8, 0.6
    delta = rng.normal(size=(n, n_out, B))
    z = spikes(rng, (n, N, B), 0.3).astype(float)
    zbar, bbar = (np.zeros((N, B)), np.zeros(B)) if first_segment else (rng.normal(size=(N, B)), rng.normal(size=B))
    grad_w, grad_b = rng.normal(size=(n_out, N)), rng.normal(size=n_out)
    ref_w, ref_b = grad_w.copy(), grad_b.copy()
    KR.readout_gradients(delta, z, (zbar[:0] if first_segment else zbar).copy(), bbar.copy(), kappa, gain, np.full((n, B, n_out), np.nan),
                         np.full((n if B > 1 else 0, N, n_out), np.nan), grad_w, grad_b)
    for u in range(n):
        zbar, bbar = kappa * zbar + gain * z[u], kappa * bbar + 1.0
        ref_w += delta[u] @ zbar.T
        ref_b += delta[u] @ bbar
    np.testing.assert_allclose(grad_w, ref_w, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(grad_b, ref_b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("B", [1, 3])
def test_readout_segment_is_the_filtered_product(B):
    """The readout over a segment from its spikes, against the recursion step by step; y carried on."""
    rng = np.random.default_rng(12 + B)
    n, n_out, N, kappa, gain = 11, 4, 9, 0.7, 0.6
    z = spikes(rng, (n, N, B), 0.3).astype(float)
    w_out, bias, y0 = rng.normal(size=(n_out, N)), rng.normal(size=n_out), rng.normal(size=(n_out, B))
    y, y_rec = y0.copy(), np.full((n, n_out, B), np.nan)
    KR.readout_segment(w_out, bias, kappa, gain, z, y, y_rec)
    ref = y0.copy()
    for u in range(n):
        ref = kappa * ref + gain * w_out @ z[u] + bias[:, None]
        np.testing.assert_allclose(y_rec[u], ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("scale,inf", [("one", False), ("one_minus_decay", False), ("one", True)])
@pytest.mark.parametrize("batch", [1, 3])
def test_inference_segments_equal_stepping_bit_for_bit(scale, inf, batch):
    """Network.run (segments, the readout summed in the segment kernel) against Network.step, float32:
    readout gain 1 or 1 - kappa, and a weight not finite."""
    cfg = dataclasses.replace(_net_config("none", 1.0), readout_input_scale=scale)
    net = Network(cfg, seed=4, batch_size=batch, dtype="float32")
    if inf:
        net.params.w_out[1, 2] = np.inf
    ref = Network.from_parameters(cfg, net.params, batch_size=batch, dtype="float32")
    x, _ = _inputs(50, batch)
    with np.errstate(all="ignore"):
        y = net.run(x)
        ref.reset(batch)
        y_ref = np.stack([ref.step(x[t]) for t in range(x.shape[0])])
    np.testing.assert_array_equal(y, y_ref)
    assert np.isfinite(y_ref).any() and np.abs(y_ref[np.isfinite(y_ref)]).max() > 0


@pytest.mark.parametrize("B, n_pre, n_post, block", [(3, 8, 5, 3), (1, 8, 5, 3), (2, 20, 19, 9), (2, 150, 6, 5)])
@pytest.mark.parametrize("order", ["steps", "units"])
@pytest.mark.parametrize("build,parts", BUILDS)
@pytest.mark.parametrize("dense,unit_delays,max_delay", CASES)
def test_spike_weight_gradient_is_the_sum_over_spikes(dense, unit_delays, max_delay, build, parts, order, B, n_pre,
                                                      n_post, block):
    """Both loop orders (by blocks of ``block`` steps into CSC order, by unit blocks into CSR order: by 8 x 8
    transposing blocks and their edges when dense) == the float64 sum over spikes, from a ring or from
    the transposed view of a sample's (T, B, n_pre) counts (the learner's input_trains)."""
    rng = np.random.default_rng(11)
    n, n_slots = 14, 20
    indptr, pre, delay, weight = _projection(rng, n_pre, n_post, dense, unit_delays, max_delay)
    index, delay_csc, rows = _csc(indptr, pre, delay, weight, n_pre, max_delay)
    x = spikes(rng, (n, B, n_pre), 0.7)
    ring = np.zeros((n_slots, n_pre, B))
    for q in range(n):
        ring[q % n_slots] = x[q].T
    R = rng.normal(size=(n, B, n_post))
    start = rng.normal(size=pre.size)            # the gradient is accumulated onto what it holds
    post = np.repeat(np.arange(n_post), np.diff(indptr))
    ref = start.copy()
    for s in range(pre.size):
        for q in range(n):
            if q + delay[s] < n:
                ref[s] += x[q, :, pre[s]] @ R[q + delay[s], :, post[s]]
    for hist in (ring, learning.input_trains(x.astype(np.uint8), np.float64)):
        grad = start.copy()
        if order == "steps":
            grad_csc = np.zeros(pre.size)
            masks = np.full((n * B, -(-n_pre // 64)), 7, np.uint64)
            ptr = np.full(n_pre + 1, -1, np.int64)
            n_spikes = getattr(KW, "unit_spike_lists" + build)(hist.transpose(0, 2, 1), n, masks, ptr, parts)
            assert n_spikes == np.count_nonzero(x) == ptr[-1]
            np.testing.assert_array_equal(np.diff(ptr), np.count_nonzero(x, axis=(0, 1)))
            getattr(KW, "spike_weight_gradient" + build)(
                hist.transpose(0, 2, 1), n, index.out_indptr, index.out_post, delay_csc, rows, R, masks, ptr,
                np.zeros(n_pre, np.int64), np.zeros(n_spikes + 3, np.int32), np.full(n_spikes + 3, np.nan), block,
                parts, grad_csc)
            grad[index.out_syn] += grad_csc
        else:
            blocks = KW.unit_blocks(index.out_indptr, block, (block - 1) * n_post)    # several, some of one unit
            assert blocks.size > 3
            units, n_syn = np.diff(blocks).max(), np.diff(index.out_indptr[blocks]).max()
            getattr(KW, "unit_weight_gradient" + build)(
                hist, n, index.out_indptr, index.out_syn, index.out_post, delay_csc, rows, R, blocks,
                np.zeros((parts, units * n * B), np.int64), np.zeros((parts, units * n * B)),
                np.zeros((parts, units), np.int64), np.full((parts, n_syn), np.nan), grad, index.transposed)
            assert index.transposed == dense
        np.testing.assert_allclose(grad, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("n_pre", [5, 16, 37, 700])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_spiking_units_lists_the_nonzero_counts_in_order(dtype, n_pre, layout):
    """Sixteen units per vector (C-contiguous counts) or one at a time (any other layout): the units
    with a nonzero count (NaN included), ascending, whatever the count type and the row's tail."""
    rng = np.random.default_rng(n_pre)
    x = ((rng.random((3, 4, n_pre)) < 0.3) * rng.integers(1, 4, (3, 4, n_pre))).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        x[1, 2, n_pre // 2] = np.nan
    if layout == "strided":
        x = np.repeat(x, 2, axis=2)[:, :, ::2]
        assert not x.flags.c_contiguous
    listed = numba.njit(lambda x, q, b, units: KL.spiking_units(x, q, b, units))
    for q in range(3):
        for b in range(4):
            units = np.full(n_pre + 16, -1, np.int32)
            m = listed(x, q, b, units)
            np.testing.assert_array_equal(units[:m], np.flatnonzero(x[q, b]))
            assert m > 0 or not x[q, b].any()


def test_unit_blocks_cover_the_units_in_order():
    """Blocks of at most ``max_units`` units and ``max_synapses`` synapses, unless one unit has more."""
    indptr = np.array([0, 3, 3, 10, 12, 13, 14, 30], np.int32)
    blocks = KW.unit_blocks(indptr, 2, 8)
    assert blocks.tolist() == [0, 2, 3, 5, 6, 7]
    assert KW.unit_blocks(np.zeros(1, np.int32), 4, 8).tolist() == [0]


# -- the network: segments against stepping ------------------------------------------------------


def _net_config(delays, density, reset="soft", recurrent="none", n_layers=1):
    return NetworkConfig(n_inputs=24, n_hidden=16, n_outputs=4, input_delays=delays, density=density,
                         max_delay_steps=7, threshold=0.3, reset=reset, recurrent=recurrent, n_layers=n_layers)


def _inputs(T, B, seed=1):
    rng = np.random.default_rng(seed)
    return rng.poisson(0.25, size=(T, B, 24)).astype(np.uint8), rng.integers(0, 4, B)


@pytest.mark.parametrize("delays", ["none", "axonal", "synaptic"])
@pytest.mark.parametrize("density", [1.0, 0.4])
@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("batch", [1, 3])
def test_run_by_segments_equals_stepping(delays, density, reset, batch):
    cfg = _net_config(delays, density, reset)
    x, _ = _inputs(SEGMENT_STEPS + 45, batch)         # two segments
    net = Network(cfg, seed=4, batch_size=batch, dtype="float64")
    ref = Network(cfg, seed=4, batch_size=batch, dtype="float64")
    assert supports_segments(net)
    y = net.run(x)
    ref.reset(batch)
    y_ref = np.stack([ref.step(x[t]) for t in range(x.shape[0])])
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    assert np.abs(y_ref).max() > 0 and net.state.z.shape == ref.state.z.shape
    # stepping on after a segment: the spikes still in flight arrive as they would have
    more, _ = _inputs(12, batch, seed=2)
    after = np.stack([net.step(more[t]) for t in range(12)])
    after_ref = np.stack([ref.step(more[t]) for t in range(12)])
    np.testing.assert_allclose(after, after_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.state.layers[0].v, ref.state.layers[0].v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("delays", ["axonal", "synaptic"])
@pytest.mark.parametrize("batch", [1, 3])
def test_stepping_after_samples_that_moved_the_delays_pushes_to_the_new_delays(delays, batch):
    """A reset leaves the push's targets to the first step (segments never read them): stepping after
    learned samples equals a fresh network holding the same parameters."""
    cfg = _net_config(delays, 0.6)
    learner = ThreeFactorLearner(Network(cfg, seed=7, batch_size=batch, dtype="float64"),
                                 LearningConfig(learn_delays=True, lr_delays=2.0))
    net = learner.net
    before = net.params.input.delay_steps.copy()
    for seed in range(3):
        x, labels = _inputs(40, batch, seed=seed)
        learner.run_sample(x, labels, update=True)
    assert not np.array_equal(net.params.input.delay_steps, before)        # the samples moved integer delays
    fresh = Network(cfg, seed=7, batch_size=batch, dtype="float64")
    fresh.restore(net.snapshot())
    x, _ = _inputs(30, batch, seed=9)
    net.reset()
    fresh.reset()
    for t in range(x.shape[0]):
        np.testing.assert_array_equal(net.step(x[t]), fresh.step(x[t]))


def test_segments_only_for_one_layer_without_recurrence():
    assert not supports_segments(Network(_net_config("none", 1.0, recurrent="dense")))
    assert not supports_segments(Network(_net_config("none", 1.0, n_layers=2)))


def _stepped(learner, x, labels, online_every=None):
    """The per-step rule: net.step + learner.step every step, updates as run_sample makes them;
    returns the hidden spike count."""
    net = learner.net
    spikes = 0.0
    net.reset(x.shape[1])
    learner.reset()
    weights = np.zeros(x.shape[0])
    weights[learner.config.loss_start_step:] = 1.0 / ((x.shape[0] - learner.config.loss_start_step) * x.shape[1])
    for t in range(x.shape[0]):
        net.step(x[t])
        spikes += net.state.z.sum()
        learner.step(labels, weights[t])
        if online_every and (t + 1) % online_every == 0:
            learner.apply()
    learner.flush()
    return spikes


def _arrays(learner):
    return [a.copy() for _, a in learner.net.params.arrays()] + [g.copy() for layer in learner.grads.layers
                                                                 for proj in layer for g in proj]


@pytest.mark.parametrize("delays,learn_delays", [("none", False), ("axonal", True), ("synaptic", True),
                                                  ("synaptic", False)])
@pytest.mark.parametrize("T", [60, 300])
@pytest.mark.parametrize("batch,unit_order_bytes", [(3, 1 << 18), (3, 0), (1, 1 << 18)])
def test_run_sample_by_segments_equals_the_per_step_rule(delays, learn_delays, T, batch, unit_order_bytes,
                                                         monkeypatch):
    """Batch 1 and 3; the per-spike weight gradients by unit blocks and (R over the limit) by steps."""
    monkeypatch.setattr(learning, "UNIT_ORDER_BYTES", unit_order_bytes)
    cfg = _net_config(delays, 0.6)
    lc = LearningConfig(learn_delays=learn_delays)
    x, labels = _inputs(T, batch)
    a = ThreeFactorLearner(Network(cfg, seed=5, batch_size=batch, dtype="float64"), lc)
    b = ThreeFactorLearner(Network(cfg, seed=5, batch_size=batch, dtype="float64"), lc)
    out = a.run_sample(x, labels)
    spikes = _stepped(b, x, labels)
    assert abs(a.loss_sum - b.loss_sum) < 1e-12 and out["spikes"] == spikes > 0
    for u, v in zip(_arrays(a), _arrays(b)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)


def test_online_updates_by_segments_equal_the_per_step_rule():
    cfg = _net_config("synaptic", 0.6)
    lc = LearningConfig(update="online", update_every_steps=20)
    x, labels = _inputs(150, 2)
    a = ThreeFactorLearner(Network(cfg, seed=6, batch_size=2, dtype="float64"), lc)
    b = ThreeFactorLearner(Network(cfg, seed=6, batch_size=2, dtype="float64"), lc)
    before = [p.copy() for _, p in a.net.params.arrays()]
    a.run_sample(x, labels, update=True)
    _stepped(b, x, labels, online_every=20)
    b.apply()
    changed = False
    for p0, u, v in zip(before, (p for _, p in a.net.params.arrays()), (p for _, p in b.net.params.arrays())):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
        changed |= not np.array_equal(p0, u)
    assert changed


@pytest.mark.parametrize("cfg", [
    pytest.param(_net_config("none", 1.0), id="dense"),
    pytest.param(_net_config("synaptic", 0.5), id="sparse-synaptic"),
    pytest.param(_net_config("axonal", 1.0, recurrent="dense"), id="recurrent"),
    pytest.param(_net_config("none", 1.0, recurrent="conv", n_layers=2), id="two-layers-conv"),
])
def test_per_spike_weight_gradient_equals_the_chunked_traces(cfg):
    """One chunk (per-spike at the flush) against chunks of 8 steps (the chunk kernels throughout)."""
    lc = LearningConfig(learn_delays=False)
    x, labels = _inputs(50, 3)
    a = ThreeFactorLearner(Network(cfg, seed=8, batch_size=3, dtype="float64"), lc)
    b = ThreeFactorLearner(Network(cfg, seed=8, batch_size=3, dtype="float64"), lc, chunk_steps=8)
    ga, gb = a.sample_gradients(x, labels), b.sample_gradients(x, labels)
    assert a.rules[0].traces_touched is False and b.rules[0].traces_touched is True
    for u, v in zip(ga.layers, gb.layers):
        for p, q in zip(u, v):
            np.testing.assert_allclose(p.weight, q.weight, rtol=1e-10, atol=1e-12)
    assert np.abs(ga.layers[0].feedforward.weight).max() > 0


def test_reset_after_untouched_traces_equals_a_fresh_learner():
    """Samples that use the traces and samples summed per spike, interleaved: each sample's gradients
    equal a fresh learner's on it (the trace arrays a sample touched are zeroed before the next)."""
    cfg = _net_config("axonal", 1.0)
    lc = LearningConfig(learn_delays=False)
    shared = ThreeFactorLearner(Network(cfg, seed=9, batch_size=2, dtype="float64"), lc, chunk_steps=32)
    for T, seed in [(70, 1), (20, 2), (90, 3), (25, 4)]:      # > chunk: traces; <= chunk: per spike
        x, labels = _inputs(T, 2, seed)
        fresh = ThreeFactorLearner(Network(cfg, seed=9, batch_size=2, dtype="float64"), lc, chunk_steps=32)
        g, g_ref = shared.sample_gradients(x, labels), fresh.sample_gradients(x, labels)
        assert shared.rules[0].traces_touched == (T > 32)
        for u, v in zip(g.layers[0], g_ref.layers[0]):
            np.testing.assert_allclose(u.weight, v.weight, rtol=1e-12, atol=1e-14)


def _all_zero(state):
    return all(not np.any(a) for layer in state.layers for a in layer) and not (state.z.any() or state.y.any()
                                                                               or state.t.any())


@pytest.mark.parametrize("steps", [
    pytest.param(lambda lr, x, lab: lr.run_sample(x, lab), id="run_sample"),
    pytest.param(lambda lr, x, lab: lr.net.run(x), id="run"),
    pytest.param(lambda lr, x, lab: (lr.run_sample(x, lab), [lr.net.step(x[t]) for t in range(4)]), id="then-step"),
    pytest.param(lambda lr, x, lab: [lr.net.step(x[t]) for t in range(x.shape[0])], id="stepped"),
])
@pytest.mark.parametrize("T", [30, SEGMENT_STEPS + 60])
def test_reset_after_segments_zeroes_every_ring(steps, T):
    """A reset after segments zeroes only the ring slots they wrote: the state is all zero again, as
    after the per-step path (which zeroes everything); a restored snapshot is zeroed in full."""
    cfg = _net_config("synaptic", 0.6)
    learner = ThreeFactorLearner(Network(cfg, seed=3, batch_size=2, dtype="float64"), LearningConfig())
    net = learner.net
    x, labels = _inputs(T, 2)
    for _ in range(2):
        steps(learner, x, labels)
        assert net.state.layers[0].hist_ff.any()
        net.reset()
        assert _all_zero(net.state)
    learner.run_sample(x, labels)
    snap = net.snapshot()
    net.reset()
    net.restore(snap)                       # rings as the snapshot holds them, not as segments left them
    net.reset()
    assert _all_zero(net.state)


def test_per_spike_flush_reads_the_input_not_the_ring():
    """A one-chunk sample leaves the ring unwritten but for its last steps (the flush reads x itself);
    its gradients equal the per-step rule's, and stepping on after it equals stepping throughout."""
    cfg = _net_config("synaptic", 0.6)
    x, labels = _inputs(40, 2)
    a = ThreeFactorLearner(Network(cfg, seed=5, batch_size=2, dtype="float64"), LearningConfig())
    b = ThreeFactorLearner(Network(cfg, seed=5, batch_size=2, dtype="float64"), LearningConfig())
    a.run_sample(x.astype(bool).astype(np.int64) * 2, labels)    # a wide dtype: cast for the flush
    _stepped(b, x.astype(bool).astype(np.int64) * 2, labels)
    for u, v in zip(_arrays(a), _arrays(b)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
    tail = segments.ring_tail(a.net, 2 * a.lag_steps)
    assert tail == cfg.max_delay_steps + 2 * a.lag_steps + 1
    ring, n_slots = a.net.state.layers[0].hist_ff, a.net.n_slots
    assert not ring[:40 - tail].any() and a.rules[0].input_trains is None
    np.testing.assert_array_equal(ring[40 - tail:40], b.net.state.layers[0].hist_ff[40 - tail:40])
    more, _ = _inputs(12, 2, seed=2)
    for t in range(12):
        np.testing.assert_allclose(a.net.step(more[t]), b.net.step(more[t]), rtol=1e-12, atol=1e-12)
    assert n_slots > 40


@pytest.mark.parametrize("delays", ["none", "axonal", "synaptic"])
def test_two_threads_equal_one(delays, monkeypatch):
    """The parallel builds (parts of the neurons, units or batch) give the serial results."""
    monkeypatch.setattr(segments, "PARALLEL_WORK", 0)         # small networks: the parallel builds too
    assert segments.parallel_parts(Network(_net_config(delays, 0.7), threads=2), 1) == 2
    cfg = _net_config(delays, 0.7)
    x, labels = _inputs(80, 5)
    one = ThreeFactorLearner(Network(cfg, seed=3, batch_size=5, dtype="float64"), LearningConfig(learn_delays=False))
    two = ThreeFactorLearner(Network(cfg, seed=3, batch_size=5, dtype="float64", threads=2),
                             LearningConfig(learn_delays=False))
    np.testing.assert_allclose(two.net.run(x), one.net.run(x), rtol=1e-12, atol=1e-12)
    for u, v in zip(two.sample_gradients(x, labels).layers[0], one.sample_gradients(x, labels).layers[0]):
        np.testing.assert_allclose(u.weight, v.weight, rtol=1e-10, atol=1e-12)


def test_small_work_runs_serially():
    net = Network(_net_config("none", 1.0), threads=2, batch_size=1)
    assert segments.parallel_parts(net, 100) == 1
    assert segments.parallel_parts(net, segments.PARALLEL_WORK) == 2


@pytest.mark.parametrize("shape", [(700, 256), (13, 5), (8, 16), (9, 17), (1, 1), (0, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("layout", ["contiguous", "columns", "strided"])
def test_transposes_by_blocks(shape, dtype, layout):
    """kernels/csc.transpose_copy and transpose_add (8 x 8 blocks by shuffles and the edges) == numpy's
    transpose: C-contiguous arrays, the columns of a larger array (rows contiguous), or every other
    element of one (element by element)."""
    rng = np.random.default_rng(2)

    def place(a):                           # a's values in the layout under test
        if layout == "contiguous":
            return a
        wide = np.zeros((a.shape[0], 2 * a.shape[1] + 3), a.dtype)
        view = wide[:, 3:3 + a.shape[1]] if layout == "columns" else wide[:, 1:1 + 2 * a.shape[1]:2]
        view[...] = a
        return view

    src, dst = (place((rng.normal(size=s) * 100).astype(dtype)) for s in (shape, shape[::-1]))
    expected = dst + src.T
    KCSC.transpose_add(src, dst)
    np.testing.assert_array_equal(dst, expected)
    if dtype != np.int32:
        src[::3] = -0.0                                     # a copy keeps the sign of zero
    out = place(np.full(shape[::-1], -7, dtype))
    KCSC.transpose_copy(src, out)
    np.testing.assert_array_equal(out, src.T)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(src.T))


@pytest.mark.parametrize("dense", [True, False])
def test_csc_copies_are_the_permutation(dense):
    """to_csc / add_from_csc (a transposed copy where the projection is dense) == indexing by out_syn."""
    from onlinedelay.projections import add_from_csc, to_csc
    rng = np.random.default_rng(5)
    indptr, pre, delay, weight = _projection(rng, 7, 5, dense, True, 3)
    index = _csc(indptr, pre, delay, weight, 7, 3)[0]
    assert index.transposed == dense
    out = np.empty_like(weight)
    to_csc(index, weight, out)
    np.testing.assert_array_equal(out, weight[index.out_syn])
    csr = rng.normal(size=weight.size)
    expected = csr.copy()
    expected[index.out_syn] += out
    add_from_csc(index, out, csr)
    np.testing.assert_array_equal(csr, expected)


@pytest.mark.parametrize("dense,unit_delays,max_delay", CASES)
def test_csc_delays_offsets_and_unit_rows(dense, unit_delays, max_delay):
    """csc_delays / synapse_offsets / unit_rows == their NumPy definitions; a unit is a row only with
    every neuron in order at one delay (a full unit with one delay changed is not)."""
    rng = np.random.default_rng(9)
    n_pre, n_post = 9, 6
    indptr, pre, delay, weight = _projection(rng, n_pre, n_post, dense, unit_delays, max_delay)
    index = _csc(indptr, pre, delay, weight, n_pre, max_delay)[0]
    delay_csc = np.full(pre.size, -1, np.int32)
    seen = np.full(delay.size, -1, delay.dtype)
    assert KCSC.copy_changes(delay, seen) == np.count_nonzero(delay != -1) and np.array_equal(seen, delay)
    assert KCSC.copy_changes(delay, seen) == 0
    assert KCSC.csc_delays(delay, index.out_syn, delay_csc) == np.count_nonzero(delay[index.out_syn] != -1)
    np.testing.assert_array_equal(delay_csc, delay[index.out_syn])
    assert KCSC.csc_delays(delay, index.out_syn, delay_csc) == 0
    if max_delay and dense:                         # one delay of unit 2 moves: it is no longer a row
        k = index.out_indptr[2] + 3
        delay[index.out_syn[k]] = (delay[index.out_syn[k]] + 1) % (max_delay + 1)
        assert KCSC.csc_delays(delay, index.out_syn, delay_csc) == 1
    np.testing.assert_array_equal(KCSC.synapse_offsets(index.out_post, delay_csc, n_post),
                                  delay[index.out_syn].astype(np.int64) * n_post + index.out_post)
    fan = np.diff(index.out_indptr)
    ref = [fan[i] == n_post and np.array_equal(index.out_post[index.out_indptr[i]:index.out_indptr[i + 1]],
                                               np.arange(n_post))
           and np.unique(delay_csc[index.out_indptr[i]:index.out_indptr[i + 1]]).size == 1 for i in range(n_pre)]
    rows = KCSC.unit_rows(index.out_indptr, index.out_post, delay_csc)
    assert rows.dtype == np.uint8
    np.testing.assert_array_equal(rows, np.array(ref, np.uint8))
    assert rows.any() == (dense and (unit_delays or max_delay == 0))
    if max_delay and dense and unit_delays:
        assert not rows[2] and rows.sum() == n_pre - 1
    empty = np.zeros(0, np.int32)
    assert KCSC.unit_rows(np.zeros(4, np.int32), empty, empty).tolist() == [0, 0, 0]


@pytest.mark.parametrize("target_dtype", [np.uint16, np.int32])
def test_event_targets_follow_the_delays(target_dtype):
    """events.event_targets == delay_steps[out_syn] * n_post + out_post, recomputed only when a delay changed."""
    from onlinedelay.kernels.events import event_targets
    rng = np.random.default_rng(6)
    n_pre, n_post, max_delay = 8, 5, 4
    indptr, pre, delay, weight = _projection(rng, n_pre, n_post, False, False, max_delay)
    index = _csc(indptr, pre, delay, weight, n_pre, max_delay)[0]
    seen, target = np.full(pre.size, -1, np.int32), np.zeros(pre.size, target_dtype)
    assert event_targets(delay, index.out_syn, index.out_post, n_post, seen, target) == pre.size
    np.testing.assert_array_equal(target, delay[index.out_syn] * n_post + index.out_post)
    np.testing.assert_array_equal(seen, delay)
    target[:] = 0                                   # unchanged delays: nothing rewritten
    assert event_targets(delay, index.out_syn, index.out_post, n_post, seen, target) == 0 and not target.any()
    delay[3] = (delay[3] + 1) % (max_delay + 1)
    assert event_targets(delay, index.out_syn, index.out_post, n_post, seen, target) == 1
    np.testing.assert_array_equal(target, delay[index.out_syn] * n_post + index.out_post)
    np.testing.assert_array_equal(seen, delay)


@pytest.mark.parametrize("shape, dtype", [((256, 32), np.float32), ((3, 5, 7), np.float64), ((0, 4), np.float32),
                                          (7, np.int64)])
def test_aligned_zeros_start_on_a_cache_line(shape, dtype):
    from onlinedelay.state import CACHE_LINE_BYTES, aligned_copy, aligned_zeros
    arrays = [aligned_zeros(shape, dtype) for _ in range(8)]    # numpy alone aligns to 16 bytes
    for a in arrays:
        assert a.shape == (shape if isinstance(shape, tuple) else (shape,)) and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable and not a.any()
        assert a.size == 0 or a.ctypes.data % CACHE_LINE_BYTES == 0
    src = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    copy = aligned_copy(src)
    np.testing.assert_array_equal(copy, src)
    assert copy.size == 0 or copy.ctypes.data % CACHE_LINE_BYTES == 0


def test_network_state_is_aligned_after_a_restore():
    """Threads split the batch of these arrays: each must start on a cache line (no false sharing)."""
    from onlinedelay.state import CACHE_LINE_BYTES
    net = Network(_net_config("none", 1.0), batch_size=32)
    net.restore(net.snapshot())
    for name, a in zip(net.state.layers[0]._fields, net.state.layers[0]):
        assert a.size == 0 or a.ctypes.data % CACHE_LINE_BYTES == 0, name
