"""Online three-factor gradients == hand-derived BPTT of the same relaxed model (spec section 12)."""

import numpy as np
import pytest

from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner
from reference import DenseModel, ref_bptt, sparse_to_dense_grad

TOL = 1e-10


def _case(seed, n_in=5, n_h=4, n_out=3, T=30, B=2, rate=0.4, **net_kw):
    cfg = NetworkConfig(n_inputs=n_in, n_hidden=n_h, n_outputs=n_out, dt_ms=1.0, tau_mem_ms=5.0,
                        tau_out_ms=8.0, max_delay_steps=6, weight_init_scale=2.5, **net_kw)
    net = Network(cfg, seed=seed, batch_size=B, dtype="float64")
    rng = np.random.default_rng(1000 + seed)
    x = rng.poisson(rate, size=(T, B, n_in))
    labels = rng.integers(0, n_out, size=B)
    return net, x, labels


def _online_and_bptt(net, x, labels, learn=None, detach_reset=True):
    learn = learn or LearningConfig()
    learner = ThreeFactorLearner(net, learn)
    model = DenseModel(net)
    g = learner.sample_gradients(x, labels)
    T, B = x.shape[:2]
    w = np.zeros(T)
    w[learn.loss_start_step:] = 1.0 / ((T - learn.loss_start_step) * B)
    ref = ref_bptt(model, x.astype(float), labels, w, learn.half_width_steps, learn.sigma_steps,
                   detach_reset=detach_reset)
    return g, ref


def _rel(a, b):
    scale = np.abs(b).max()
    assert scale > 0, "reference gradient is all zero: the case tests nothing"
    return np.abs(a - b).max() / scale


def _compare(net, g, ref):
    c, p = net.config, net.params
    errs = {
        "w_out": _rel(g.w_out, ref["w_out"]),
        "b_out": _rel(g.b_out, ref["b_out"]),
        "w_in": _rel(sparse_to_dense_grad(p.input, g.w_in, c.n_hidden, c.n_inputs), ref["w_in"]),
    }
    if c.input_delays == "synaptic":
        errs["d_in"] = _rel(sparse_to_dense_grad(p.input, g.d_in, c.n_hidden, c.n_inputs), ref["d_in"])
    elif c.input_delays == "axonal":
        errs["d_in"] = _rel(g.d_in, ref["d_in"])
    if c.recurrent:
        errs["w_rec"] = _rel(sparse_to_dense_grad(p.recurrent, g.w_rec, c.n_hidden, c.n_hidden), ref["w_rec"])
        if c.recurrent_delays == "synaptic":
            errs["d_rec"] = _rel(sparse_to_dense_grad(p.recurrent, g.d_rec, c.n_hidden, c.n_hidden), ref["d_rec"])
        elif c.recurrent_delays == "axonal":
            errs["d_rec"] = _rel(g.d_rec, ref["d_rec"])
    return errs


def _assert_spiking(ref):
    z = ref["forward"]["z"]
    assert 0 < z.mean() < 1, "the case must have spikes and silences to exercise psi and the reset"


