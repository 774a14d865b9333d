"""Low-bit networks (quantize.py): the quantizers, training on the grid, the bit budget, model files
and streaming of a quantized model.  The gradients' exactness is in test_gradients.py."""

import math

import h5py
import numpy as np
import pytest

from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner
from onlinedelay import quantize as Q
from onlinedelay.config import RunConfig
from onlinedelay.errors import OnlineDelayError
from onlinedelay.io import ModelFileError, load_model, save_model
from onlinedelay.stream import StepResult, StreamRunner
from reference import ref_delay_grid, ref_kbit, ref_ternary
from model_files import edit_model

LOWBIT = dict(n_inputs=6, n_hidden=7, n_outputs=3, max_delay_steps=10, input_delays="synaptic", recurrent="dense",
              recurrent_delays="axonal", weight_bits="ternary", ternary_scales="learned", delay_step=2.0,
              delay_offset=0.5, delay_offset_mode="learned", delay_l2=0.01)


def test_quantizers_follow_their_definitions():
    w = np.random.default_rng(0).normal(0, 1, 200)
    for bits in (2, 4, 8):
        codes, s = Q.kbit_codes(w, bits)
        wq = Q.kbit_weights(codes, s, bits, w.dtype)
        np.testing.assert_allclose(wq, ref_kbit(w, bits), atol=1e-12)
        assert codes.max() <= 2**bits - 1 and (codes.min() == 0 or codes.max() == 2**bits - 1)  # the largest |w| is an end
        assert len(np.unique(wq)) <= 2**bits and np.abs(wq).max() == pytest.approx(np.abs(w).max())
    codes = Q.ternary_codes(w)
    wq = Q.ternary_weights(codes, 0.9, 0.4, w.dtype)
    np.testing.assert_array_equal(wq, ref_ternary(w, 0.9, 0.4)[0])
    assert set(np.unique(codes)) == {-1, 0, 1}
    np.testing.assert_allclose(Q.ternary_fixed_scale(w), np.abs(w)[np.abs(w) > 0.7 * np.abs(w).mean()].mean())
    d = np.random.default_rng(1).uniform(0, 10, 100)
    for offset, step in ((0.0, 1.0), (0.5, 2.0), (1.7, 3.0)):
        dq = Q.quantized_delays(d, offset, step, 10)
        np.testing.assert_allclose(dq, ref_delay_grid(d, offset, step, 10), atol=1e-12)
        levels = Q.delay_levels(offset, step, 10)
        assert len(np.unique(dq)) <= levels and dq.min() >= 0 and dq.max() <= 10
    assert Q.delay_levels(0.0, 5.0, 25) == 6 and Q.delay_levels(0.0, 1.0, 25) == 26


def _train(cfg, samples=3, **learn):
    net = Network(NetworkConfig(**cfg), seed=3, batch_size=2)
    learner = ThreeFactorLearner(net, LearningConfig(lr_weights=0.05, lr_readout=0.05, **learn))
    rng = np.random.default_rng(4)
    for _ in range(samples):
        learner.run_sample(rng.poisson(0.5, size=(25, 2, cfg["n_inputs"])), rng.integers(0, 3, size=2), update=True)
    return net, learner


def _on_grid(net):
    for _, _, proj, spec in net.projection_specs():
        if spec is None:
            continue
        w = proj.shared_weight if proj.weight_of_syn.size else proj.weight
        if spec.weight_bits == "ternary":
            alpha, beta = proj.weight_scale
            assert np.all((w == 0) | (w == alpha) | (w == -beta))
            np.testing.assert_array_equal(w, Q.ternary_weights(Q.ternary_codes(proj.weight_shadow), alpha, beta,
                                                               w.dtype))
        elif spec.weight_bits != "32":
            s, bits = proj.weight_scale[0], int(spec.weight_bits)
            q = (w / s + 1) / 2 * (2**bits - 1)
            np.testing.assert_allclose(q, np.rint(q), atol=1e-3)
        if proj.delay_offset.size:
            k = (proj.delay.astype(float) - proj.delay_offset[0]) / spec.delay_step
            np.testing.assert_allclose(k, np.rint(k), atol=1e-4)


