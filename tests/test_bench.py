"""`onlinedelay bench`: the harness runs and reports every figure; no timing is asserted."""

import dataclasses
import json
import math
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from onlinedelay import bench
from onlinedelay.cli import main
from onlinedelay.config import NetworkConfig
from onlinedelay.errors import OnlineDelayError


def _positive_finite(value, where):
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where} = {value!r}"
    assert math.isfinite(value) and value > 0, f"{where} = {value!r}"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--quick", "--config", "tiny", "--batch", "1", "--batch", "3",
                                       "--json", str(path)])
    assert result.exit_code == 0, result.output
    return result, path


def test_quick_bench_prints_a_table_and_writes_the_json(quick_report):
    result, path = quick_report
    assert "tiny" in result.stdout and "ns/syn-step" in result.stdout and "peak resident memory" in result.stdout
    report = json.loads(path.read_text())
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"
    machine = report["machine"]
    for key in ("cpu_model", "numba_version", "numpy_version", "package_version", "date"):
        assert isinstance(machine[key], str) and machine[key]
    _positive_finite(machine["cores"], "cores")
    assert report["settings"]["quick"] is True and report["settings"]["configs"] == ["tiny"]
    _positive_finite(report["wall_s"], "wall_s")

    rows = report["results"]
    assert [(r["config"], r["batch_size"], r["threads"]) for r in rows] == [("tiny", 1, 1), ("tiny", 3, 1)]
    figures = {
        "training": ("samples_per_s", "ns_per_synapse_step", "ns_per_synapse_step_over_bound",
                     "samples_per_s_over_bound"),
        "inference": ("samples_per_s", "ns_per_synapse_step"),
        "streaming": ("latency_us_median", "latency_us_p99", "latency_us_max", "steps_timed"),
        "bound": ("trace_arrays", "triad_elements", "triad_ns_per_element", "triad_gb_per_s",
                  "ns_per_synapse_step", "training_samples_per_s"),
    }
    for row in rows:
        for key in ("synapses", "synapse_steps_per_batch", "input_spikes_per_sample", "steps"):
            _positive_finite(row[key], f"{row['name']} {key}")
        for section, keys in figures.items():
            for key in keys:
                _positive_finite(row[section][key], f"{row['name']} {section}.{key}")
        assert row["synapse_steps_per_batch"] == row["synapses"] * row["steps"] * row["batch_size"]
        assert row["bound"]["triad_elements"] == row["synapses"] * row["batch_size"] * row["bound"]["trace_arrays"]
        assert row["streaming"]["latency_us_p99"] >= row["streaming"]["latency_us_median"]
        # the two ratios to the bound are the same fact seen from both sides
        assert row["training"]["ns_per_synapse_step_over_bound"] * row["training"]["samples_per_s_over_bound"] \
            == pytest.approx(1.0)

    memory = report["memory"]["tiny"]
    assert memory["steps"] == list(bench.QUICK_MEMORY_STEPS)
    for key in ("peak_rss_mb", "sample_peak_rss_mb", "rss_before_sample_mb", "input_mb", "training_s"):
        assert len(memory[key]) == len(memory["steps"])
        for value in memory[key]:
            _positive_finite(value, f"memory {key}")
    for peak, before, growth in zip(memory["sample_peak_rss_mb"], memory["rss_before_sample_mb"],
                                    memory["sample_growth_mb"]):
        assert growth == pytest.approx(peak - before) and growth >= 0
    _positive_finite(memory["peak_rss_ratio"], "peak_rss_ratio")
    _positive_finite(memory["sample_peak_rss_ratio"], "sample_peak_rss_ratio")