@pytest.mark.parametrize("delays", ["synaptic", "axonal", "none"])
@pytest.mark.parametrize("seed,shape", [(0, (5, 4, 3)), (1, (7, 6, 2)), (2, (3, 8, 4))])
def test_feedforward_online_equals_bptt(delays, seed, shape):
    n_in, n_h, n_out = shape
    net, x, labels = _case(seed, n_in, n_h, n_out, input_delays=delays)
    if delays == "synaptic":   # make sure the non-causal branch (delay < K) and the far end are both used
        d = net.params.input.delay
        d[: d.size // 3] = np.linspace(0.0, 2.4, d.size // 3)
        d[-1] = 6.0
        net.set_delays("input", d)
    g, ref = _online_and_bptt(net, x, labels)
    _assert_spiking(ref)
    errs = _compare(net, g, ref)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("delays", [("synaptic", "axonal"), ("axonal", "synaptic"), ("none", "none")])
def test_recurrent_online_equals_bptt_with_detached_spikes(reset, delays):
    net, x, labels = _case(3, 5, 6, 3, reset=reset, recurrent=True, input_delays=delays[0],
                           recurrent_delays=delays[1])
    g, ref = _online_and_bptt(net, x, labels)
    _assert_spiking(ref)
    errs = _compare(net, g, ref)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_hard_and_soft_reset_sparse_loss_window(reset):
    net, x, labels = _case(4, 8, 5, 3, T=40, reset=reset, density=0.5, input_delays="synaptic")
    g, ref = _online_and_bptt(net, x, labels, LearningConfig(loss_start_step=10, sigma_steps=1.5))
    _assert_spiking(ref)
    errs = _compare(net, g, ref)
    assert max(errs.values()) <= TOL, errs


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_reset_not_detached_differs(reset):
    """e-prop drops the reset path; BPTT through the reset must give a different gradient."""
    net, x, labels = _case(5, input_delays="synaptic", reset=reset)
    g, ref = _online_and_bptt(net, x, labels, detach_reset=False)
    _assert_spiking(ref)
    errs = _compare(net, g, ref)
    assert errs["w_out"] <= TOL and errs["b_out"] <= TOL       # the readout is still exact
    assert errs["w_in"] > 1e-6 and errs["d_in"] > 1e-6


def test_random_feedback_keeps_readout_exact_only():
    net, x, labels = _case(6, input_delays="synaptic")
    g, ref = _online_and_bptt(net, x, labels, LearningConfig(feedback="random"))
    errs = _compare(net, g, ref)
    assert errs["w_out"] <= TOL and errs["b_out"] <= TOL
    assert errs["w_in"] > 1e-3


@pytest.mark.parametrize("delays", ["synaptic", "axonal"])
def test_parallel_kernels_give_the_serial_gradients(delays):
    """Rows spread over threads: same arithmetic per row, so the gradients are bit-identical."""
    serial, x, labels = _case(8, n_h=9, B=3, input_delays=delays, recurrent=True, recurrent_delays=delays)
    parallel, _, _ = _case(8, n_h=9, B=3, input_delays=delays, recurrent=True, recurrent_delays=delays)
    parallel.set_threads(2)
    g_serial = ThreeFactorLearner(serial).sample_gradients(x, labels)
    g_parallel = ThreeFactorLearner(parallel).sample_gradients(x, labels)
    for a, b in zip(g_serial, g_parallel):
        np.testing.assert_array_equal(a, b)
    assert np.abs(g_serial.d_in).max() > 0


def test_online_mode_with_frozen_parameters_equals_accumulate():
    """online updates with lr = 0 accumulate exactly the same gradients as accumulate mode."""
    net, x, labels = _case(7, input_delays="synaptic")
    frozen = LearningConfig(update="online", update_every_steps=1000, lr_weights=0.0, lr_delays=0.0, lr_readout=0.0)
    g_acc = ThreeFactorLearner(net, LearningConfig()).sample_gradients(x, labels)
    learner = ThreeFactorLearner(net, frozen)
    learner.zero_grad()
    learner.run_sample(x, labels, update=False)
    for a, b in zip(g_acc, learner.grads):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunk_steps", [1, 3, 7, 64])
@pytest.mark.parametrize("delays", [("synaptic", "axonal"), ("axonal", "synaptic")])
def test_chunk_size_changes_nothing_but_rounding(delays, chunk_steps):
    """Soft reset: traces summed per chunk of any length (1 = every step, 64 > T) still equal BPTT."""
    net, x, labels = _case(11, n_h=6, T=29, input_delays=delays[0], recurrent=True, recurrent_delays=delays[1])
    learn = LearningConfig()
    g = ThreeFactorLearner(net, learn, chunk_steps=chunk_steps).sample_gradients(x, labels)
    model = DenseModel(net)
    w = np.full(x.shape[0], 1.0 / (x.shape[0] * x.shape[1]))
    ref = ref_bptt(model, x.astype(float), labels, w, learn.half_width_steps, learn.sigma_steps)
    _assert_spiking(ref)
    assert max(_compare(net, g, ref).values()) < TOL


@pytest.mark.parametrize("delays", ["synaptic", "axonal"])
def test_online_updates_mid_chunk_follow_the_step_by_step_rule(delays):
    """Updates every 5 steps with chunks of 16: each update first sums the pending steps, so the
    parameters after a sample equal those of chunk_steps=1 (the traces advanced every step)."""
    online = LearningConfig(update="online", update_every_steps=5, lr_weights=0.05, lr_delays=0.5, lr_readout=0.05)
    finals = []
    for chunk_steps in (1, 16):
        net, x, labels = _case(12, n_h=6, T=40, input_delays=delays, recurrent=True, recurrent_delays=delays)
        start = net.params.input.delay.copy()
        learner = ThreeFactorLearner(net, online, chunk_steps=chunk_steps)
        learner.run_sample(x, labels, update=True)
        finals.append(net.params)
    assert np.abs(finals[0].input.delay - start).max() > 1e-3, "the delays must move for the test to mean anything"
    for a, b in zip(finals[0], finals[1]):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
