"""`onlinedelay bench`: the harness runs and reports every figure; no timing is asserted."""

import json
import math

import pytest
from click.testing import CliRunner

from onlinedelay import bench
from onlinedelay.cli import main


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
    import numpy as np

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
