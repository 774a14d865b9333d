"""NeuroBench-style metrics (onlinedelay/metrics.py) against hand counts and an independent
NeuroBench-style count on dense binarised matrices; eval's text and JSON; the ablation columns."""

import csv
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from onlinedelay.cli import main
from onlinedelay.config import NetworkConfig
from onlinedelay.metrics import connections, delay_costs, measure, static_metrics
from onlinedelay.network import Network
from onlinedelay.projections import dense_weights
from onlinedelay.quantize import TERNARY_BITS
from test_ablate import _write  # the learnable toy event files


def _tiny():
    """3 inputs -> 3 LIF (hard reset, no delays) -> 2 readout with known weights.

    Neuron 0 fires exactly when input 0 is active (weight 5) or after two steps of input 2; neuron 1
    only gets negative current, neuron 2 none at all (its membrane stays 0)."""
    net = Network(NetworkConfig(n_inputs=3, n_hidden=3, n_outputs=2, input_delays="none", reset="hard",
                                max_delay_steps=2), seed=0)
    net.params.input.weight[:] = [5.0, 0.0, 0.3, -1.0, 0.0, -1.0, 0.0, 0.0, 0.0]   # rows: neurons 0, 1, 2
    net.params.w_out[:] = [[1.0, 0.0, 0.5], [1.0, 0.0, 0.0]]
    x = np.zeros((4, 2, 3), np.uint16)
    x[:, 0] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]      # spikes only: ACs
    x[:, 1] = [[2, 0, 0], [0, 0, 0], [1, 0, 1], [0, 3, 0]]      # steps 0 and 3 hold a count of 2, 3: MACs
    return net, x


def test_tiny_network_matches_the_hand_count():
    net, x = _tiny()
    m = measure(net, x, batch_size=2)
    # spikes of neuron 0: sample 0 at steps 0 and 3 (v = 5, 0, 0.3, 5 + 0.3 alpha), sample 1 at 0 and 2
    # input ACs: sample 0: 2 + 0 + 2 + (2 + 0) = 6; sample 1, step 2: 2 + 2 = 4.  MACs: sample 1, step 0: 2
    # (step 3's count 3 is on channel 1, whose weights are all zero).  Readout: 4 spikes x 2 nonzero weights.
    ops = m["synaptic_operations"]
    assert ops["effective_acs"] == (6 + 4 + 8) / 2
    assert ops["effective_macs"] == 2 / 2
    assert ops["dense"] == (3 * 3 + 2 * 3) * 4                  # every entry, every step
    assert ops["by_layer"]["readout"]["effective_acs"] == 8 / 2
    assert m["activation_sparsity"] == pytest.approx(1 - 4 / (3 * 4 * 2))
    # neurons 0 and 1 change every step; neuron 2 rests at 0: counted at the first step only
    assert m["membrane_updates"] == 2 * 4 + 1
    assert m["connection_sparsity"] == round((5 + 3) / (9 + 6), 4)
    assert m["connection_sparsity_by_layer"] == {"layer1.feedforward": round(5 / 9, 4), "readout": 0.5}
    assert m["parameter_count"] == 9 + 6 + 2
    assert m["n_samples"] == 2 and m["n_steps"] == 4
    assert m["predictions"].shape == (2,)


def test_the_counts_do_not_depend_on_the_batch_size():
    net, x = _tiny()
    a, b = measure(net, x, batch_size=1), measure(net, x, batch_size=2)
    for key in ("synaptic_operations", "activation_sparsity", "membrane_updates"):
        assert a[key] == b[key], key


def _neurobench_count(net, x):
    """NeuroBench's SynapticOperations on dense binarised matrices, sample by sample, step by step:
    ops = sum(bin(W) @ bin(input)), ACs where the input is in {0, 1}, MACs otherwise; a recurrent
    matrix reads the spikes of the step before; dense = every entry every step."""
    c, specs = net.config, net.layer_specs
    mats = []          # (source: -1 input / layer, recurrent, binarised dense (n_post, n_pre))
    for l, kind, proj in net.params.projections():
        if proj.pre.size:
            n_pre = specs[l].n_pre if kind == "feedforward" else specs[l].n_neurons
            mats.append((l - 1 if kind == "feedforward" else l, kind == "recurrent",
                         (dense_weights(proj, n_pre) != 0).astype(np.int64)))
    offsets = np.concatenate([[0], np.cumsum(c.layer_sizes)])
    for l, offset in enumerate(net.readout_offsets):
        if offset is not None:
            mats.append((l, False, (net.params.w_out[:, offset:offset + specs[l].n_neurons] != 0).astype(np.int64)))
    acs = macs = 0
    for b in range(x.shape[1]):
        net.reset(1)
        previous = np.zeros(offsets[-1])
        for t in range(x.shape[0]):
            net.step(x[t, b])
            z = net.state.z[:, 0].copy()
            for source, recurrent, w in mats:
                if source < 0:
                    inp = x[t, b].astype(np.float64)
                else:
                    inp = (previous if recurrent else z)[offsets[source]:offsets[source + 1]]
                ops = int((w @ (inp != 0)).sum())
                if np.isin(inp, (-1, 0, 1)).all():
                    acs += ops
                else:
                    macs += ops
            previous = z
    return acs / x.shape[1], macs / x.shape[1]


