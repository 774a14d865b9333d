"""NIR export and import: an independent interpreter (tests/nir_interpreter.py) reproduces our
readouts on digits samples for every architecture and delay encoding; export -> import gives the
same parameters and outputs; plain LIF graphs of other frameworks import; unsupported graphs are
refused in one line."""

import sys

import numpy as np
import pytest
from click.testing import CliRunner

nir = pytest.importorskip("nir")

from onlinedelay import Network, NetworkConfig
from onlinedelay.cli import main
from onlinedelay.config import RunConfig
from onlinedelay.errors import OnlineDelayError
from onlinedelay.evaluate import load_split, predict
from onlinedelay.export import MISSING, from_nir, save_nir, to_nir
from onlinedelay.io import load_model, load_nir, save_model
from onlinedelay.options import build_configs
from nir_interpreter import Interpreter

N_SAMPLES, N_STEPS = 3, 50


@pytest.fixture(scope="module")
def digits():
    """(T, B, 140) counts of the first test samples of the embedded digits."""
    x, _, _ = load_split(RunConfig(n_steps=N_STEPS), 10.0, "test")
    return np.asarray(x[:, :N_SAMPLES])


def _arch(name, **changes):
    net, _, _ = build_configs(None, dict(dict.fromkeys(["arch", "layers_option", "delay_init_range"]), arch=name))
    return net.replace(**dict(dict(n_hidden=24), **changes))


CASES = {
    "three-factor": lambda: _arch("three-factor"),
    "delrec": lambda: _arch("delrec"),
    "conv-delrec": lambda: _arch("conv-delrec"),
    "sun-lowbit": lambda: _arch("sun-lowbit"),
    "no-delays-hard": lambda: NetworkConfig(n_hidden=20, input_delays="none", reset="hard"),
    "axonal-soft-recurrent": lambda: NetworkConfig(n_hidden=20, input_delays="axonal", recurrent="sparse",
                                                   recurrent_density=0.3, recurrent_delays="synaptic"),
    "two-layer-synaptic": lambda: NetworkConfig(n_hidden=16, n_layers=2, input_delays="synaptic",
                                                hidden_delays="synaptic", hidden_density=0.5, readout="last",
                                                layers=[{"reset": "hard"}, {"reset": "soft", "threshold": 0.8}]),
    "two-layer-4bit-euler": lambda: NetworkConfig(n_hidden=16, n_layers=2, hidden_delays="axonal", weight_bits="4",
                                                  discretisation="euler", input_scale="one_minus_decay",
                                                  readout_input_scale="one_minus_decay", recurrent="dense"),
}


def _spiking(net, x):
    """Run ``net`` on x; every layer must spike (otherwise the comparison would prove little)."""
    net.reset(x.shape[1])
    y, counts = [], np.zeros(net.state.z.shape[0])
    for t in range(x.shape[0]):
        net.advance(x[t].T)
        y.append(net.state.y.T.copy())
        counts += net.state.z.sum(axis=1)
    sizes = np.cumsum([0] + [s.n_neurons for s in net.layer_specs])
    assert all(counts[a:b].sum() > 0 for a, b in zip(sizes[:-1], sizes[1:])), "a layer never spiked"
    return np.stack(y)


