"""Forward-pass plumbing, invariants of learning, memory, snapshots, and a task that needs delays."""

import tracemalloc
import warnings

import numpy as np
import pytest

from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner, dense_mask, dense_weights
import pull_kernels as PK


def _delay_line(max_delay=5, dtype="float64"):
    """One input, one hidden neuron per delay 0..max, weight 1, no leak, no spikes: v^t = x^(t-d_j)."""
    cfg = NetworkConfig(n_inputs=1, n_hidden=max_delay + 1, n_outputs=2, dt_ms=1.0, tau_mem_ms=1e-3,
                        threshold=1e9, max_delay_steps=max_delay, input_delays="synaptic")
    net = Network(cfg, seed=0, dtype=dtype)
    net.params.input.weight[:] = 1.0
    net.set_delays("input", np.arange(max_delay + 1, dtype=float))
    return net


def test_ring_delivers_each_spike_once_exactly_d_steps_later_across_wraparound():
    net = _delay_line()
    ThreeFactorLearner(net)          # enlarges the ring: wrap-around happens at n_slots > max delay + 1
    T = 5 * net.n_slots + 3
    x = np.random.default_rng(0).integers(0, 4, size=(T, 1))   # counts > 1 included
    v = np.empty((T, net.config.n_hidden))
    net.reset()
    for t in range(T):
        net.step(x[t])
        v[t] = net.state.v[:, 0]
    for d in range(net.config.n_hidden):
        expected = np.concatenate([np.zeros(d), x[: T - d, 0]])
        np.testing.assert_array_equal(v[:, d], expected)
        assert v[:, d].sum() == x[: T - d, 0].sum()     # nothing lost, nothing duplicated


@pytest.mark.parametrize("mode", ["synaptic", "axonal"])
def test_zero_delays_reproduce_the_delay_free_network_bit_exactly(mode):
    base = dict(n_inputs=6, n_hidden=5, n_outputs=3, weight_init_scale=3.0, recurrent=True, density=0.7)
    plain = Network(NetworkConfig(input_delays="none", **base), seed=3)
    delayed = Network(NetworkConfig(input_delays=mode, recurrent_delays=mode, **base), seed=3)
    for which in ("input", "recurrent"):
        delayed.set_delays(which, np.zeros_like(delayed.projection(which).delay))
    np.testing.assert_array_equal(plain.params.input.weight, delayed.params.input.weight)
    x = np.random.default_rng(1).poisson(0.5, size=(50, 6))
    y_plain, y_delayed = plain.run(x), delayed.run(x)
    assert plain.state.z.sum() >= 0 and np.abs(y_plain).max() > 0
    np.testing.assert_array_equal(y_plain, y_delayed)


def test_constant_delay_shifts_the_hidden_input():
    base = dict(n_inputs=4, n_hidden=3, n_outputs=2, weight_init_scale=3.0, max_delay_steps=8)
    plain = Network(NetworkConfig(input_delays="none", **base), seed=2, dtype="float64")
    shifted = Network(NetworkConfig(input_delays="axonal", **base), seed=2, dtype="float64")
    shifted.set_delays("input", np.full(4, 5.0))
    x = np.random.default_rng(2).poisson(0.6, size=(40, 4))
    y_plain = plain.run(x)
    y_shift = shifted.run(np.concatenate([x, np.zeros((5, 4), int)]))
    np.testing.assert_array_equal(y_shift[5:], y_plain)


def _trained(learn, labels=1, steps=3, density=1.0, seed=0):
    cfg = NetworkConfig(n_inputs=6, n_hidden=5, n_outputs=3, weight_init_scale=3.0, density=density,
                        recurrent=True, input_delays="synaptic", recurrent_delays="axonal")
    net = Network(cfg, seed=seed)
    before = net.snapshot()["params"]
    learner = ThreeFactorLearner(net, learn)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        learner.run_sample(rng.poisson(0.5, size=(30, 2, 6)), np.full(2, labels), update=True)
    return net, before


def _params_equal(a, b):
    return all(np.array_equal(x, y) for (_, x), (_, y) in zip(a.arrays(stored_only=False), b.arrays(stored_only=False)))


