"""Train / eval / info from the command line and the training loop's guarantees."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from onlinedelay.cli import main
from onlinedelay.config import LearningConfig, NetworkConfig, RunConfig
from onlinedelay.datasets.hdf5 import write_events_file
from onlinedelay.io import ModelFileError, load_model
from onlinedelay.train import DivergenceError, Trainer
from model_files import edit_model

NAMES = ["alpha", "beta", "gamma"]


def _write(path, n, seed, names=NAMES, order=None):
    """Learnable toy data: class k fires in its own channel band and time window; 4 speakers."""
    rng = np.random.default_rng(seed)
    times, units, labels, speakers = [], [], [], []
    for s in range(n):
        k = int(rng.integers(0, len(names)))
        t = np.sort(rng.uniform(0.02 + 0.08 * k, 0.15 + 0.08 * k, 200))
        u = rng.normal(300 + 100 * k, 30, 200).clip(0, 699).astype(np.uint16)
        times.append(t)
        units.append(u)
        labels.append(k)
        speakers.append(s % 4)
    labels = np.array(labels)
    if order is not None:                          # same classes, another label order in extra/keys
        names = [names[i] for i in order]
        labels = np.array([order.index(k) for k in labels])
    write_events_file(path, times, units, labels, names, speakers=np.array(speakers))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return {"train": _write(root / "toy_train.h5", 48, 0), "test": _write(root / "toy_test.h5", 24, 1),
            "root": root}


SMALL = ["--hidden", "16", "--epochs", "2", "--batch-size", "8", "--n-steps", "40", "--seed", "3"]


def _train(toy, out, *extra):
    result = CliRunner().invoke(main, ["train", "--dataset", str(toy["train"]), "--out", str(out), "--quiet",
                                       "--json", *SMALL, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_train_writes_every_artefact_and_eval_info_read_them(toy, tmp_path):
    summary = _train(toy, tmp_path / "run", "--delays", "synaptic")
    for name in ("config.json", "metrics.jsonl", "best.h5", "last.h5", "checkpoint.h5"):
        assert (tmp_path / "run" / name).is_file(), name
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["seed"] == 3 and config["version"] and config["network"]["n_hidden"] == 16
    assert config["class_names"] == NAMES and config["network"]["n_inputs"] == 140
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert {"train_loss", "train_accuracy", "valid_accuracy", "seconds", "samples_per_s",
            "mean_input_delay_steps"} <= set(lines[0])
    assert summary["last"]["epoch"] == 2 and summary["test_accuracy"] is None

    result = CliRunner().invoke(main, ["eval", "--model", str(tmp_path / "run" / "best.h5"),
                                       "--dataset", str(toy["test"]), "--json"])
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["n_samples"] == 24
    assert np.array(ev["confusion"]).shape == (3, 3) and np.array(ev["confusion"]).sum() == 24
    assert ev["synops_per_sample"] > 0 and ev["class_names"] == NAMES

    result = CliRunner().invoke(main, ["info", str(tmp_path / "run" / "best.h5")])
    assert result.exit_code == 0, result.output
    assert "140 inputs -> 16 LIF (soft reset; in: dense, synaptic delays) -> 3 readout" in result.output
    assert "input delays (synaptic)" in result.output


def test_learning_happens_on_the_toy_task(toy, tmp_path):
    summary = _train(toy, tmp_path / "run", "--epochs", "6", "--lr-weights", "0.01", "--delays", "none")
    ev = json.loads(CliRunner().invoke(main, ["eval", "--model", str(tmp_path / "run" / "last.h5"),
                                              "--dataset", str(toy["test"]), "--json"]).stdout)
    assert ev["accuracy"] >= 0.6, (summary, ev)           # chance is 1/3


def _trainer(toy, out, progress=None, epochs=2):
    net = NetworkConfig(n_hidden=12, input_delays="synaptic")
    run = RunConfig(dataset=str(toy["train"]), n_steps=40, batch_size=8, epochs=epochs, seed=5,
                    checkpoint_every=1)
    return Trainer(net, LearningConfig(), run, out, progress=progress)


def test_killed_and_resumed_run_ends_with_identical_parameters(toy, tmp_path):
    _trainer(toy, tmp_path / "full").run()

    class Killed(Exception):
        pass

    def kill_after_seven_batches(event, seen=[]):   # noqa: B006 - a counter across calls
        if event["kind"] == "batch":
            seen.append(1)
            if len(seen) == 7:                      # mid-way through epoch 2
                raise Killed

    with pytest.raises(Killed):
        _trainer(toy, tmp_path / "killed", kill_after_seven_batches).run()
    assert load_model(tmp_path / "killed" / "checkpoint.h5").training["epoch"] == 1
    _trainer(toy, tmp_path / "killed").run(resume=True)
    full = load_model(tmp_path / "full" / "last.h5").net.params
    resumed = load_model(tmp_path / "killed" / "last.h5").net.params
    for a, b in ((full.input.weight, resumed.input.weight), (full.input.delay, resumed.input.delay),
                 (full.w_out, resumed.w_out), (full.b_out, resumed.b_out)):
        np.testing.assert_array_equal(a, b)
    metrics = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2]


def test_resume_refuses_a_different_configuration(toy, tmp_path):
    _train(toy, tmp_path / "run")
    result = CliRunner().invoke(main, ["train", "--dataset", str(toy["train"]), "--out", str(tmp_path / "run"),
                                       "--resume", *SMALL, "--hidden", "17"])
    assert result.exit_code == 2 and "--hidden 17 differs" in result.output and "(16)" in result.output


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(toy, tmp_path):
    net = NetworkConfig(n_hidden=12)
    run = RunConfig(dataset=str(toy["train"]), n_steps=40, batch_size=8, epochs=3, seed=1)
    trainer = Trainer(net, LearningConfig(optimizer="sgd", lr_weights=1e38, lr_readout=1e38), run, tmp_path)
    with pytest.raises(DivergenceError, match="diverged at epoch"):
        trainer.run()
    if (tmp_path / "checkpoint.h5").exists():
        loaded = load_model(tmp_path / "checkpoint.h5")      # loading validates: no NaN/inf inside
        assert np.isfinite(loaded.net.params.w_out).all()


@pytest.mark.parametrize("args,needle", [
    (["--delays", "dendritic"], "'dendritic' is not one of 'none', 'synaptic', 'axonal'"),
    (["--density", "0"], "--density=0.0 is not allowed"),
    (["--hidden", "-3"], "--hidden=-3 is not allowed"),
    (["--max-delay", "-1"], "--max-delay=-1 is not allowed"),
    (["--feedback", "mirror"], "'mirror' is not one of 'symmetric', 'random'"),
    (["--epochs", "zero"], "'zero' is not a valid integer"),
])
def test_bad_options_exit_2_naming_the_option(args, needle, tmp_path):
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_missing_dataset_says_where_it_looked(tmp_path):
    result = CliRunner().invoke(main, ["train", "--dataset", str(tmp_path / "nope.h5"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "nope.h5" in result.output


def test_config_file_with_command_line_override(toy, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[network]\nn_hidden = 9\ninput_delays = "axonal"\n[run]\nepochs = 1\n'
                   f'dataset = "{toy["train"]}"\nn_steps = 40\nbatch_size = 16\n')
    result = CliRunner().invoke(main, ["train", "--config", str(cfg), "--hidden", "7", "--out",
                                       str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["network"]["n_hidden"] == 7 and config["network"]["input_delays"] == "axonal"
    bad = tmp_path / "bad.json"
    bad.write_text('{"n_hiddne": 3}')
    result = CliRunner().invoke(main, ["train", "--config", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown field 'n_hiddne'" in result.output


def test_eval_maps_classes_by_name_and_refuses_strangers(toy, tmp_path):
    _train(toy, tmp_path / "run")
    model = str(tmp_path / "run" / "last.h5")
    same = json.loads(CliRunner().invoke(main, ["eval", "--model", model, "--dataset", str(toy["test"]),
                                                "--json"]).stdout)
    shuffled = _write(tmp_path / "shuffled.h5", 24, 1, order=[2, 0, 1])
    mapped = json.loads(CliRunner().invoke(main, ["eval", "--model", model, "--dataset", str(shuffled),
                                                  "--json"]).stdout)
    assert mapped["accuracy"] == same["accuracy"] and mapped["confusion"] == same["confusion"]
    strangers = _write(tmp_path / "strangers.h5", 24, 1, names=["alpha", "beta", "delta"])
    result = CliRunner().invoke(main, ["eval", "--model", model, "--dataset", str(strangers)])
    assert result.exit_code == 2 and "class names do not match" in result.output


def test_model_files_are_validated_on_load(toy, tmp_path):
    _train(toy, tmp_path / "run")
    path = tmp_path / "run" / "last.h5"
    with edit_model(path) as f:
        f["params/layers/0/feedforward/delay"][0] = 99.0
    with pytest.raises(ModelFileError, match=r"params/layers/0/feedforward/delay: delay \[0\] = 99.0 outside"):
        load_model(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelFileError, match="not an HDF5 file"):
        load_model(tmp_path / "junk.h5")


def test_prepare_network_sets_starting_parameters(toy, tmp_path):
    """Delays fixed at a chosen value stay there through training (learn_delays off)."""
    net = NetworkConfig(n_hidden=8, input_delays="synaptic")
    run = RunConfig(dataset=str(toy["train"]), n_steps=40, batch_size=16, epochs=1, seed=0)

    def all_at_seven(network):
        network.set_delays("input", np.full(network.params.input.delay.size, 7.0))

    Trainer(net, LearningConfig(learn_delays=False), run, tmp_path, prepare_network=all_at_seven).run()
    delays = load_model(tmp_path / "last.h5").net.params.input.delay
    assert (delays == 7.0).all()