@pytest.mark.parametrize("cfg", [LOWBIT, dict(LOWBIT, weight_bits="4", recurrent="conv"),
                                 dict(LOWBIT, ternary_scales="fixed", delay_offset_mode="fixed", n_layers=2,
                                      hidden_delays="axonal", readout="all")])
def test_quantized_training_moves_the_shadows_and_stays_on_the_grid(cfg):
    before = Network(NetworkConfig(**cfg), seed=3, batch_size=2).params
    net, _ = _train(cfg)
    _on_grid(net)
    after = net.params
    assert np.abs(after.input.weight_shadow - before.input.weight_shadow).max() > 1e-3
    assert np.abs(after.input.delay_shadow - before.input.delay_shadow).max() > 1e-3
    if cfg["delay_offset_mode"] == "learned":
        assert after.input.delay_offset[0] != before.input.delay_offset[0]
        assert not np.array_equal(after.input.weight_scale, before.input.weight_scale)
    else:
        assert after.input.delay_offset[0] == before.input.delay_offset[0]


def test_learn_subsets_freeze_the_other_groups():
    net0 = Network(NetworkConfig(**LOWBIT), seed=3, batch_size=2).params
    net, _ = _train(LOWBIT, learn_weights=False, learn_readout=False)
    np.testing.assert_array_equal(net.params.input.weight_shadow, net0.input.weight_shadow)
    np.testing.assert_array_equal(net.params.input.weight_scale, net0.input.weight_scale)
    np.testing.assert_array_equal(net.params.w_out, net0.w_out)
    assert np.abs(net.params.input.delay_shadow - net0.input.delay_shadow).max() > 1e-3


def test_delay_l2_adds_2_lambda_d_to_the_delay_gradient_at_each_step():
    """SGD on zero loss gradients: one step moves every (shadow) delay by -lr 2 lambda d exactly."""
    for step in (0.0, 2.0):
        cfg = dict(LOWBIT, delay_l2=0.25, delay_step=step, weight_bits="32", recurrent="none",
                   layers=[{}, {"delay_l2": 0.0}], hidden_delays="axonal", readout="all")
        net = Network(NetworkConfig(**cfg), seed=3, dtype="float64")
        learner = ThreeFactorLearner(net, LearningConfig(optimizer="sgd", lr_delays=0.1))
        before = [net.projection("feedforward", l).learned_delay.copy() for l in (0, 1)]
        learner.zero_grad()
        learner.apply()
        np.testing.assert_allclose(net.params.input.learned_delay, before[0] * (1 - 0.1 * 2 * 0.25), rtol=1e-12)
        np.testing.assert_array_equal(net.projection("feedforward", 1).learned_delay, before[1])   # lambda 0


def test_float_models_have_no_shadow_arrays_and_keep_their_file_layout(tmp_path):
    net = Network(NetworkConfig(n_inputs=4, n_hidden=3, n_outputs=2, recurrent="conv", recurrent_delays="axonal"))
    for _, _, proj in net.params.projections():
        assert all(getattr(proj, f).size == 0 for f in ("weight_shadow", "weight_scale", "delay_shadow",
                                                         "delay_offset"))
    names = {name.rsplit("/", 1)[-1] for name, _ in net.params.arrays()}
    assert names == {"indptr", "pre", "weight", "delay", "delay_of_syn", "pre_of_delay", "shared_weight",
                     "weight_of_syn", "w_out", "b_out"}
    save_model(tmp_path / "f.h5", net)
    with h5py.File(tmp_path / "f.h5") as f:
        assert f.attrs["format_version"] == 2 and "weight_code" not in f["params/layers/0/feedforward"]