@pytest.mark.parametrize("delays_as", ["branches", "metadata"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_interpreter_reproduces_the_readouts_on_digits(case, delays_as, digits):
    net = Network(CASES[case](), seed=3, batch_size=N_SAMPLES)
    y = _spiking(net, digits)
    graph = to_nir(net, delays_as)
    got = Interpreter(graph).run(digits)
    np.testing.assert_allclose(got, y, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(predict(got.transpose(0, 2, 1)), predict(y.transpose(0, 2, 1)))


def test_branch_count_is_the_number_of_delay_values_present():
    net = Network(NetworkConfig(n_inputs=8, n_hidden=6, n_outputs=3, max_delay_steps=6, n_layers=2,
                                hidden_delays="synaptic"), seed=0)
    present = sum(np.unique(lp.feedforward.delay_steps).size for lp in net.params.layers)
    graph = to_nir(net)
    assert graph.metadata["n_delay_branches"] == present
    delays = [n for n, node in graph.nodes.items() if isinstance(node, nir.Delay)]
    zero_branches = sum(0 in lp.feedforward.delay_steps for lp in net.params.layers)
    assert len(delays) == present - zero_branches
    compact = to_nir(net, "metadata")
    assert compact.metadata["n_delay_branches"] == 0 and not any(isinstance(n, nir.Delay)
                                                                 for n in compact.nodes.values())


@pytest.mark.parametrize("delays_as", ["branches", "metadata"])
@pytest.mark.parametrize("case", ["sun-lowbit", "conv-delrec", "axonal-soft-recurrent", "two-layer-synaptic",
                                  "two-layer-4bit-euler"])
def test_export_import_gives_the_same_parameters_and_outputs(case, delays_as, tmp_path, digits):
    net = Network(CASES[case](), seed=4, batch_size=N_SAMPLES)
    summary = save_nir(tmp_path / "net.nir", net, delays_as)
    assert summary["nodes"] > 5 and summary["file"].endswith("net.nir")
    nir.read(tmp_path / "net.nir")                                     # validates with the type check on
    back = load_nir(tmp_path / "net.nir").net
    assert back.config == net.config and back.dtype == net.dtype
    for (name, a), (_, b) in zip(net.params.arrays(stored_only=False), back.params.arrays(stored_only=False)):
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    np.testing.assert_array_equal(back.run(digits), net.run(digits))


def test_cli_export_and_import_round_trip(tmp_path, digits):
    net = Network(CASES["three-factor"](), seed=1)
    save_model(tmp_path / "model.h5", net, [f"c{k}" for k in range(20)])
    runner = CliRunner()
    out = runner.invoke(main, ["export", str(tmp_path / "model.h5"), "-o", str(tmp_path / "net.nir")])
    assert out.exit_code == 0, out.output
    branches = np.unique(net.params.input.delay_steps).size
    assert f"{branches} synaptic-delay branches" in out.output and "nodes" in out.output
    out = runner.invoke(main, ["import", str(tmp_path / "net.nir"), "-o", str(tmp_path / "back.h5")])
    assert out.exit_code == 0, out.output
    loaded = load_model(tmp_path / "back.h5")
    assert loaded.class_names == [f"c{k}" for k in range(20)]
    np.testing.assert_array_equal(loaded.net.run(digits), Network(net.config, seed=1, batch_size=1).run(digits))


def _plain_graph(dt_s=None, recurrent=True, delay_s=None, extra=None, gain=1.0):
    """Input -> Affine -> LIF [-> Linear -> itself] -> Linear -> LI -> Output as snnTorch writes it
    (tau = dt / (1 - beta), r = tau / dt), no onlinedelay metadata."""
    rng = np.random.default_rng(0)
    n_in, n, n_out, dt = 5, 4, 3, 1e-3
    beta, kappa = 0.8, 0.9
    tau, tau_o = dt / (1 - beta), dt / (1 - kappa)
    nodes = {"input": nir.Input(np.array([n_in])),
             "fc1": nir.Affine(rng.normal(0, 1.2, (n, n_in)), np.zeros(n)),
             "lif1": nir.LIF(tau=np.full(n, tau), r=np.full(n, gain * tau / dt), v_leak=np.zeros(n),
                             v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "fc2": nir.Affine(rng.normal(0, 1.0, (n_out, n)), rng.normal(0, 0.1, n_out)),
             "li": nir.LI(tau=np.full(n_out, tau_o), r=np.full(n_out, tau_o / dt), v_leak=np.zeros(n_out)),
             "output": nir.Output(np.array([n_out]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li"), ("li", "output")]
    if recurrent:
        w = rng.normal(0, 0.5, (n, n))
        np.fill_diagonal(w, 0.0)
        nodes["rec1"] = nir.Linear(w)
        edges += [("lif1", "rec1"), ("rec1", "lif1")]
    if delay_s is not None:
        nodes["axon"] = nir.Delay(np.full(n_in, delay_s))
        edges = [e for e in edges if e != ("input", "fc1")] + [("input", "axon"), ("axon", "fc1")]
    if extra:
        nodes.update(extra[0])
        edges += extra[1]
    return nir.NIRGraph(nodes, edges, metadata={} if dt_s is None else {"dt": dt_s})


@pytest.mark.parametrize("recurrent, gain", [(False, 1.0), (True, 1.0), (True, 0.6)])
def test_a_plain_lif_graph_of_another_framework_imports_and_runs(recurrent, gain, tmp_path):
    graph = _plain_graph(recurrent=recurrent, delay_s=3e-3, gain=gain)
    nir.write(tmp_path / "plain.nir", graph)
    with pytest.raises(OnlineDelayError, match="has no 'dt' in its metadata; give the step .* --dt-ms"):
        load_nir(tmp_path / "plain.nir")
    net = load_nir(tmp_path / "plain.nir", dt_ms=1.0).net
    spec = net.layer_specs[0]
    assert spec.decay_mem == pytest.approx(0.8) and spec.reset == "hard" and spec.feedforward.delays == "axonal"
    assert (spec.recurrent is not None) == recurrent and net.config.decay_out == pytest.approx(0.9)
    np.testing.assert_array_equal(net.params.input.delay_steps, 3)
    x = np.random.default_rng(1).poisson(0.8, size=(40, 2, 5))
    y = net.run(x)
    assert 0 < Interpreter(graph, dt_s=1e-3).run(x).std() and 0 < np.abs(net.params.input.weight).max()
    net.reset(2)
    spikes = 0.0
    for t in range(40):
        net.step(x[t])
        spikes += net.state.z.sum()
    assert spikes > 0, "the plain network must spike"
    np.testing.assert_allclose(y, Interpreter(graph, dt_s=1e-3).run(x), atol=1e-5)
    out = CliRunner().invoke(main, ["import", str(tmp_path / "plain.nir"), "-o", str(tmp_path / "m.h5"),
                                    "--dt-ms", "1"])
    assert out.exit_code == 0 and "1 layer(s)" in out.output, out.output


def test_unsupported_graphs_are_refused_in_one_line(tmp_path):
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 2, 2)), stride=1, padding=0, dilation=1,
                      groups=1, bias=np.zeros(1))
    graph = _plain_graph(dt_s=1e-3, extra=({"conv2": conv}, []))
    nir.write(tmp_path / "net.nir", graph)
    with pytest.raises(OnlineDelayError, match=r"net.nir: node 'conv2' \(Conv2d\) is not supported by onlinedelay "
                                               r"import$"):
        load_nir(tmp_path / "net.nir")
    cuba = nir.CubaLIF(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
                       v_threshold=np.ones(2))
    with pytest.raises(OnlineDelayError, match=r"node 'syn' \(CubaLIF\) is not supported"):
        from_nir(_plain_graph(dt_s=1e-3, extra=({"syn": cuba}, [])))
    with pytest.raises(OnlineDelayError, match=r"node 'axon' \(Delay\) delay \[0\] = 0.0025 s is not a whole "
                                               r"number of steps of dt = 0.001 s"):
        from_nir(_plain_graph(dt_s=1e-3, delay_s=2.5e-3))
    leaky_out = _plain_graph(dt_s=1e-3)
    leaky_out.nodes["li"] = nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))
    with pytest.raises(OnlineDelayError, match=r"node 'li' \(LIF\) feeds the Output; .* leaky integrator"):
        from_nir(leaky_out)
    out = CliRunner().invoke(main, ["import", str(tmp_path / "net.nir"), "-o", str(tmp_path / "m.h5")])
    assert out.exit_code == 2 and out.output.strip().count("\n") == 0 and "'conv2' (Conv2d)" in out.output
    assert not (tmp_path / "m.h5").exists()


def test_an_edited_export_is_refused(tmp_path):
    net = Network(NetworkConfig(n_inputs=6, n_hidden=5, n_outputs=3, max_delay_steps=4), seed=0)
    graph = to_nir(net, "metadata")
    graph.nodes["layer1_ff"].metadata["delay_steps"] = (graph.nodes["layer1_ff"].metadata["delay_steps"] + 1) % 5
    with pytest.raises(OnlineDelayError, match="metadata 'feedforward_delay' does not round to the graph's delays"):
        from_nir(graph)
    graph = to_nir(net)
    graph.nodes["layer1"].tau = graph.nodes["layer1"].tau * 2
    with pytest.raises(OnlineDelayError, match=r"node 'layer1' \(LIF\) does not match the onlinedelay config"):
        from_nir(graph)


def test_without_nir_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nir", None)
    net = Network(NetworkConfig(n_inputs=4, n_hidden=3, n_outputs=2), seed=0)
    with pytest.raises(OnlineDelayError, match=r"^NIR export needs the optional extra: pip install "
                                               r"'onlinedelay\[nir\]'$"):
        to_nir(net)
    assert MISSING.endswith("'onlinedelay[nir]'")
    save_model(tmp_path / "m.h5", net)
    out = CliRunner().invoke(main, ["export", str(tmp_path / "m.h5"), "-o", str(tmp_path / "n.nir")])
    assert out.exit_code == 2 and "onlinedelay[nir]" in out.output and not (tmp_path / "n.nir").exists()