def test_deep_recurrent_network_matches_neurobench_on_dense_matrices():
    """Two layers (sparse input, dense recurrence; then a conv recurrence), synaptic and
    axonal delays, a readout of every layer, graded inputs, batches of 3: the effective ACs and MACs equal
    NeuroBench's count on dense binarised matrices, and the dense count the entries x steps."""
    cfg = NetworkConfig(n_inputs=6, n_hidden=5, n_outputs=3, n_layers=2, recurrent="dense", density=0.5,
                        hidden_delays="axonal", recurrent_delays="synaptic", max_delay_steps=3, weight_init_scale=3.0,
                        readout="all", layers=({}, {"recurrent": "conv", "kernel_size": 3, "n_hidden": 4}))
    net = Network(cfg, seed=1)
    net.params.layers[0].recurrent.weight[::3] = 0.0            # zero weights cost nothing
    x = np.random.default_rng(0).poisson(0.6, size=(12, 5, 6)).astype(np.uint16)
    m = measure(net, x, batch_size=3)
    acs, macs = _neurobench_count(net, x)
    assert acs > 0 and macs > 0
    assert m["synaptic_operations"]["effective_acs"] == pytest.approx(acs)
    assert m["synaptic_operations"]["effective_macs"] == pytest.approx(macs)
    conv_taps = 4 * 3 - 2                                        # zero padding: two taps off the edges
    entries = 6 * 5 + 5 * 5 + 5 * 4 + conv_taps + 3 * 5 + 3 * 4
    assert m["synaptic_operations"]["dense"] == entries * 12


def test_activation_sparsity_and_membrane_updates_follow_the_real_trace():
    cfg = NetworkConfig(n_inputs=4, n_hidden=6, n_outputs=2, input_delays="synaptic", max_delay_steps=4,
                        weight_init_scale=4.0)
    net = Network(cfg, seed=2)
    x = np.random.default_rng(1).poisson(0.4, size=(9, 3, 4)).astype(np.uint16)
    m = measure(net, x, batch_size=2)
    spikes = updates = 0
    for b in range(3):
        net.reset(1)
        previous = None
        for t in range(9):
            net.step(x[t, b])
            v = net.state.layers[0].v[:, 0].copy()
            spikes += int(net.state.z.sum())
            updates += v.size if previous is None else int(np.count_nonzero(v - previous))
            previous = v
    assert 0 < spikes < 6 * 9 * 3
    assert m["activation_sparsity"] == pytest.approx(1 - spikes / (6 * 9 * 3))
    assert m["membrane_updates"] == pytest.approx(updates / 3)


def test_sparse_projection_connection_sparsity():
    net = Network(NetworkConfig(n_inputs=8, n_hidden=4, n_outputs=2, density=0.25, input_delays="none"), seed=0)
    s = static_metrics(net)
    assert s["connection_sparsity_by_layer"]["layer1.feedforward"] == 0.75     # 2 of 8 inputs per neuron
    assert s["connection_sparsity"] == round(24 / (32 + 8), 4)
    assert [k.name for k in connections(net)] == ["layer1.feedforward", "readout"]


def test_quantized_footprint_bits():
    """Ternary weights (log2 3 bits each + two float scales), delays on a grid of 5 steps in [0, 25]
    (6 values: 3 bits each + a float offset), a float32 readout and bias."""
    cfg = NetworkConfig(n_inputs=4, n_hidden=3, n_outputs=2, weight_bits="ternary", delay_step=5.0,
                        input_delays="synaptic", max_delay_steps=25)
    net = Network(cfg, seed=0)
    fp = static_metrics(net)["footprint"]
    expected = 12 * TERNARY_BITS + 2 * 32 + 12 * 3 + 32 + (2 * 3 + 2) * 32
    assert fp["bits"] == pytest.approx(expected) and fp["bytes"] == pytest.approx(expected / 8)
    assert fp["inference_bits"] == pytest.approx(expected)       # quantized delays are already integers
    zeros = int(np.count_nonzero(net.params.input.weight == 0))
    assert 0 < zeros and static_metrics(net)["connection_sparsity_by_layer"]["layer1.feedforward"] == \
        round(zeros / 12, 4)