def test_footprint_counts_bits_per_projection():
    cfg = dict(LOWBIT, recurrent="none", n_inputs=6, n_hidden=7, max_delay_steps=10)
    net = Network(NetworkConfig(**cfg))
    fp = Q.footprint_bits(net)
    e = fp["projections"]["layer1.feedforward"]
    assert e["weights"] == 42 and e["delays"] == 42
    assert e["weight_bits"] == pytest.approx(42 * math.log2(3) + 64)
    assert e["bits_per_delay"] == 3                   # grid 0.5, 2.5, .., 8.5: 5 levels
    assert e["delay_bits"] == 42 * 3 + 32
    assert fp["readout_bits"] == 32 * (3 * 7 + 3)
    assert fp["float_total_bits"] == 32 * (42 + 42 + 24)
    assert fp["total_bits"] < fp["float_total_bits"]
    float_fp = Q.footprint_bits(Network(NetworkConfig(**dict(cfg, weight_bits="32", delay_step=0.0))))
    assert float_fp["total_bits"] == float_fp["float_total_bits"] == fp["float_total_bits"]
    assert "footprint" in Q.format_footprint(fp)


def test_config_refuses_bad_quantizer_values():
    for bad in (dict(weight_bits="3"), dict(ternary_scales="big"), dict(delay_step=-1.0), dict(delay_l2=-0.1),
                dict(delay_step=30.0), dict(delay_offset_mode="x"), dict(layers=[{"weight_bits": "16"}])):
        with pytest.raises(OnlineDelayError):
            NetworkConfig(**bad)
    assert NetworkConfig(weight_bits=4).weight_bits == "4"


def _saved_lowbit(tmp_path, **changes):
    net, learner = _train(dict(LOWBIT, **changes))
    path = tmp_path / "lowbit.h5"
    save_model(path, net, ["a", "b", "c"], learner=learner,
               training={"run": RunConfig(pool=1, n_steps=40).to_dict()})
    return net, path


@pytest.mark.parametrize("bits", ["ternary", "4"])
def test_lowbit_model_round_trips_with_codes(tmp_path, bits):
    net, path = _saved_lowbit(tmp_path, weight_bits=bits)
    loaded = load_model(path)
    for (name, a), (_, b) in zip(net.params.arrays(stored_only=False), loaded.net.params.arrays(stored_only=False)):
        np.testing.assert_array_equal(a, b, err_msg=name)
    x = np.random.default_rng(5).poisson(0.5, size=(20, 6))
    np.testing.assert_array_equal(loaded.net.run(x), net.run(x))
    with h5py.File(path) as f:
        codes = f["params/layers/0/feedforward/weight_code"][()]
    assert codes.dtype == (np.int8 if bits == "ternary" else np.uint8)
    scale = net.params.input.weight_scale
    if bits == "ternary":
        np.testing.assert_array_equal(net.params.input.weight, np.where(codes > 0, scale[0],
                                                                        np.where(codes < 0, -scale[1], 0)))


@pytest.mark.parametrize("field,change", [
    ("weight_code", lambda a: np.where(a == 0, 1, 0).astype(a.dtype)),
    ("weight_shadow", lambda a: -a),
    ("delay_shadow", lambda a: np.clip(a + 1.0, 0, 10)),
    ("weight", lambda a: a * 2),
])
def test_tampered_lowbit_arrays_are_refused_naming_the_field(tmp_path, field, change):
    _, path = _saved_lowbit(tmp_path)
    with edit_model(path) as f:
        name = f"params/layers/0/feedforward/{field}"
        data = change(f[name][()])
        del f[name]
        f[name] = data
    with pytest.raises(ModelFileError, match="params/layers/0/feedforward/(weight|delay)"):
        load_model(path)


def test_missing_shadow_arrays_are_refused(tmp_path):
    _, path = _saved_lowbit(tmp_path)
    with edit_model(path) as f:
        del f["params/layers/0/feedforward/weight_shadow"]
    with pytest.raises(ModelFileError, match="weight_shadow: missing"):
        load_model(path)