@pytest.mark.parametrize("args, option", [
    (["--config", "no-such-net"], "--config"),
    (["--repeats", "0"], "--repeats"),
    (["--batch", "0"], "--batch"),
    (["--threads", "9999"], "--threads"),
    (["--json", "/no/such/folder/bench.json"], "--json"),
])
def test_bad_options_exit_2_naming_the_option(args, option):
    result = CliRunner().invoke(main, ["bench", "--quick", *args])
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_plan_defaults_cover_the_issue_matrix():
    full = bench.make_plan()
    assert [c.name for c in full.configs] == list(bench.DEFAULT_CONFIGS)
    assert full.batch_sizes == (1, 32) and full.threads == (1, 2) and full.repeats == 5
    assert full.steps == 100 and full.memory_steps == (100, 1000, 10000)
    quick = bench.make_plan(quick=True, memory=False)
    assert quick.repeats == 1 and quick.memory_steps == () and len(quick.configs) == 2
    assert bench.make_plan(["tiny,syn140-sparse", "tiny"]).configs == (bench.CONFIGS["tiny"],
                                                                       bench.CONFIGS["syn140-sparse"])


def test_poisson_input_has_the_realistic_rate():
    x = bench.poisson_input(100, 4, 140, np.random.default_rng(0))
    assert x.shape == (100, 4, 140) and x.dtype == np.uint8
    assert x.sum() / 4 == pytest.approx(bench.SPIKES_PER_STEP * 100, rel=0.05)