def test_float_footprint_counts_integer_delays_at_inference_and_the_dense_twin():
    net = Network(NetworkConfig(n_inputs=4, n_hidden=3, n_outputs=2, input_delays="axonal", max_delay_steps=25),
                  seed=0)
    fp = static_metrics(net)["footprint"]
    assert fp["bits"] == 32 * (12 + 4 + 6 + 2)
    assert fp["inference_bits"] == 32 * (12 + 6 + 2) + 4 * math.ceil(math.log2(26))
    # dense float32 twin: the 3x4 matrix, 4 axonal delays, readout, bias, 3 + 2 neuron constants
    assert fp["dense_bytes"] == 4 * (12 + 4 + 6 + 2 + 5)
    assert fp["index_bytes"] == 4 * (4 + 12 + 12 + 4)            # indptr, pre, delay_of_syn, pre_of_delay


def test_delay_costs_rings_and_latency():
    cfg = NetworkConfig(n_inputs=3, n_hidden=2, n_outputs=2, n_layers=2, input_delays="synaptic",
                        hidden_delays="axonal", max_delay_steps=5, dt_ms=2.0)
    net = Network(cfg, seed=0)
    net.set_delays("input", [0, 1, 2, 3, 4, 1])
    net.set_delays("feedforward", [2, 5], layer=1)
    d = delay_costs(net)
    assert d["rings"]["layer1.feedforward"] == {"slots": 6, "needed_slots": 5, "values": 6 * 3, "bytes": 4 * 6 * 3}
    assert d["rings"]["layer2.feedforward"]["needed_slots"] == 6
    assert d["rings"]["layer1.future"]["needed_slots"] == 5 and d["rings"]["layer2.future"]["needed_slots"] == 6
    assert d["ring_values"] == 6 * (3 + 2 + 2 + 2)                # two history rings, two future rings
    lat = d["latency"]
    # layer 2's 4 synapses carry the axonal delays of their presynaptic neurons: 2, 5, 2, 5
    assert lat["synapses"] == 6 + 4
    assert lat["mean_ms"] == pytest.approx(2.0 * (11 + 14) / 10) and lat["max_ms"] == 10.0
    assert lat["max_path_ms"] == 2.0 * (4 + 5)
    assert lat["by_projection"]["layer1.feedforward"]["mean_ms"] == pytest.approx(2.0 * 11 / 6)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return {"train": _write(root / "train.h5", 24, 0), "test": _write(root / "test.h5", 12, 1)}


def test_eval_prints_and_returns_the_metrics(toy, tmp_path):
    run = CliRunner().invoke(main, ["train", "--dataset", toy["train"], "--out", str(tmp_path / "run"), "--quiet",
                                    "--hidden", "8", "--epochs", "1", "--n-steps", "30"])
    assert run.exit_code == 0, run.output
    model = str(tmp_path / "run" / "best.h5")
    text = CliRunner().invoke(main, ["eval", model, "--dataset", toy["test"]])
    assert text.exit_code == 0, text.output
    for needle in ("metrics (NeuroBench definitions, per sample over 12 samples x 30 steps", "connection sparsity",
                   "activation sparsity", "effective ACs", "membrane updates / sample", "delay latency"):
        assert needle in text.output, needle
    ev = json.loads(CliRunner().invoke(main, ["eval", model, "--dataset", toy["test"], "--json"]).stdout)
    assert {"accuracy", "confusion", "synops_per_sample", "footprint"} <= set(ev)      # the keys it had
    m = ev["metrics"]
    assert m["n_samples"] == 12 and 0 <= m["activation_sparsity"] <= 1
    assert m["synaptic_operations"]["dense"] == (140 * 8 + 8 * 3) * 30
    assert m["footprint"]["bits"] == ev["footprint"]["total_bits"]
    bare = json.loads(CliRunner().invoke(main, ["eval", model, "--dataset", toy["test"], "--json",
                                                "--no-metrics"]).stdout)
    assert "metrics" not in bare and bare["accuracy"] == ev["accuracy"]


def test_ablation_report_has_the_metrics_columns(toy, tmp_path):
    result = CliRunner().invoke(main, ["ablate", "delays", "--seeds", "1", "--no-plots", "--dataset", toy["train"],
                                       "--test-dataset", toy["test"], "--out", str(tmp_path), "--hidden", "4",
                                       "--epochs", "1", "--n-steps", "20"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "results.csv", newline="") as f:
        rows = {r["config"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"none", "synaptic", "axonal"}
    for row in rows.values():
        assert float(row["effective_synops_per_sample"]) > 0 and 0 <= float(row["activation_sparsity"]) <= 1
        assert float(row["dense_synops_per_sample"]) == (140 * 4 + 4 * 3) * 20
    assert float(rows["none"]["mean_delay_ms"]) == 0 and float(rows["synaptic"]["mean_delay_ms"]) > 0
    md = (tmp_path / "results.md").read_text()
    assert "| synops / sample | activation sparsity | mean delay latency (ms) |" in md
    line = next(l for l in md.splitlines() if l.startswith("| synaptic |"))
    assert f"| {float(rows['synaptic']['activation_sparsity']):.3f} |" in line
