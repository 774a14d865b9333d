"""Model and checkpoint files: round trips at any depth, old files, and every malformed file refused
with a ModelFileError naming the file and the field (never a crash, a hang or wrong parameters)."""

import json

import h5py
import numpy as np
import pytest

from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner
from onlinedelay.io import ModelFileError, load_model, restore_optimizer, save_model
from model_files import edit_model

DEEP = dict(n_inputs=6, n_outputs=3, n_layers=2, n_hidden=5, recurrent="conv", recurrent_delays="axonal",
            input_delays="synaptic", hidden_delays="axonal", readout="all", max_delay_steps=6)


def _saved(tmp_path, with_learner=True, **cfg):
    net = Network(NetworkConfig(**(cfg or DEEP)), seed=2)
    learner = ThreeFactorLearner(net, LearningConfig(feedback="random"))
    x = np.random.default_rng(0).poisson(0.6, size=(12, 2, net.config.n_inputs))
    learner.run_sample(x, np.array([0, 1]), update=True)
    path = tmp_path / "model.h5"
    save_model(path, net, ["a", "b", "c"][:net.config.n_outputs], learner=learner if with_learner else None,
               training={"epoch": 1})
    return net, learner, path


def _arrays(params):
    return {name: a for name, a in params.arrays(stored_only=False)}


def test_deep_model_round_trips_parameters_optimizer_and_outputs(tmp_path):
    net, learner, path = _saved(tmp_path)
    loaded = load_model(path)
    for name, a in _arrays(net.params).items():
        np.testing.assert_array_equal(_arrays(loaded.net.params)[name], a, err_msg=name)
    x = np.random.default_rng(1).poisson(0.6, size=(15, 6))
    np.testing.assert_array_equal(loaded.net.run(x), net.run(x))
    fresh = ThreeFactorLearner(loaded.net, loaded.learning_config)
    restore_optimizer(fresh, loaded.optimizer)
    for a, b in zip(fresh.optimizer.m + fresh.optimizer.v, learner.optimizer.m + learner.optimizer.v):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fresh.feedback, learner.feedback):
        np.testing.assert_array_equal(a, b)
    assert loaded.training == {"epoch": 1}


def test_version_1_single_layer_files_still_load(tmp_path):
    """The layout before layers: params/input, params/recurrent, optimizer/feedback, recurrent as a bool."""
    cfg = NetworkConfig(n_inputs=4, n_hidden=3, n_outputs=2, recurrent=True, recurrent_delays="axonal")
    net = Network(cfg, seed=1)
    path = tmp_path / "old.h5"
    old_config = dict(cfg.to_dict(), recurrent=True)
    for key in ("n_layers", "hidden_delays", "hidden_density", "kernel_size", "delay_init_range", "readout", "layers"):
        old_config.pop(key)
    with h5py.File(path, "w") as f:
        f.attrs.update(format="onlinedelay-model", format_version=1, package_version="0.1.0", seed=1,
                       dtype="float32", network_config=json.dumps(old_config), class_names=json.dumps(["x", "y"]))
        for name, proj in (("input", net.params.input), ("recurrent", net.params.recurrent)):
            for field in ("indptr", "pre", "weight", "delay", "delay_of_syn", "pre_of_delay"):
                f.create_dataset(f"params/{name}/{field}", data=getattr(proj, field))
        f.create_dataset("params/w_out", data=net.params.w_out)
        f.create_dataset("params/b_out", data=net.params.b_out)
    loaded = load_model(path)
    assert loaded.net.config.recurrent == "dense"
    x = np.random.default_rng(2).poisson(0.8, size=(10, 4))
    np.testing.assert_array_equal(loaded.net.run(x), net.run(x))


def _mutate(path, name, fn):
    with edit_model(path) as f:
        data = f[name][()]
        del f[name]
        f.create_dataset(name, data=fn(data))


FF, REC = "params/layers/0/feedforward", "params/layers/0/recurrent"


@pytest.mark.parametrize("name,fn,field", [
    (f"{FF}/pre", lambda a: np.where(np.arange(a.size) == 0, 6, a), f"{FF}/pre"),            # one past the end
    (f"{FF}/pre", lambda a: a[::-1].copy(), f"{FF}/pre"),
    (f"{FF}/indptr", lambda a: a[::-1].copy(), f"{FF}/indptr"),
    (f"{FF}/delay_of_syn", lambda a: np.roll(a, 1), f"{FF}/delay_of_syn"),                  # permuted
    (f"{FF}/pre_of_delay", lambda a: np.roll(a, 1), f"{FF}/pre_of_delay"),
    (f"{FF}/weight", lambda a: np.where(np.arange(a.size) == 3, np.nan, a), f"{FF}/weight"),
    (f"{FF}/weight", lambda a: np.where(np.arange(a.size) == 3, 1e300, a.astype(np.float64)), f"{FF}/weight"),
    (f"{FF}/weight", lambda a: a[:-1], f"{FF}/weight"),
    (f"{FF}/delay", lambda a: a.astype(np.int32), f"{FF}/delay"),
    (f"{REC}/weight_of_syn", lambda a: np.roll(a, 1), f"{REC}/weight_of_syn"),
    (f"{REC}/shared_weight", lambda a: np.append(a, 1.0), f"{REC}/shared_weight"),
    ("params/w_out", lambda a: a[:, :-1], "params/w_out"),
    (f"{FF}/weight", lambda a: a + 1e-3, "attrs/checksum"),                                  # changed, still valid
])
def test_malformed_arrays_are_refused_naming_the_field(tmp_path, name, fn, field):
    _, _, path = _saved(tmp_path)
    _mutate(path, name, fn)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    assert str(path) in str(err.value) and field in str(err.value), str(err.value)