def test_write_json_replaces_atomically(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    bench.write_json({"a": 1.5}, path)
    assert json.loads(path.read_text()) == {"a": 1.5}
    with pytest.raises(ValueError):
        bench.write_json({"a": float("nan")}, path)        # non-finite numbers are refused...
    assert json.loads(path.read_text()) == {"a": 1.5}       # ...and the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# -- peers (never need torch: the "not installed" path and the plumbing with a fake peer) ----------------
class _FakeModel:
    """Stands in for a torch peer: records what it was built and loaded with, does a little work."""

    built = []

    def __init__(self, network, batch_size, threads, seed):
        self.record = {"network": network, "batch_size": batch_size, "threads": threads, "seed": seed,
                       "train": 0, "infer": 0}
        _FakeModel.built.append(self.record)

    def load(self, x, labels):
        self.record["x"], self.record["labels"] = x.copy(), labels.copy()

    def train(self):
        self.record["train"] += 1
        return float(self.record["x"].sum())

    def infer(self):
        self.record["infer"] += 1


class _AnyPeer(bench.Peer):
    def matches(self, config):
        return True


def test_peers_without_torch_print_one_line_and_measure_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)              # import torch now raises ImportError
    result = CliRunner().invoke(main, ["bench", "--quick", "--peers", "--config", "tiny"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "torch" in lines[0] and "pip install 'onlinedelay[peers]'" in lines[0], result.output
    with pytest.raises(bench.OptionError) as err:
        bench.make_plan(["tiny"], peers=True)
    assert err.value.option == "peers" and isinstance(err.value, OnlineDelayError)


def test_peers_match_our_dense_single_layer_networks():
    by_name = {p.name: p for p in bench.PEERS}
    matched = {name: [p for p in by_name.values() if p.matches(bench.CONFIGS[name])] for name in bench.CONFIGS}
    assert [p.name for p in matched["none700-dense"]] == ["PyTorch BPTT"]
    assert [p.name for p in matched["syn700-dense"]] == ["PyTorch + DCLS"]
    assert by_name["PyTorch + DCLS"].modules == ("torch", "DCLS")
    for name in ("syn140-sparse", "axon140-dense", "tiny"):                # sparse, axonal: no peer
        assert matched[name] == []


def test_a_peer_runs_on_our_batch_at_our_thread_count_and_gets_ratios():
    _FakeModel.built.clear()
    config = bench.BenchConfig("dense-tiny", "20-16-4 dense", NetworkConfig(n_inputs=20, n_hidden=16, n_outputs=4,
                                                                          max_delay_steps=5))
    plan = bench.make_plan(["tiny"], quick=True, repeats=3, memory=False, seed=7)
    ours = {"training": {"samples_per_s": 300.0}, "inference": {"samples_per_s": 900.0}}
    fake = bench.Peer("fake", "synaptic", (), _FakeModel)
    [result] = bench.measure_peers(config, 5, 2, plan, ours, peers=(fake, bench.Peer("other", "none", (), None)))
    [record] = _FakeModel.built
    x, labels = bench.training_batch("dense-tiny", 20, 4, plan.steps, 5, 7)
    np.testing.assert_array_equal(record["x"], x)                            # the very batch we time
    np.testing.assert_array_equal(record["labels"], labels)
    assert record["threads"] == 2 and record["batch_size"] == 5 and record["network"] == config.network
    assert record["train"] == record["infer"] == 2 + plan.repeats    # warm-up, the call sizing the repeats, repeats
    assert result["peer"] == "fake"
    for kind, ours_speed in (("training", 300.0), ("inference", 900.0)):
        peer_speed = result[kind]["samples_per_s"]
        assert peer_speed > 0 and result[f"{kind}_ratio"] == pytest.approx(ours_speed / peer_speed)
        assert result[kind]["batch_ms"]["min"] <= result[kind]["batch_ms"]["median"] <= result[kind]["batch_ms"]["max"]


def test_torch_peers_run_in_a_child_process_that_times_our_batch(monkeypatch, tmp_path):
    """The torch peers are isolated (their OpenMP threads never share our process); the child's entry
    point looks the peer up by name and times it on the batch the spec names: our own."""
    assert all(p.isolated for p in bench.PEERS)
    _FakeModel.built.clear()
    monkeypatch.setattr("onlinedelay.bench.peers.PEERS", (bench.Peer("fake", "synaptic", (), _FakeModel, isolated=True),))
    config = bench.CONFIGS["tiny"]
    spec = {"peer": "fake", "config": config.to_dict(), "batch_size": 3, "threads": 1, "steps": 12, "repeats": 2,
            "seed": 4}
    from onlinedelay.bench.peers import peer_child_main
    peer_child_main(json.dumps(spec), str(tmp_path / "result.json"))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["peer"] == "fake" and result["training"]["samples_per_s"] > 0
    [record] = _FakeModel.built
    np.testing.assert_array_equal(record["x"], bench.training_batch("tiny", config.n_inputs, config.n_outputs,
                                                                    12, 3, 4)[0])
    assert record["train"] == 4                  # warm-up, sizing call, 2 repeats


class _SlowModel(_FakeModel):
    """A fake peer ten times slower than the fake "ours" of the paired test."""

    def train(self):
        time.sleep(0.01)

    def infer(self):
        time.sleep(0.005)


def test_a_peer_is_also_timed_in_alternated_pairs():
    """With our callables, each peer's ratios are timed again in alternated rounds: the peer's time over ours."""
    config = bench.CONFIGS["tiny"]
    plan = bench.make_plan(["tiny"], quick=True, repeats=3, memory=False)
    calls = {"train": 0, "infer": 0}

    def ours():
        def call(kind, seconds):
            calls[kind] += 1
            time.sleep(seconds)
        return {"train": lambda: call("train", 0.001), "infer": lambda: call("infer", 0.0005)}

    row = {"training": {"samples_per_s": 1.0}, "inference": {"samples_per_s": 1.0}}
    [result] = bench.measure_peers(config, 2, 1, plan, row, peers=(_AnyPeer("slow", "synaptic", (), _SlowModel),),
                                   our_calls=ours)
    paired = result["paired"]
    # one sizing call, then per round an untimed call and the timed one
    assert calls == {"train": 1 + 2 * plan.repeats, "infer": 1 + 2 * plan.repeats}
    for kind in ("training", "inference"):
        stats = paired[kind]
        assert stats["rounds"] == plan.repeats and stats["min"] <= stats["median"] <= stats["max"]
        assert stats["median"] > 2.0                                          # the peer is ten times slower


_FAKE_SERVER = """
import sys, time
print("noise before the protocol", flush=True)
print("onlinedelay-peer ready", flush=True)
for line in sys.stdin:
    if line.strip() == "quit":
        break
    time.sleep(0.002)
    print("onlinedelay-peer " + str(2_000_000 if line.strip() == "train" else 1_000_000), flush=True)
"""


def test_an_isolated_peer_answers_one_timed_call_per_request():
    """The server process of the paired timing: its answers (other output skipped), then its exit."""
    from onlinedelay.bench.peers import _served_model
    with _served_model({"peer": "fake"}, timeout_s=60, code=_FAKE_SERVER) as timed:
        assert [timed("train"), timed("infer"), timed("train")] == [2_000_000, 1_000_000, 2_000_000]
    with pytest.raises(RuntimeError, match="exited"):
        with _served_model({"peer": "fake"}, timeout_s=60, code="print('no protocol here')"):
            pass


def test_the_peer_server_builds_the_named_peer_on_our_batch(monkeypatch, capsys):
    """peer_server_main: warm-up, "ready", one answer per command until "quit"."""
    import io
    from onlinedelay.bench.peers import peer_server_main
    _FakeModel.built.clear()
    monkeypatch.setattr("onlinedelay.bench.peers.PEERS", (bench.Peer("fake", "synaptic", (), _FakeModel, isolated=True),))
    monkeypatch.setattr("sys.stdin", io.StringIO("train\ninfer\ntrain\nquit\ntrain\n"))
    config = bench.CONFIGS["tiny"]
    peer_server_main(json.dumps({"peer": "fake", "config": config.to_dict(), "batch_size": 3, "threads": 1,
                                 "steps": 12, "seed": 4}))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "onlinedelay-peer ready" and len(lines) == 4
    assert all(int(line.split()[1]) > 0 for line in lines[1:])
    [record] = _FakeModel.built
    assert record["train"] == 1 + 2 and record["infer"] == 1 + 1      # warm-up, then the commands before "quit"
    np.testing.assert_array_equal(record["x"], bench.training_batch("tiny", config.n_inputs, config.n_outputs,
                                                                    12, 3, 4)[0])


def test_fast_figures_repeat_until_they_fill_the_timing_budget():
    from onlinedelay.bench.workload import MAX_REPEATS, repeats_for
    assert repeats_for(4_000_000, 5, 0.3) == 75            # 4 ms calls: 75 fill 0.3 s
    assert repeats_for(90_000_000, 5, 0.3) == 5            # slow calls: the minimum
    assert repeats_for(1_000, 5, 0.3) == MAX_REPEATS       # capped
    assert repeats_for(4_000_000, 5, 0.0) == 5             # --quick: no budget
    assert bench.make_plan(["tiny"], quick=True, memory=False).to_dict()["timed_s"] == 0.0


def test_a_peer_missing_a_module_is_reported_not_run():
    config = bench.CONFIGS["tiny"]
    plan = bench.make_plan(["tiny"], quick=True, memory=False)
    ours = {"training": {"samples_per_s": 1.0}, "inference": {"samples_per_s": 1.0}}
    peer = _AnyPeer("needs-missing", "synaptic", ("onlinedelay_no_such_module",), None)
    assert bench.measure_peers(config, 1, 1, plan, ours, peers=(peer,)) == [
        {"peer": "needs-missing", "missing": "onlinedelay_no_such_module"}]


def test_the_report_shows_peers_side_by_side(monkeypatch):
    _FakeModel.built.clear()
    monkeypatch.setattr("onlinedelay.bench.peers.PEERS", (_AnyPeer("fake", "synaptic", (), _FakeModel),
                                                          _AnyPeer("gone", "synaptic", ("onlinedelay_nope",), None)))
    plan = dataclasses.replace(bench.make_plan(["tiny"], batch_sizes=[2], quick=True, memory=False), peers=True)
    report = bench.run_bench(plan)
    [row] = report["results"]
    fake, gone = row["peers"]
    assert fake["training_ratio"] == pytest.approx(row["training"]["samples_per_s"] / fake["training"]["samples_per_s"])
    assert gone == {"peer": "gone", "missing": "onlinedelay_nope"}
    text = bench.format_report(report)
    assert "peers on the same batches" in text and "gone skipped, onlinedelay_nope not installed" in text
    assert fake["paired"]["training"]["rounds"] == plan.repeats and "ours vs fake, alternated pairs of runs" in text
    cells = next(line for line in text.splitlines() if line.startswith("tiny") and " fake " in line).split()
    assert len(cells) == 10 and cells[3] == "fake" and cells[6].endswith("x") and cells[9].endswith("x")
    json.dumps(report, allow_nan=False)                                       # still plain data


def _check_paired(pair, plan, report, label) -> str:
    """A paired measurement of ``plan.repeats`` rounds, ordered finite positive ratios, printed on the
    report's line holding ``label``; returns that line (the report stays plain data)."""
    assert pair["rounds"] == plan.repeats
    for key in ("median", "min", "max"):
        _positive_finite(pair[key], key)
    assert pair["min"] <= pair["median"] <= pair["max"]
    line = next(line for line in bench.format_report(report).splitlines() if label in line)
    assert "alternated pairs of runs: median" in line and f"over {plan.repeats} rounds" in line
    json.dumps(report, allow_nan=False)
    return line


def test_threads_against_one_thread_are_also_timed_in_alternated_pairs():
    """A multi-thread row gets a paired ratio (1-thread time / threads time per round of two runs) next to
    the ratio of the two rows' medians; the report prints both."""
    plan = dataclasses.replace(bench.make_plan(["tiny"], batch_sizes=[2], quick=True, memory=False), threads=(1, 2))
    report = bench.run_bench(plan)
    [speedup] = report["derived"]["thread_speedup"]
    assert (speedup["config"], speedup["batch_size"], speedup["threads"]) == ("tiny", 2, 2)
    _check_paired(speedup["paired"], plan, report, "2 threads vs 1")


def test_batch_one_against_a_batch_is_also_timed_in_alternated_pairs():
    """With batch 1 and a larger batch in the plan, each (config, threads) gets batch 1's time per
    synapse-step over the batch's, from the rows and from alternated rounds; the report prints both."""
    plan = bench.make_plan(["tiny"], batch_sizes=[1, 8], quick=True, memory=False)
    report = bench.run_bench(plan)
    [slowdown] = report["derived"]["batch1_slowdown"]
    assert (slowdown["config"], slowdown["batch_size"], slowdown["threads"]) == ("tiny", 8, 1)
    by_batch = {r["batch_size"]: r["training"]["ns_per_synapse_step"] for r in report["results"]}
    assert slowdown["rows_ratio"] == pytest.approx(by_batch[1] / by_batch[8])
    line = _check_paired(slowdown["paired"], plan, report, "batch 1 vs batch 8")
    assert "from the rows; alternated pairs of runs" in line
    single = bench.run_bench(bench.make_plan(["tiny"], batch_sizes=[8], quick=True, memory=False))
    assert single["derived"]["batch1_slowdown"] == []                # no batch 1 in the plan: nothing paired


def test_synapses_and_trace_arrays_count_every_projection_of_a_layered_network():
    from onlinedelay.bench.measure import synapses_and_traces
    from onlinedelay.network import Network

    cfg = NetworkConfig(n_inputs=6, n_hidden=4, n_outputs=2, n_layers=2, input_delays="synaptic",
                        hidden_delays="none", max_delay_steps=3)
    synapses, traces = synapses_and_traces(Network(cfg, seed=0))
    assert synapses == 6 * 4 + 4 * 4 and traces == pytest.approx((24 * 4 + 16 * 2) / 40)
    one_layer = Network(cfg.replace(n_layers=1), seed=0)
    assert synapses_and_traces(one_layer) == (24, 4.0)
    deep = bench.BenchConfig("deep", "6-4-4-2", cfg.replace(input_delays="none"))
    assert not any(p.matches(deep) for p in bench.PEERS)                  # peers are single-layer
    assert [p.name for p in bench.PEERS if p.matches(bench.BenchConfig("one", "", cfg.replace(n_layers=1)))] \
        == ["PyTorch + DCLS"]