@pytest.mark.parametrize("update", ["accumulate", "online"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_zero_learning_rate_or_zero_error_leaves_parameters_bit_identical(update, optimizer):
    zero_lr = LearningConfig(update=update, optimizer=optimizer, lr_weights=0.0, lr_delays=0.0, lr_readout=0.0)
    net, before = _trained(zero_lr)
    assert _params_equal(net.params, before)
    net, before = _trained(LearningConfig(update=update, optimizer=optimizer), labels=-1)   # no target
    assert _params_equal(net.params, before)
    net, before = _trained(LearningConfig(update=update, optimizer=optimizer))               # the control
    assert not _params_equal(net.params, before)


def test_masked_synapses_never_carry_current_or_change():
    net, before = _trained(LearningConfig(lr_weights=0.1, lr_delays=1.0), density=0.3, steps=5)
    n_in = net.config.n_inputs
    mask = dense_mask(net.params.input, n_in)
    assert 0 < mask.mean() < 0.5
    np.testing.assert_array_equal(dense_mask(before.input, n_in), mask)
    w_after = dense_weights(net.params.input, n_in)
    assert (w_after[~mask] == 0).all()
    assert not np.array_equal(w_after[mask], dense_weights(before.input, n_in)[mask])
    # a masked input channel feeds no current: drive only inputs unconnected to neuron 0
    net.params.recurrent.weight[:] = 0.0      # (isolate the input projection)
    def current_into_neuron0(channels):
        net.reset(1)
        x = np.zeros(n_in, int)
        x[channels] = 5
        seen = []
        for _ in range(net.config.max_delay_steps + 2):
            net.step(x)
            seen.append(net.state.current[0, 0])
        return np.array(seen)

    assert (current_into_neuron0(np.nonzero(~mask[0])[0]) == 0).all()
    assert (current_into_neuron0(np.nonzero(mask[0])[0]) != 0).any()     # the control
    assert not np.diag(dense_mask(net.params.recurrent, net.config.n_hidden)).any()   # no autapses


def test_delays_stay_in_bounds_and_clipped_delays_are_counted_not_warned():
    cfg = NetworkConfig(n_inputs=6, n_hidden=5, n_outputs=3, weight_init_scale=3.0, recurrent=True,
                        input_delays="synaptic", recurrent_delays="axonal")
    net = Network(cfg, seed=0)
    learner = ThreeFactorLearner(net, LearningConfig(optimizer="sgd", lr_delays=1e4))
    rng = np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clipped = [learner.run_sample(rng.poisson(0.5, size=(30, 2, 6)), np.full(2, 1), update=True)
                   and learner.clipped_delays for _ in range(4)]
    assert not [w for w in caught if "clipped" in str(w.message)]
    assert 0 < clipped[0] <= clipped[-1] == learner.clipped_delays
    for proj in (net.params.input, net.params.recurrent):
        assert proj.delay.min() >= 0 and proj.delay.max() <= net.config.max_delay_steps
        np.testing.assert_array_equal(proj.delay_steps, np.floor(proj.delay[proj.delay_of_syn] + 0.5))


def _nbytes(tup):
    return sum(_nbytes(a) if isinstance(a, tuple) else a.nbytes for a in tup)


def _state_bytes(net, learner):
    return sum(_nbytes(tup) for tup in (net.state, learner.state, learner.grads))


def _flat(tup):
    return [b for a in tup for b in (_flat(a) if isinstance(a, tuple) else [a])]


def test_memory_does_not_grow_with_the_number_of_steps():
    cfg = NetworkConfig(n_inputs=20, n_hidden=16, n_outputs=3, input_delays="synaptic", recurrent=True)
    net = Network(cfg, seed=0)
    learner = ThreeFactorLearner(net, LearningConfig(update="online", lr_delays=0.0))
    x = np.random.default_rng(0).poisson(0.3, size=(20,))
    bytes_before = _state_bytes(net, learner)

    def run(n_steps):
        net.reset()
        learner.reset()
        tracemalloc.start()
        for _ in range(n_steps):
            net.step(x)
            learner.step(1)
            learner.apply()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    run(5)   # compile first
    # both lengths span several learner chunks (their transient buffers are bounded by the chunk)
    short, long = run(3 * learner.chunk_steps), run(20 * learner.chunk_steps)
    assert _state_bytes(net, learner) == bytes_before
    assert long - short < 16 * 1024, (short, long)


def test_snapshot_restore_is_bit_identical():
    cfg = NetworkConfig(n_inputs=5, n_hidden=6, n_outputs=2, weight_init_scale=3.0, recurrent=True)
    net = Network(cfg, seed=4)
    x = np.random.default_rng(4).poisson(0.7, size=(40, 5))
    for t in range(20):
        net.step(x[t])
    snap = net.snapshot()
    first = np.array([net.step(x[t]) for t in range(20, 40)])
    for t in range(20, 30):       # wander off, then come back
        net.step(x[t] * 2)
    net.restore(snap)
    second = np.array([net.step(x[t]) for t in range(20, 40)])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("bad,match", [
    (np.array([[0, -1, 0, 0, 0]]), "whole numbers >= 0"),
    (np.array([0.5, 0, 0, 0, 0]), "whole numbers >= 0"),
    (np.array([np.nan, 0, 0, 0, 0]), "whole numbers >= 0"),
    (np.zeros(4), "shape"),
    (np.array(["a"] * 5), "dtype"),
])
def test_bad_input_is_refused_with_a_clear_message(bad, match):
    net = Network(NetworkConfig(n_inputs=5, n_hidden=3, n_outputs=2), seed=0)
    net.step(np.ones(5, int))
    before = net.snapshot()["state"]
    with pytest.raises(ValueError, match=match):
        net.step(bad)
    for a, b in zip(_flat(net.state), _flat(before)):     # nothing written, not even into the ring
        np.testing.assert_array_equal(a, b)


def test_bad_labels_delays_and_configs_are_refused():
    net = Network(NetworkConfig(n_inputs=5, n_hidden=3, n_outputs=2), seed=0)
    learner = ThreeFactorLearner(net)
    with pytest.raises(ValueError, match="label 2 is outside"):
        learner.run_sample(np.zeros((5, 5), int), 2)
    with pytest.raises(ValueError, match=r"input delay \[1\] = 99.0 is outside \[0, 25\]"):
        d = net.params.input.delay.copy()
        d[1] = 99
        net.set_delays("input", d)
    with pytest.raises(ValueError, match="input_delays='dendritic' is not allowed"):
        NetworkConfig(input_delays="dendritic")
    with pytest.raises(ValueError, match="density=0 is not allowed"):
        NetworkConfig(density=0)
    with pytest.raises(ValueError, match="loss_start_step=10 leaves no step"):
        ThreeFactorLearner(net, LearningConfig(loss_start_step=10)).run_sample(np.zeros((5, 5), int), 1)
    with pytest.raises(ValueError, match="unknown field"):
        NetworkConfig.from_dict({"n_hiddne": 3})


def test_config_round_trips_through_a_dict():
    cfg = NetworkConfig(n_hidden=7, reset="hard", input_delays="axonal")
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    lc = LearningConfig(feedback="random", update="online")
    assert LearningConfig.from_dict(lc.to_dict()) == lc


def test_exact_and_euler_decays():
    exact = NetworkConfig(dt_ms=10.0, tau_mem_ms=10.05)
    euler = NetworkConfig(dt_ms=10.0, tau_mem_ms=10.05, discretisation="euler")
    assert abs(exact.decay_mem - 0.3697) < 1e-3 and abs(euler.decay_mem - 0.004975) < 1e-5
    slow = NetworkConfig(dt_ms=1.0, tau_mem_ms=20.0)
    assert abs(slow.decay_mem - 0.9512) < 1e-4
    assert slow.replace(discretisation="euler").decay_mem == 0.95


# -- a task that needs delays ------------------------------------------------------------------
def _coincidence_data(rng, n, k, T=40):
    """Class 1: channel 0 fires k steps before channel 1; class 0: the reverse order.  Random onset."""
    x = np.zeros((T, n, 2), np.int64)
    labels = rng.integers(0, 2, n)
    onset = rng.integers(0, 12, n)
    for b in range(n):
        first, second = (0, 1) if labels[b] == 1 else (1, 0)
        x[onset[b], b, first] = 1
        x[onset[b] + k, b, second] = 1
    return x, labels


def _coincidence_net(delays, seed):
    # no membrane memory (tau << dt): the neuron fires only when both spikes arrive in the same step
    cfg = NetworkConfig(n_inputs=2, n_hidden=1, n_outputs=2, dt_ms=1.0, tau_mem_ms=0.01, tau_out_ms=20.0,
                        max_delay_steps=10, input_delays=delays, delay_init="zero")
    return Network(cfg, seed=seed, dtype="float64")


@pytest.mark.parametrize("mode", ["synaptic", "axonal"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delays_learn_a_coincidence_that_weights_cannot(mode, seed):
    k = 3
    net = _coincidence_net(mode, seed)
    net.params.input.weight[:] = 0.6                 # each spike alone is below threshold, both together above
    net.params.w_out[:] = [[-1.0], [1.0]]            # a hidden spike votes for class 1
    learner = ThreeFactorLearner(net, LearningConfig(lr_delays=0.2, learn_weights=False, learn_readout=False,
                                                     loss_start_step=20))
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # delay 1 is pushed against 0 and clipped
        for _ in range(60):
            learner.run_sample(*_coincidence_data(rng, 16, k), update=True)
    d = net.params.input.delay
    assert abs((d[0] - d[1]) - k) <= 1.0, d
    x, labels = _coincidence_data(np.random.default_rng(100 + seed), 200, k)
    assert learner.run_sample(x, labels)["correct"].mean() >= 0.95
    np.testing.assert_array_equal(net.params.input.weight, [0.6, 0.6])   # weights really frozen

    # weights-only, everything else learnable: the hidden spike train carries no class information
    plain = _coincidence_net("none", seed)
    plain_learner = ThreeFactorLearner(plain, LearningConfig(lr_weights=0.05, lr_readout=1e-2, loss_start_step=20))
    for _ in range(60):
        plain_learner.run_sample(*_coincidence_data(rng, 16, k), update=True)
    assert plain_learner.run_sample(x, labels)["correct"].mean() <= 0.65


def test_every_kernel_path_stays_in_bounds(tmp_path):
    """Kernels skip bounds checks for speed; run every path once with numba's bounds checking on."""
    import os
    import subprocess
    import sys

    script = """
import numpy as np, warnings
warnings.simplefilter("ignore")
from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner
x = np.random.default_rng(0).poisson(1.0, size=(12, 3, 4))
for threads in (1, 2):
    for reset in ("soft", "hard"):
        for mode in ("none", "synaptic", "axonal"):
            cfg = NetworkConfig(n_inputs=4, n_hidden=5, n_outputs=2, max_delay_steps=3, reset=reset,
                                input_delays=mode, recurrent=True, recurrent_delays=mode,
                                weight_init_scale=3.0, density=0.6)
            net = Network(cfg, seed=1, batch_size=3, dtype="float64", threads=threads)
            learner = ThreeFactorLearner(net, LearningConfig(update="online", update_every_steps=3))
            learner.run_sample(x, np.array([0, 1, 1]), update=True)
            learner.run_sample(x[:, :1], np.array([1]), update=True)
            net.reset(1)
            for t in range(12):               # batch 1: whole steps in one kernel (wrap-around, spikes)
                net.step(x[t, 0])
            net.parameters_changed()          # ... and the step-by-step path while pulling
            net.step(x[0, 0].astype(np.uint8))
            net.reset(32)                     # dense batch: pulled steps
            learner.run_sample(np.random.default_rng(1).poisson(3.0, size=(12, 32, 4)), np.zeros(32, int), update=True)
        # two layers, conv recurrence, delays between layers, the readout reading both
        deep = NetworkConfig(n_inputs=4, n_outputs=2, max_delay_steps=3, reset=reset, n_layers=2, n_hidden=5,
                             input_delays="synaptic", hidden_delays="axonal", recurrent="conv",
                             recurrent_delays="synaptic", readout="all", weight_init_scale=3.0)
        net = Network(deep, seed=1, batch_size=3, dtype="float64", threads=threads)
        ThreeFactorLearner(net, LearningConfig(update="online", update_every_steps=3)).run_sample(
            x, np.array([0, 1, 1]), update=True)
print("in bounds")
"""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "in bounds", out.stderr[-3000:]


def test_learner_snapshot_restore_mid_sample_is_bit_identical():
    cfg = NetworkConfig(n_inputs=5, n_hidden=6, n_outputs=2, weight_init_scale=3.0, input_delays="axonal",
                        recurrent=True, recurrent_delays="synaptic")
    net = Network(cfg, seed=2, dtype="float64")
    learner = ThreeFactorLearner(net, LearningConfig(update="online", update_every_steps=4))
    x = np.random.default_rng(2).poisson(0.7, size=(40, 5))
    net.reset()
    learner.reset()

    def advance(steps):
        for t in steps:
            net.step(x[t])
            learner.step(1)
            if t % 4 == 3:
                learner.apply()

    advance(range(17))
    snaps = net.snapshot(), learner.snapshot()
    advance(range(17, 40))
    learner.flush()
    first = (net.params.input.delay.copy(), net.params.recurrent.weight.copy(), learner.grads.d_in.copy())
    net.restore(snaps[0])
    learner.restore(snaps[1])
    advance(range(17, 40))
    learner.flush()
    for a, b in zip(first, (net.params.input.delay, net.params.recurrent.weight, learner.grads.d_in)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(first[2]).max() > 0


# -- event-driven forward current == the pull model ----------------------------------------------------
def _pull_current(net):
    """Oracle: the pull model's current at the step just taken, read from the network's own rings."""
    s, p, t = net.state, net.params, net.t - 1
    cur = np.zeros_like(s.current)
    PK.delayed_current(s.hist_in, t, p.input.indptr, p.input.pre, p.input.delay_steps, p.input.weight, cur)
    if net.config.recurrent != "none":
        PK.delayed_current(s.hist_rec, t, p.recurrent.indptr, p.recurrent.pre, p.recurrent.delay_steps,
                          p.recurrent.weight, cur)
    return cur


def _pull_run(net, x):
    """Oracle: a whole sample through the old pull forward pass (fresh rings, K.delayed_current)."""
    from onlinedelay import kernels as K

    c, p, dt, n = net.config, net.params, net.dtype, net.n_slots
    B = x.shape[1]
    hin, hrec = np.zeros((n, c.n_inputs, B), dt), np.zeros((n, c.n_hidden, B), dt)
    v, z, decay = (np.zeros((c.n_hidden, B), dt) for _ in range(3))
    y = np.zeros((c.n_outputs, B), dt)
    out = []
    for t in range(x.shape[0]):
        cur = np.zeros((c.n_hidden, B), dt)
        hin[t % n] = x[t].T
        PK.delayed_current(hin, t, p.input.indptr, p.input.pre, p.input.delay_steps, p.input.weight, cur)
        if c.recurrent:
            hrec[t % n] = z
            PK.delayed_current(hrec, t, p.recurrent.indptr, p.recurrent.pre, p.recurrent.delay_steps,
                              p.recurrent.weight, cur)
        K.lif_step(cur, c.decay_mem, c.input_gain, c.threshold, c.reset == "hard", v, z, decay)
        K.readout_step(z, p.w_out, p.b_out, c.decay_out, c.readout_gain, y)
        out.append(y.T.copy())
    return np.array(out)


def _assert_current(got, want, dtype, exact, what):
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=what)
    elif dtype == "float64":
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())), err_msg=what)


FORWARD_NETS = {   # (input delays, recurrent delays or None without recurrence)
    "none": ("none", None), "synaptic": ("synaptic", None), "axonal": ("axonal", None),
    "rec-none": ("none", "none"), "rec-synaptic": ("synaptic", "axonal"), "rec-axonal": ("axonal", "synaptic"),
}


@pytest.mark.parametrize("change", ["none", "set_delays", "weights", "learner", "learner-weights"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch", [1, 5, 32])
@pytest.mark.parametrize("density", [1.0, 0.3])
@pytest.mark.parametrize("net_kind", list(FORWARD_NETS))
def test_event_driven_current_equals_the_pull_model(net_kind, density, batch, dtype, change):
    """The pushed current == K.delayed_current on the same rings at every step, across wrap-around, with
    counts > 1, pulled (dense) steps, and weights / delays changed in the middle of the sample."""
    inp, rec = FORWARD_NETS[net_kind]
    cfg = NetworkConfig(n_inputs=6, n_hidden=7, n_outputs=3, max_delay_steps=4, input_delays=inp,
                        recurrent=rec is not None, recurrent_delays=rec or "none", weight_init_scale=3.0,
                        density=density, recurrent_density=density)
    net = Network(cfg, seed=3, batch_size=batch, dtype=dtype)
    learner = None
    if change.startswith("learner"):              # "learner-weights": only apply()'s parameters_changed() tells
        learner = ThreeFactorLearner(net, LearningConfig(update="online", update_every_steps=3, optimizer="sgd",
                                                         lr_weights=0.5, lr_delays=50.0, lr_readout=0.5,
                                                         learn_delays=change == "learner"))
    n = net.n_slots
    T = 4 * n + 3                                  # several wrap-arounds of the rings
    rng = np.random.default_rng(7)
    x = rng.poisson(0.6, size=(T, batch, 6))
    x[::5] = rng.poisson(3.0, size=x[::5].shape)   # dense bursts: pulled steps at batch 32
    x[T // 2 - 2] = 0                              # a silent step
    labels = rng.integers(0, 3, size=batch)
    exact = inp == "none" and rec in (None, "none")
    change_at = {T // 3, T // 3 + 1, T // 3 + 3, T // 2 + 4}   # overlapping windows of spikes in flight
    params_before = net.snapshot()["params"]
    pulled_steps = 0
    net.reset()
    if learner is not None:
        learner.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # clipped delays
        for t in range(T):
            if t in change_at and change in ("set_delays", "weights"):
                if change == "set_delays" and net.params.input.delay.size:
                    for which in ("input", "recurrent"):
                        d = net.projection(which).delay
                        net.set_delays(which, rng.uniform(0, cfg.max_delay_steps, d.size))
                else:
                    for proj in (net.params.input, net.params.recurrent):
                        proj.weight[:] = rng.normal(0.0, 1.0, proj.weight.size)
                    net.parameters_changed()
            y = net.step(x[t])
            pulled_steps += int(net.state.pulled_in[t % n])
            _assert_current(net.state.current, _pull_current(net), dtype, exact, f"current at step {t}")
            if learner is not None:
                learner.step(labels)
                if (t + 1) % 3 == 0:
                    learner.apply()
    assert np.isfinite(y).all() and np.abs(net.state.current).max() > 0
    if batch == 1 or change == "none":             # pushed, but the dense bursts at batch 32 (cheaper to pull)
        assert (pulled_steps > 0) == (batch == 32)
    if batch == 32:
        assert pulled_steps > 0
    if change != "none":                           # the changes really changed the forward pass
        has_delays = net.params.input.delay.size > 0
        pairs = list(zip((net.params.input, net.params.recurrent), (params_before.input, params_before.recurrent)))
        if change != "set_delays" or not has_delays:
            assert all(not np.array_equal(a.weight, b.weight) for a, b in pairs if a.weight.size)
        if change in ("set_delays", "learner") and has_delays:
            assert not np.array_equal(net.params.input.delay_steps, params_before.input.delay_steps)
    elif exact or dtype == "float64":              # the whole sample against the old forward pass
        y_push, y_pull = net.run(x), _pull_run(net, x)
        if exact:
            np.testing.assert_array_equal(y_push, y_pull)
        else:
            np.testing.assert_allclose(y_push, y_pull, rtol=1e-10, atol=1e-12)


def test_pushed_spikes_follow_a_delay_change_in_flight():
    """A spike in flight when its delay changes arrives at its new delay (pull semantics), or at once."""
    net = _delay_line(max_delay=5)
    d = net.params.input.delay.copy()
    net.step([1])                                  # one spike at t = 0, in flight on every line
    net.step([0])
    net.set_delays("input", d[::-1])               # line j now has delay 5 - j
    seen = []
    for _ in range(6):
        net.step([0])
        seen.append(net.state.current[:, 0].copy())
    seen = np.array(seen)                          # steps 2..7
    for j in range(6):
        new_delay = 5 - j
        expected = np.zeros(6)
        if new_delay >= 2:                         # still in the future: arrives at t = new_delay
            expected[new_delay - 2] = 1.0
        np.testing.assert_array_equal(seen[:, j], expected, err_msg=f"line {j}")


@pytest.mark.parametrize("max_delay, target_dtype", [(24, np.int32), (4, np.uint16)])
@pytest.mark.parametrize("batch", [1, 3])
def test_push_targets_wide_and_narrow_equal_the_pull_model(max_delay, target_dtype, batch):
    """(max_delay + 1) x n_hidden above 2^16 takes int32 push targets, below uint16: both == the pull."""
    cfg = NetworkConfig(n_inputs=3, n_hidden=2700, n_outputs=2, max_delay_steps=max_delay, input_delays="synaptic",
                        weight_init_scale=3.0)
    net = Network(cfg, seed=0, batch_size=batch, dtype="float64")
    assert net._events[0][0].target.dtype == target_dtype
    d = net.params.input.delay
    d[:3] = [0.0, max_delay, max_delay - 0.4]            # the largest targets
    net.set_delays("input", d)
    x = np.random.default_rng(0).poisson(1.0, size=(2 * max_delay + 5, batch, 3))
    net.reset()
    for t in range(x.shape[0]):
        net.step(x[t])
        _assert_current(net.state.current, _pull_current(net), "float64", False, f"step {t}")
    assert np.abs(net.state.current).max() > 0


@pytest.mark.parametrize("recurrent", [False, True])
def test_in_place_weights_act_after_parameters_changed_mid_sample_and_after_reset(recurrent):
    """The push reads copies of the weights: a weight written in place mid-sample acts at the next step
    once parameters_changed() is called (spikes in flight too); between samples reset() picks it up."""
    net = _delay_line(max_delay=3)
    if recurrent:                                  # the recurrent copies follow the same rules
        cfg = NetworkConfig(n_inputs=3, n_hidden=4, n_outputs=2, max_delay_steps=3, input_delays="synaptic",
                            recurrent=True, recurrent_delays="synaptic", weight_init_scale=4.0)
        net = Network(cfg, seed=2, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(12, net.config.n_inputs))
    projections = (net.params.input, net.params.recurrent)

    def step_checked(t):
        net.step(x[t])
        _assert_current(net.state.current, _pull_current(net), "float64", False, f"step {t}")

    net.reset()
    for t in range(5):
        step_checked(t)
    for proj in projections:                       # mid-sample: in place, then declared
        proj.weight[...] *= 2.0
    net.parameters_changed()
    for t in range(5, 12):
        step_checked(t)
    before = net.state.current.copy()
    # acts at once: a delay-0 line sees the new weight at the very next step
    if not recurrent:
        net.reset()
        net.step([1])
        assert net.state.current[0, 0] == 2.0
        net.params.input.weight[0] = 5.0
        net.parameters_changed()
        net.step([1])
        assert net.state.current[0, 0] == 5.0 and net.state.current[1, 0] == 2.0   # line 1: the t = 0 spike, pulled
    # between samples: written in place, no call; reset() (and run(), which resets) picks it up
    for proj in projections:
        proj.weight[:] = rng.normal(0.0, 2.0, proj.weight.size)
    net.reset()
    for t in range(12):
        step_checked(t)
    for proj in projections:
        proj.weight[...] *= -1.0
    y = net.run(x)
    net.reset()
    for t in range(12):
        step_checked(t)
    np.testing.assert_array_equal(net.state.y.T, y[-1])
    assert not np.array_equal(before, net.state.current)
