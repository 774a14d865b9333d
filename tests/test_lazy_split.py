"""Splits too large to bin at once are binned per batch: the same counts, the same training."""

import numpy as np

from onlinedelay import LearningConfig, Network, NetworkConfig
from onlinedelay import evaluate
from onlinedelay.config import RunConfig
from onlinedelay.evaluate import BinnedSplit, evaluate_arrays, load_split, select_samples
from onlinedelay.io import load_model
from onlinedelay.train import Trainer
from test_cli import _write


def test_a_lazy_split_gives_the_counts_of_the_eager_one(tmp_path):
    path = _write(tmp_path / "toy.h5", 40, 0)
    run = RunConfig(dataset=str(path), n_steps=30)
    eager, labels, _ = load_split(run, 10.0, "train")
    lazy, labels_lazy, _ = load_split(run, 10.0, "train", eager_bytes=0)
    assert isinstance(eager, np.ndarray) and isinstance(lazy, BinnedSplit)
    assert lazy.shape == eager.shape and np.array_equal(labels, labels_lazy) and eager.sum() > 0
    pick = np.array([7, 3, 3, 39, 0])
    np.testing.assert_array_equal(lazy[:, pick], eager[:, pick])
    np.testing.assert_array_equal(lazy[:, 5:17], eager[:, 5:17])
    sub = select_samples(lazy, pick[1:])
    assert isinstance(sub, BinnedSplit) and sub.shape[1] == 4
    np.testing.assert_array_equal(sub[:, [2, 0]], eager[:, [39, 3]])
    np.testing.assert_array_equal(lazy.channel_totals(batch=7), eager.sum(axis=0))
    net = Network(NetworkConfig(n_inputs=eager.shape[2], n_hidden=8, n_outputs=3), seed=0)
    a, b = evaluate_arrays(net, eager, labels), evaluate_arrays(net, lazy, labels)
    assert a == b


def test_training_on_a_lazy_split_ends_with_the_same_parameters(tmp_path, monkeypatch):
    path = _write(tmp_path / "toy.h5", 48, 0)
    run = RunConfig(dataset=str(path), n_steps=30, batch_size=16, epochs=1, seed=0)
    finals = []
    for budget in (evaluate.EAGER_BYTES, 0):
        monkeypatch.setattr(evaluate, "EAGER_BYTES", budget)
        out = tmp_path / f"run{budget}"
        Trainer(NetworkConfig(n_hidden=8), LearningConfig(), run, out).run()
        finals.append(load_model(out / "last.h5").net.params)
    for (name, a), (_, b) in zip(finals[0].arrays(), finals[1].arrays()):
        np.testing.assert_array_equal(a, b, err_msg=name)