def test_links_external_storage_and_groups_in_place_of_datasets_are_refused(tmp_path):
    _, _, path = _saved(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(30, dtype=np.float32).tobytes())
    with edit_model(path) as f:
        del f[f"{FF}/weight"]
        f.create_dataset(f"{FF}/weight", shape=(30,), dtype=np.float32, external=[(str(secret), 0, 120)])
    with pytest.raises(ModelFileError, match="external"):
        load_model(path)
    _, _, path = _saved(tmp_path)
    with edit_model(path) as f:
        del f["params/b_out"]
        f["params/b_out"] = h5py.SoftLink("/params/layers/0/feedforward/delay")
    with pytest.raises(ModelFileError, match="params/b_out: is a SoftLink"):
        load_model(path)
    _, _, path = _saved(tmp_path)
    with edit_model(path) as f:
        del f["params/b_out"]
        f.create_group("params/b_out")
    with pytest.raises(ModelFileError, match="params/b_out: expected a dataset"):
        load_model(path)


def test_bad_checkpoints_are_refused_not_resumed_with_fresh_state(tmp_path):
    _, _, path = _saved(tmp_path)
    with edit_model(path) as f:
        del f["optimizer/m"]
        f.create_dataset("optimizer/m", data=np.zeros(3))
    with pytest.raises(ModelFileError, match="optimizer/m: expected a group"):
        load_model(path)
    _, _, path = _saved(tmp_path)
    with edit_model(path) as f:
        del f["optimizer/m/0"]
    with pytest.raises(ModelFileError, match="optimizer/m"):
        load_model(path)


def test_configs_that_would_need_unbounded_memory_are_refused(tmp_path):
    _, _, path = _saved(tmp_path)
    with edit_model(path) as f:
        cfg = json.loads(f.attrs["network_config"])
        cfg["max_delay_steps"] = 10**7
        f.attrs["network_config"] = json.dumps(cfg)
    with pytest.raises(ModelFileError, match="max_delay_steps=10000000 is not allowed"):
        load_model(path)
    _, _, path = _saved(tmp_path)
    with edit_model(path) as f:
        cfg = json.loads(f.attrs["network_config"])
        cfg["n_hidden"] = 10**6
        f.attrs["network_config"] = json.dumps(cfg)
    with pytest.raises(ModelFileError, match="GiB"):
        load_model(path)


def test_byte_flips_never_crash_and_never_load_changed_parameters(tmp_path):
    """A slice of the model-file fuzzer: every flipped byte either still loads exactly the saved
    parameters (it hit padding or metadata we do not use) or raises ModelFileError naming the file."""
    net, _, path = _saved(tmp_path)
    raw = path.read_bytes()
    want = _arrays(net.params)
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "identical": 0}
    for k, pos in enumerate(rng.choice(len(raw), size=150, replace=False)):
        flipped = bytearray(raw)
        flipped[pos] ^= 0xFF
        case = tmp_path / f"flip{k}.h5"
        case.write_bytes(bytes(flipped))
        try:
            loaded = load_model(case)
        except ModelFileError as err:
            assert str(case) in str(err)
            outcomes["refused"] += 1
            continue
        got = _arrays(loaded.net.params)
        for name, a in want.items():
            np.testing.assert_array_equal(got[name], a, err_msg=f"byte {pos}: {name} changed undetected")
        outcomes["identical"] += 1
    assert outcomes["refused"] > 0 and outcomes["identical"] > 0, outcomes


def test_the_whole_file_is_checked_before_hdf5_reads_it(tmp_path):
    """An edit that is not re-sealed, and a seal wiped out, are refused before HDF5 parses the file."""
    import h5py

    _, _, path = _saved(tmp_path)
    with h5py.File(path, "a") as f:                  # a valid HDF5 edit, without io.seal_file
        f["params/b_out"][0] = 1.0
    with pytest.raises(ModelFileError, match="file checksum does not match"):
        load_model(path)
    _, _, path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[:8] = b"\0" * 8                              # the seal gone: HDF5 still starts at byte 512
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="no seal, no HDF5 signature"):
        load_model(path)
