"""Online three-factor gradients == hand-derived BPTT of the same relaxed model (spec section 12)."""

import numpy as np
import pytest

from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner
from reference import (DenseModel, csr_grad, ref_bptt, ref_delay_grid, ref_kbit, ref_scale_grads, ref_ternary,
                       sparse_to_dense_grad)

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


def _projection_errors(proj, g, ref_w, ref_d, mode, n_post, n_pre):
    """Relative errors of one projection's weight and delay gradients against the dense reference."""
    errs = {}
    if proj.weight_of_syn.size:                         # conv: per tap
        errs["w"] = _rel(g.weight, ref_w)
    else:
        errs["w"] = _rel(sparse_to_dense_grad(proj, g.weight, n_post, n_pre), ref_w)
    if mode == "synaptic":
        errs["d"] = _rel(sparse_to_dense_grad(proj, g.delay, n_post, n_pre), ref_d)
    elif mode == "axonal":
        errs["d"] = _rel(g.delay, ref_d)
    return errs


def _compare(net, g, ref):
    """Errors of every gradient: w_out, b_out and, per layer, w_in/d_in (feedforward), w_rec/d_rec;
    layer 0 under the bare names, layer l > 0 with the suffix "@l"."""
    errs = {"w_out": _rel(g.w_out, ref["w_out"]), "b_out": _rel(g.b_out, ref["b_out"])}
    for l, (spec, lp, lg, lr) in enumerate(zip(net.layer_specs, net.params.layers, g.layers, ref["layers"])):
        suffix = "" if l == 0 else f"@{l}"
        for (kind, proj, pg, mode, n_pre) in (
                ("in", lp.feedforward, lg.feedforward, spec.feedforward.delays, spec.n_pre),
                ("rec", lp.recurrent, lg.recurrent, spec.recurrent.delays if spec.recurrent else None, spec.n_neurons)):
            if kind == "rec" and spec.recurrent is None:
                continue
            for part, err in _projection_errors(proj, pg, lr[f"w_{kind}"], lr.get(f"d_{kind}"), mode,
                                                spec.n_neurons, n_pre).items():
                errs[f"{part}_{kind}{suffix}"] = err
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
    for (_, a), (_, b) in zip(g_serial.learned(), g_parallel.learned()):
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
    for (_, a), (_, b) in zip(g_acc.learned(), learner.grads.learned()):
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
    for (_, u), (_, v) in zip(finals[0].arrays(), finals[1].arrays()):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# stacks of layers: every parameter of every layer equals BPTT with the readout reading every layer
# ------------------------------------------------------------------------------------------------
def _deep_case(seed, sizes, T=30, B=2, n_in=5, n_out=3, **net_kw):
    cfg = NetworkConfig(n_inputs=n_in, n_outputs=n_out, dt_ms=1.0, tau_mem_ms=5.0, tau_out_ms=8.0,
                        max_delay_steps=6, weight_init_scale=2.5, readout="all",
                        layers=[{"n_hidden": n} for n in sizes], **net_kw)
    net = Network(cfg, seed=seed, batch_size=B, dtype="float64")
    rng = np.random.default_rng(2000 + seed)
    return net, rng.poisson(0.4, size=(T, B, n_in)), rng.integers(0, n_out, size=B)


def _spiking_everywhere(ref):
    for l, rec in enumerate(ref["forward"]["layers"]):
        assert 0 < rec["z"].mean() < 1, f"layer {l} must spike and be silent to exercise psi and the reset"


