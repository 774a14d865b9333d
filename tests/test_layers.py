"""Stacks of layers: the forward pass against the float64 reference, presets and options of the
command line, and a deep model downstream (stream, eval, online updates)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner
from onlinedelay.archs import ARCHS
from onlinedelay.cli import main
from onlinedelay.options import OptionError, build_configs
from onlinedelay.config import RunConfig
from onlinedelay.io import load_model, save_model
from onlinedelay.stream import StepResult, StreamRunner
from onlinedelay.train import infer
from reference import DenseModel, ref_forward

DEEP = dict(n_inputs=6, n_outputs=3, max_delay_steps=5, weight_init_scale=2.5, dt_ms=1.0, tau_mem_ms=5.0,
            tau_out_ms=8.0, readout="all")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", [
    dict(layers=[{"n_hidden": 7}, {"n_hidden": 5}], input_delays="synaptic", hidden_delays="axonal",
         recurrent="conv", recurrent_delays="axonal", reset="hard"),
    dict(n_layers=3, n_hidden=6, input_delays="axonal", hidden_delays="synaptic", hidden_density=0.5,
         recurrent="sparse", recurrent_density=0.4, recurrent_delays="synaptic", readout="last"),
    dict(layers=[{"n_hidden": 8, "recurrent": "dense", "reset": "hard", "tau_mem_ms": 3.0},
                 {"n_hidden": 4, "delays": "synaptic", "threshold": 0.7}], input_delays="none"),
])
def test_deep_forward_equals_the_full_history_reference(case, batch):
    cfg = NetworkConfig(**dict(DEEP, **case))
    net = Network(cfg, seed=5, batch_size=batch, dtype="float64")
    x = np.random.default_rng(6).poisson(0.5, size=(40, batch, 6))
    y = net.run(x)
    ref = ref_forward(DenseModel(net), x.astype(float))
    assert all(0 < rec["z"].mean() < 1 for rec in ref["layers"]), "every layer must spike"
    np.testing.assert_allclose(y, ref["y"], rtol=1e-12, atol=1e-12)
    stepped = Network(cfg, seed=5, batch_size=batch, dtype="float64")
    np.testing.assert_array_equal(np.stack([stepped.step(x[t]) for t in range(40)]), y)   # step == run


def test_layer_overrides_and_specs():
    cfg = NetworkConfig(n_inputs=10, n_hidden=20, recurrent="dense", hidden_delays="axonal",
                        layers=[{"n_hidden": 12, "reset": "hard"}, {"recurrent": "conv", "kernel_size": 5}])
    first, second = cfg.layer_specs
    assert cfg.n_layers == 2 and cfg.layer_sizes == (12, 20) and second.n_pre == 12
    assert first.reset == "hard" and second.reset == "soft" and first.feedforward.delays == "synaptic"
    assert second.feedforward.delays == "axonal" and second.recurrent.connectivity == "conv"
    assert NetworkConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    net = Network(cfg, seed=0)
    conv = net.params.layers[1].recurrent
    assert conv.shared_weight.size == 5 and conv.weight.size == 20 * 5 - 6        # zero padding
    assert net.parameter_counts()["layer2.recurrent_weights"] == 5
    assert net.params.w_out.shape == (20, 20)                                   # readout reads the last layer
    with pytest.raises(ValueError, match="layer 2: kernel_size=4 is not allowed; expected an odd"):
        NetworkConfig(n_layers=2, layers=[{}, {"recurrent": "conv", "kernel_size": 4}])
    with pytest.raises(ValueError, match="n_layers=3 is not allowed with 2"):
        NetworkConfig(n_layers=3, layers=[{}, {}])


def test_same_seed_gives_the_same_first_layer_whatever_the_depth():
    one = Network(NetworkConfig(n_inputs=6, n_hidden=5), seed=3)
    two = Network(NetworkConfig(n_inputs=6, n_hidden=5, n_layers=2), seed=3)
    np.testing.assert_array_equal(one.params.input.weight, two.params.input.weight)
    np.testing.assert_array_equal(one.params.input.delay, two.params.input.delay)


def test_arch_presets_and_layer_options_build_the_papers_networks(tmp_path):
    opts = dict.fromkeys(["arch", "layers_option", "delay_init_range"])
    net, learn, run = build_configs(None, dict(opts, arch="conv-delrec", layers_option="4"))
    assert net.n_layers == 4 and run.arch == "conv-delrec"
    assert all(s.recurrent.connectivity == "conv" and s.recurrent.delays == "axonal" and s.reset == "hard"
               for s in net.layer_specs)
    assert net.delay_init == "range" and net.delay_init_range == (10.0, 30.0)
    counts = Network(net, seed=0).parameter_counts()
    assert [counts[f"layer{l}.recurrent_weights"] for l in range(1, 5)] == [3, 3, 3, 3]
    delrec, _, _ = build_configs(None, dict(opts, arch="delrec", reset="soft"))
    assert delrec.recurrent == "dense" and delrec.reset == "soft" and delrec.n_layers == 2
    sized, _, _ = build_configs(None, dict(opts, layers_option="64,32", delay_init_range="2,4", delay_init="range"))
    assert sized.layer_sizes == (64, 32) and sized.delay_init_range == (2.0, 4.0)
    toml = tmp_path / "net.toml"
    toml.write_text('arch = "delrec"\n[network]\nreadout = "last"\n[[layer]]\nn_hidden = 16\n'
                    '[[layer]]\nn_hidden = 8\nrecurrent = "conv"\n')
    from_file, _, run = build_configs(toml, opts)
    assert from_file.layer_sizes == (16, 8) and from_file.readout == "last" and run.arch == "delrec"
    assert [s.recurrent.connectivity for s in from_file.layer_specs] == ["dense", "conv"]
    for bad, match in (("0", "--layers"), ("a,b", "--layers")):
        with pytest.raises(OptionError, match=match):
            build_configs(None, dict(opts, layers_option=bad))
    assert set(ARCHS) == {"three-factor", "delrec", "conv-delrec", "sun-lowbit"}


def test_every_arch_trains_online_from_the_command_line(tmp_path):
    for arch in ARCHS:
        out = tmp_path / arch
        result = CliRunner().invoke(main, ["train", "--arch", arch, "--hidden", "8", "--epochs", "1",
                                           "--max-samples", "32", "--n-steps", "30", "--out", str(out), "--json",
                                           "--quiet"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        config = json.loads((out / "config.json").read_text())
        assert config["run"]["arch"] == arch and summary["last"]["epoch"] == 1
        info = CliRunner().invoke(main, ["info", str(out / "best.h5")])
        assert info.exit_code == 0 and "140 inputs -> 8 LIF" in info.output, info.output


def test_a_deep_model_streams_exactly_its_offline_outputs_and_adapts(tmp_path):
    cfg = NetworkConfig(n_inputs=140, n_layers=2, n_hidden=12, n_outputs=3, max_delay_steps=6,
                        recurrent="conv", recurrent_delays="axonal", hidden_delays="synaptic", readout="all")
    net = Network(cfg, seed=1)
    model = tmp_path / "deep.h5"
    save_model(model, net, ["a", "b", "c"], training={"run": RunConfig(pool=5, n_steps=30).to_dict()})
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 0.25, 400))
    u = rng.integers(0, 700, 400).astype(np.uint16)
    runner = StreamRunner(model)
    runner.push(t, u)
    runner.finish()
    steps = [r for r in runner.poll() if isinstance(r, StepResult)]
    x = np.zeros((len(steps), 140), np.int64)
    np.add.at(x, (np.floor(t / 0.01 + 1e-9).astype(int), u // 5), 1)
    offline = load_model(model).net.run(x)[:, 0]
    np.testing.assert_array_equal(np.stack([s.y for s in steps]), offline)
    assert steps[-1].vote == infer(load_model(model).net, x[:, None, :])[0][0]
    adapt = StreamRunner(model, adapt=True, learning_config=LearningConfig(update="online", update_every_steps=5))
    before = [a.copy() for _, a, _ in adapt.net.params.learned()]
    adapt.set_label(1)
    adapt.push(t, u)
    adapt.finish()
    adapt.poll()
    moved = [not np.array_equal(a, b) for (_, a, _), b in zip(adapt.net.params.learned(), before)]
    assert sum(moved) >= 6, "every layer's weights and the readout must learn"


def test_one_prediction_rule_for_training_accuracy_and_eval():
    """run_sample's 'correct' and infer's predictions use the softmax summed from loss_start_step."""
    cfg = NetworkConfig(n_inputs=6, n_hidden=10, n_outputs=3, weight_init_scale=3.0, n_layers=2, readout="all")
    net = Network(cfg, seed=4, batch_size=8)
    x = np.random.default_rng(4).poisson(0.5, size=(30, 8, 6))
    labels = np.arange(8) % 3
    for start in (0, 20):
        learner = ThreeFactorLearner(net, LearningConfig(loss_start_step=start, lr_weights=0.0, lr_delays=0.0,
                                                         lr_readout=0.0))
        correct = learner.run_sample(x, labels)["correct"]
        preds, _ = infer(net, x, loss_start_step=start)
        np.testing.assert_array_equal(correct, preds == labels)