def test_stream_runs_the_quantized_model_as_eval_does(tmp_path):
    net, path = _saved_lowbit(tmp_path)
    rng = np.random.default_rng(6)
    times = np.sort(rng.uniform(0, 0.3, 120))
    units = rng.integers(0, 6, 120).astype(np.uint16)
    from onlinedelay.datasets.binning import bin_events, steps_for

    n_steps = steps_for(times.max(), net.config.dt_ms)
    x = bin_events(times, units, net.config.dt_ms, n_steps, 6, 1)
    offline = load_model(path).net.run(x)[:, 0]
    runner = StreamRunner(path, pad_to_steps=0)          # the sample ends at its last event, as x does
    runner.push(times, units)
    runner.finish()
    steps = [r for r in runner.poll() if isinstance(r, StepResult)]
    assert len(steps) == offline.shape[0]
    np.testing.assert_array_equal(np.stack([s.y for s in steps]), offline)
    assert set(np.unique(runner.net.params.input.weight)) <= {0.0, *runner.net.params.input.weight_scale * [1, -1]}


def test_cli_learn_subsets_and_the_sun_lowbit_preset():
    from onlinedelay.cli import OptionError, build_configs

    net, learn, run = build_configs(None, {"arch": "sun-lowbit", "learn": "delays,readout", "delay_step": 1.0})
    assert (learn.learn_weights, learn.learn_delays, learn.learn_readout) == (False, True, True)
    assert run.arch == "sun-lowbit" and net.n_layers == 2 and net.recurrent == "none" and net.readout == "all"
    assert all(s.feedforward.weight_bits == "ternary" and s.feedforward.delays == "axonal" and
               s.feedforward.delay_step == 1.0 and s.feedforward.delay_l2 > 0 for s in net.layer_specs)
    assert net.tau_mem_ms == 2 * net.dt_ms
    with pytest.raises(OptionError, match="--learn 'weights,bias'"):
        build_configs(None, {"learn": "weights,bias"})


def test_info_reports_the_footprint(tmp_path):
    from click.testing import CliRunner

    from onlinedelay.cli import main

    net, path = _saved_lowbit(tmp_path)
    out = CliRunner().invoke(main, ["info", str(path)])
    assert out.exit_code == 0, out.output
    total = Q.footprint_bits(net)["total_bits"]
    assert f"footprint: {total:.0f} bits" in out.output and "layer1.feedforward: 42 weights x ternary" in out.output


def test_killed_and_resumed_lowbit_run_ends_with_identical_shadows(tmp_path):
    """Checkpoints carry the shadow arrays, learned scales and offsets and their Adam moments."""
    from onlinedelay.datasets.hdf5 import write_events_file
    from onlinedelay.train import Trainer

    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0.0, 0.3, 100)) for _ in range(24)]
    units = [rng.integers(0, 700, 100).astype(np.uint16) for _ in range(24)]
    data = write_events_file(tmp_path / "toy.h5", times, units, np.arange(24) % 3, ["a", "b", "c"],
                             speakers=np.arange(24) % 4)
    net = NetworkConfig(n_hidden=8, n_layers=2, input_delays="synaptic", hidden_delays="axonal", readout="all",
                        weight_bits="ternary", ternary_scales="learned", delay_step=2.0, delay_offset_mode="learned",
                        delay_l2=0.01)
    run = RunConfig(dataset=str(data), n_steps=30, batch_size=6, epochs=2, seed=5, checkpoint_every=1)

    class Killed(Exception):
        pass

    def kill(event, seen=[]):                       # noqa: B006 - a counter across calls
        if event["kind"] == "batch":
            seen.append(1)
            if len(seen) == 4:
                raise Killed

    Trainer(net, LearningConfig(), run, tmp_path / "full").run()
    with pytest.raises(Killed):
        Trainer(net, LearningConfig(), run, tmp_path / "killed", progress=kill).run()
    Trainer(net, LearningConfig(), run, tmp_path / "killed").run(resume=True)
    full = load_model(tmp_path / "full" / "last.h5").net.params
    resumed = load_model(tmp_path / "killed" / "last.h5").net.params
    names = [name for name, _ in full.arrays()]
    assert any(n.endswith("delay_offset") for n in names) and any(n.endswith("weight_scale") for n in names)
    for (name, a), (_, b) in zip(full.arrays(), resumed.arrays()):
        np.testing.assert_array_equal(a, b, err_msg=name)