def _small_delays(net):
    """Put a third of every projection's delays below the Gaussian half-width (non-causal taps)."""
    for l in range(len(net.layer_specs)):
        for which in ("feedforward", "recurrent"):
            d = net.projection(which, l).delay
            if d.size:
                d = d.copy()
                d[: max(1, d.size // 3)] = np.linspace(0.0, 2.4, max(1, d.size // 3))
                net.set_delays(which, d, layer=l)


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("case", [
    dict(sizes=(6, 5), input_delays="synaptic", hidden_delays="synaptic"),
    dict(sizes=(6, 5), input_delays="axonal", hidden_delays="axonal", recurrent="conv", recurrent_delays="axonal"),
    dict(sizes=(5, 6, 4), input_delays="synaptic", hidden_delays="axonal", recurrent="dense",
         recurrent_delays="synaptic"),
    dict(sizes=(7, 6), input_delays="synaptic", density=0.6, hidden_delays="synaptic", hidden_density=0.5,
         recurrent="sparse", recurrent_density=0.5, recurrent_delays="axonal"),
    dict(sizes=(6, 6, 5), input_delays="none", hidden_delays="synaptic", recurrent="conv", kernel_size=3,
         recurrent_delays="synaptic"),
])
def test_deep_online_equals_bptt_with_every_layer_read(case, reset):
    case = dict(case)
    net, x, labels = _deep_case(20 + len(case), case.pop("sizes"), B=3, reset=reset, **case)
    _small_delays(net)
    g, ref = _online_and_bptt(net, x, labels)
    _spiking_everywhere(ref)
    errs = _compare(net, g, ref)
    assert len(errs) >= 2 + 2 * len(net.layer_specs), errs
    assert max(errs.values()) <= TOL, errs


def test_conv_recurrence_learns_shared_taps_exactly():
    """k = 3 taps shared by every neuron: the gradient of a tap is the sum over its synapses."""
    net, x, labels = _deep_case(31, (8,), recurrent="conv", recurrent_delays="axonal", input_delays="synaptic")
    rec = net.params.recurrent
    assert rec.shared_weight.size == 3 and rec.weight.size == 8 * 3 - 2      # zero padding at both edges
    np.testing.assert_array_equal(rec.weight, rec.shared_weight[rec.weight_of_syn])
    g, ref = _online_and_bptt(net, x, labels)
    assert g.w_rec.shape == (3,)
    errs = _compare(net, g, ref)
    assert max(errs.values()) <= TOL, errs


def test_random_feedback_or_an_unread_layer_differs_from_bptt():
    """With random feedback (or the readout reading the last layer only, lower layers on random
    feedback) the lower layers' gradients are not BPTT's: the exactness test can fail."""
    net, x, labels = _deep_case(32, (6, 5), input_delays="synaptic")
    g, ref = _online_and_bptt(net, x, labels, LearningConfig(feedback="random"))
    errs = _compare(net, g, ref)
    assert errs["w_out"] <= TOL and errs["w_in"] > 1e-3 and errs["w_in@1"] > 1e-3


def test_recurrent_spike_at_the_last_step_enters_the_delay_gradient():
    """A presynaptic spike at T-1 with a recurrent delay below the half-width is read by the
    Gaussian window at step T: the online gradients include it, as BPTT of the sample does."""
    for reset in ("soft", "hard"):
        net, x, labels = _case(40, 5, 6, 3, T=25, reset=reset, recurrent=True, recurrent_delays="axonal",
                               input_delays="none")
        net.set_delays("recurrent", np.array([0.0, 0.4, 1.0, 1.6, 2.2, 0.2]))
        g, ref = _online_and_bptt(net, x, labels)
        assert ref["forward"]["z"][-1].sum() > 0, "the case needs spikes at the last step"
        assert _compare(net, g, ref)["d_rec"] <= TOL
        learn = LearningConfig()
        w = np.full(x.shape[0], 1.0 / (x.shape[0] * x.shape[1]))
        old = ref_bptt(DenseModel(net), x.astype(float), labels, w, learn.half_width_steps, learn.sigma_steps,
                       recurrent_end_step=False)
        assert _rel(g.d_rec, old["d_rec"]) > 1e-4, "the last recurrent step must matter for this case"


# ------------------------------------------------------------------------------------------------
# low-bit networks: online gradients w.r.t. shadow weights, scales, shadow delays and the delay
# offset == BPTT of the quantized forward with straight-through gradients
# ------------------------------------------------------------------------------------------------
def _effective_is_quantized(net):
    """The effective arrays are the reference quantizers of the shadows (checked independently)."""
    c = net.config
    for l, kind, proj, spec in net.projection_specs():
        if spec is None:
            continue
        effective = proj.shared_weight if proj.weight_of_syn.size else proj.weight
        if spec.weight_bits == "ternary":
            alpha, beta = proj.weight_scale if spec.ternary_scales == "learned" else (None, None)
            want, _ = ref_ternary(proj.weight_shadow, alpha, beta)
            np.testing.assert_allclose(effective, want, rtol=0, atol=1e-12)
            assert set(np.round(effective, 12)) <= {0.0, round(float(proj.weight_scale[0]), 12),
                                                    -round(float(proj.weight_scale[1]), 12)}
        elif spec.weight_bits != "32":
            np.testing.assert_allclose(effective, ref_kbit(proj.weight_shadow, int(spec.weight_bits)), atol=1e-12)
        if proj.delay_offset.size:
            np.testing.assert_allclose(proj.delay, ref_delay_grid(proj.delay_shadow, proj.delay_offset[0],
                                                                  spec.delay_step, c.max_delay_steps), atol=1e-12)


def _quantizer_errors(net, g, ref):
    """Errors of the scale and offset gradients against the reference's own straight-through mapping
    of dE/dWq and dE/dd_hat."""
    errs = {}
    for (l, kind, proj, spec), lr, pg in zip(net.projection_specs(),
                                             (lr for lr in ref["layers"] for _ in (0, 1)),
                                             (pg for lg in g.layers for pg in lg)):
        if spec is None:
            continue
        key = "in" if kind == "feedforward" else "rec"
        ref_w = lr[f"w_{key}"] if proj.weight_of_syn.size else csr_grad(proj, lr[f"w_{key}"])
        if spec.weight_bits == "ternary" and spec.ternary_scales == "learned":
            errs[f"scale_{key}@{l}"] = _rel(pg.weight_scale, ref_scale_grads(proj.weight_shadow, ref_w))
        elif proj.weight_scale.size:
            assert not pg.weight_scale.any(), "fixed scales get no gradient"
        if proj.delay_offset.size and spec.delay_offset_mode == "learned":
            errs[f"offset_{key}@{l}"] = _rel(pg.delay_offset, np.array([lr[f"d_{key}"].sum()]))
    return errs


@pytest.mark.parametrize("case", [
    dict(weight_bits="ternary", input_delays="synaptic"),
    dict(weight_bits="ternary", ternary_scales="learned", input_delays="axonal", recurrent="dense",
         recurrent_delays="synaptic"),
    dict(weight_bits="4", input_delays="synaptic", delay_step=2.0, delay_offset=0.5, delay_offset_mode="learned"),
    dict(weight_bits="32", input_delays="axonal", delay_step=1.5, delay_offset=0.25, delay_offset_mode="learned",
         recurrent="sparse", recurrent_density=0.5, recurrent_delays="axonal"),
    dict(weight_bits="ternary", ternary_scales="learned", input_delays="synaptic", recurrent="conv",
         recurrent_delays="axonal", delay_step=1.0, delay_offset=0.5, delay_offset_mode="learned"),
    dict(sizes=(6, 5), weight_bits="ternary", ternary_scales="learned", input_delays="synaptic",
         hidden_delays="axonal", delay_step=2.0, delay_offset=0.5, delay_offset_mode="learned", recurrent="dense",
         recurrent_delays="axonal"),
    dict(sizes=(6, 5), weight_bits="2", input_delays="axonal", hidden_delays="synaptic", delay_step=1.0,
         layers_extra=[{}, {"weight_bits": "8", "delay_step": 2.0, "delay_l2": 0.5}]),
])
@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_quantized_online_equals_bptt_with_straight_through_gradients(case, reset):
    case = dict(case)
    sizes, extra = case.pop("sizes", (6,)), case.pop("layers_extra", None)
    layers = [dict({"n_hidden": n}, **(extra[l] if extra else {})) for l, n in enumerate(sizes)]
    cfg = NetworkConfig(n_inputs=5, n_outputs=3, dt_ms=1.0, tau_mem_ms=5.0, tau_out_ms=8.0, max_delay_steps=6,
                        weight_init_scale=2.5, readout="all", reset=reset, layers=layers, **case)
    net = Network(cfg, seed=40 + len(sizes), batch_size=3, dtype="float64")
    for _, _, proj, spec in net.projection_specs():
        if spec is not None and spec.ternary_scales == "learned" and proj.weight_scale.size:
            proj.weight_scale[:] = proj.weight_scale * np.array([1.3, 0.8])    # alpha != beta
    _small_delays(net)
    net.requantize()
    _effective_is_quantized(net)
    rng = np.random.default_rng(77)
    x, labels = rng.poisson(0.4, size=(30, 3, 5)), rng.integers(0, 3, size=3)
    g, ref = _online_and_bptt(net, x, labels)
    _spiking_everywhere(ref)
    errs = _compare(net, g, ref)               # shadow weights and delays: dE/dWq, dE/dd_hat (STE)
    q_errs = _quantizer_errors(net, g, ref)
    learned = (case.get("ternary_scales") == "learned") + (case.get("delay_offset_mode") == "learned")
    assert len(q_errs) >= learned, q_errs
    errs.update(q_errs)
    assert max(errs.values()) <= TOL, errs
