"""`onlinedelay ablate`: grids as config lists, the resumable parallel runner (processes and Dask), reports."""

import csv
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import onlinedelay
from onlinedelay import ablate, provenance
from onlinedelay.cli import main
from onlinedelay.config import LearningConfig, NetworkConfig, RunConfig
from onlinedelay.datasets.hdf5 import write_events_file
from onlinedelay.errors import OnlineDelayError
from onlinedelay.io import load_model
from onlinedelay.network import Network
from onlinedelay.train import Trainer

TINY = ["--hidden", "8", "--epochs", "2", "--batch-size", "8", "--n-steps", "40"]


def _write(path, n, seed):
    """Learnable toy data: class k fires in its own channel band and time window; 4 speakers."""
    rng = np.random.default_rng(seed)
    times, units, labels = [], [], []
    for _ in range(n):
        k = int(rng.integers(0, 3))
        times.append(np.sort(rng.uniform(0.02 + 0.08 * k, 0.15 + 0.08 * k, 200)))
        units.append(rng.normal(300 + 100 * k, 30, 200).clip(0, 699).astype(np.uint16))
        labels.append(k)
    write_events_file(path, times, units, np.array(labels), ["a", "b", "c"], speakers=np.arange(n) % 4)
    return str(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return {"train": _write(root / "train.h5", 48, 0), "test": _write(root / "test.h5", 24, 1)}


def _ablate(toy, out, *args):
    return CliRunner().invoke(main, ["ablate", *args, "--dataset", toy["train"], "--test-dataset", toy["test"],
                                     "--out", str(out), *TINY])


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _params(path):
    p = load_model(path).net.params
    return [p.input.weight, p.input.delay, p.w_out, p.b_out]


def _assert_same_model(a, b):
    for x, y in zip(_params(a), _params(b)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def report(toy, tmp_path_factory):
    """The three grids of the README's report on the toy data, 2 seeds, one process."""
    out = tmp_path_factory.mktemp("ablation")
    result = _ablate(toy, out, "delays", "fixed-vs-learned", "pruning", "--seeds", "2")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_list_prints_one_line_per_grid():
    result = CliRunner().invoke(main, ["ablate", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(ablate.GRID_NAMES)
    assert len(ablate.GRID_NAMES) == 10 and all(len(line.split()) > 3 for line in lines)


def test_grids_are_lists_of_configs():
    net, learn, run = NetworkConfig(n_hidden=32), LearningConfig(), RunConfig()
    grid = {g: {v.name: v for v in ablate.make_grid(g, net, learn, run, dims=(140, 20))} for g in ablate.GRID_NAMES}

    assert {n: v.network.input_delays for n, v in grid["delays"].items()} == \
        {"none": "none", "synaptic": "synaptic", "axonal": "axonal"}
    assert {v.network.n_hidden for v in grid["delays"].values()} == {32}

    def total(cfg, hidden=None):
        cfg = cfg.replace(n_inputs=140, n_outputs=20, **({"n_hidden": hidden} if hidden else {}))
        return sum(Network(cfg).parameter_counts().values())

    for delays in ("synaptic", "axonal"):
        wide = grid["iso-params"][f"none-iso-{delays}"].network
        target = total(grid["iso-params"][delays].network)
        assert wide.input_delays == "none" and wide.n_hidden >= 32
        gap = abs(total(wide) - target)
        for neighbour in (wide.n_hidden - 1, wide.n_hidden + 1):      # the nearest count
            assert gap <= abs(total(wide, neighbour) - target)
    assert grid["iso-params"]["none-iso-synaptic"].network.n_hidden == round(32 * (2 * 140 + 20) / (140 + 20))

    fvl = grid["fixed-vs-learned"]
    assert fvl["learned"].learning.learn_delays and fvl["learned"].network.delay_init == "uniform"
    assert not fvl["fixed-random"].learning.learn_delays and fvl["fixed-random"].network.delay_init == "uniform"
    assert not fvl["fixed-zero"].learning.learn_delays and fvl["fixed-zero"].network.delay_init == "zero"
    assert not fvl["fixed-mean"].learning.learn_delays and fvl["fixed-mean"].fixed_at_mean_of == "learned"
    assert all(v.prune for v in grid["pruning"].values()) and not any(v.prune for v in fvl.values())
    assert {(v.network.density, v.network.input_delays) for v in grid["sparsity"].values()} == \
        {(p, d) for p in (1.0, 0.5, 0.2, 0.1) for d in ("none", "synaptic")}
    assert {(v.learning.feedback, v.learning.update) for v in grid["feedback"].values()} == \
        {(f, u) for f in ("symmetric", "random") for u in ("online", "accumulate")}
    assert [v.learning.sigma_steps for v in grid["sigma"].values()] == list(ablate.SIGMAS)
    assert {n: (v.network.n_layers, v.network.readout) for n, v in grid["depth"].items()} == \
        {"layers1": (1, "last"), "layers2": (2, "all"), "layers4": (4, "all")}
    rec = grid["recurrence"]
    assert set(rec) == {"none", "dense-learned", "dense-fixed", "dense-nodelay", "conv-learned", "conv-fixed",
                        "conv-nodelay"}
    assert all(v.network.n_layers == 2 and v.network.input_delays == "none" for v in rec.values())
    assert rec["conv-learned"].network.recurrent == "conv" and rec["conv-learned"].learning.learn_delays
    assert rec["dense-fixed"].network.recurrent_delays == "axonal" and not rec["dense-fixed"].learning.learn_delays
    assert rec["dense-nodelay"].network.recurrent_delays == "none" and rec["none"].network.recurrent == "none"
    bits = grid["bits"]
    assert len(bits) == 15
    assert {(v.network.weight_bits, v.network.input_delays, v.network.delay_step) for v in bits.values()} == \
        {(w, d, s) for w in ("ternary", "2", "4", "8", "32") for d, s in (("none", 0.0), ("synaptic", 1.0),
                                                                         ("synaptic", 5.0))}
    assert {n for n, v in bits.items() if v.prune} == {"ternary-step1", "ternary-step5"}
    with pytest.raises(ablate.AblationError, match="unknown; choose one of delays"):
        ablate.make_grid("wiring")


def test_report_has_csv_markdown_plots_and_commands(report):
    out, output = report
    rows = _rows(out / "results.csv")
    assert len(rows) == (3 + 4 + 2) * 2 and {r["status"] for r in rows} == {"ok"}
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert {r["seed"] for r in rows} == {"0", "1"}
    md = (out / "results.md").read_text()
    for needle in ("## delays", "## fixed-vs-learned", "## pruning", " ± ", "| config |",
                   "| delays zeroed | shortest-first | longest-first | random |", "## Reproduce",
                   "](delays/accuracy.png)", "](pruning/pruning.png)"):
        assert needle in md, needle
    for png in ("delays/accuracy.png", "delays/delays.png", "fixed-vs-learned/accuracy.png", "pruning/pruning.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    script = (out / "reproduce.sh").read_text()
    for grid in ("delays", "fixed-vs-learned", "pruning"):
        assert f"onlinedelay ablate {grid} --config {out / grid / 'base_config.json'} --seeds 2" in script
        base = json.loads((out / grid / "base_config.json").read_text())
        assert base["network"]["n_hidden"] == 8 and base["run"]["epochs"] == 2
    # identical runs are trained once: the others are copies, reported as such
    reused = {r["path"]: r["reused_from"] for r in rows if r["reused_from"]}
    assert reused == {f"{g}/{v}/seed{s}": f"delays/{d}/seed{s}" for s in (0, 1)
                      for g, v, d in (("fixed-vs-learned", "learned", "synaptic"), ("pruning", "synaptic", "synaptic"),
                                      ("pruning", "axonal", "axonal"))}
    _assert_same_model(out / "delays/synaptic/seed1/best.h5", out / "fixed-vs-learned/learned/seed1/best.h5")
    assert output.count(" trained: ") == 12 and output.count(" copied: ") == 6


def test_pruning_curves_start_at_the_model_and_end_with_all_delays_zero(report):
    out, _ = report
    accuracy = {(r["config"], r["seed"]): float(r["test_accuracy"]) for r in _rows(out / "results.csv")
                if r["grid"] == "pruning"}
    curves = {}
    for r in _rows(out / "pruning.csv"):
        curves.setdefault((r["config"], r["seed"], r["order"]), []).append((float(r["fraction_zeroed"]),
                                                                          float(r["accuracy"])))
    assert len(curves) == 2 * 2 * 3
    for (config, seed, _), points in curves.items():
        assert [f for f, _ in points] == pytest.approx([k / 10 for k in range(11)])
        assert points[0][1] == accuracy[(config, seed)]
    for config in ("synaptic", "axonal"):
        ends = {curves[(config, "0", order)][-1][1] for order in ablate.PRUNE_ORDERS}
        assert len(ends) == 1                       # 100 % zeroed: the same network whatever the order


def test_fixed_variants_keep_their_delays(report):
    out, _ = report
    fvl = out / "fixed-vs-learned"
    zero = load_model(fvl / "fixed-zero/seed0/best.h5").net
    assert not zero.params.input.delay.any()
    for x, y in zip(_params(fvl / "fixed-zero/seed0/best.h5"), _params(out / "delays/none/seed0/best.h5")):
        if x.size and y.size:                        # delays fixed at 0 train exactly like no delays
            np.testing.assert_allclose(x, y, atol=1e-6)
    fixed = load_model(fvl / "fixed-random/seed0/best.h5").net
    np.testing.assert_array_equal(fixed.params.input.delay, Network(fixed.config, seed=0).params.input.delay)
    learned = load_model(fvl / "learned/seed0/best.h5").net.params.input.delay
    mean = load_model(fvl / "fixed-mean/seed0/best.h5").net.params.input.delay
    np.testing.assert_allclose(mean, np.full(mean.shape, learned.astype(np.float64).mean()), rtol=1e-6)
    result = json.loads((fvl / "fixed-mean/seed0/result.json").read_text())
    assert result["initial_input_delay_steps"] == pytest.approx(float(learned.astype(np.float64).mean()))


def test_every_other_grid_runs_end_to_end(toy, tmp_path):
    result = _ablate(toy, tmp_path, "iso-params", "sparsity", "feedback", "sigma", "--seeds", "1")
    assert result.exit_code == 0, result.output
    rows = {(r["grid"], r["config"]): r for r in _rows(tmp_path / "results.csv")}
    assert len(rows) == 4 + 8 + 4 + 4 and {r["status"] for r in rows.values()} == {"ok"}
    iso = {c: int(r["total_parameters"]) for (g, c), r in rows.items() if g == "iso-params"}
    assert abs(iso["none-iso-synaptic"] - iso["synaptic"]) < abs(iso["none-iso-axonal"] - iso["synaptic"])
    assert rows[("sparsity", "density0.1-none")]["density"] == "0.1"
    assert rows[("sigma", "sigma4")]["sigma_steps"] == "4.0"
    assert rows[("feedback", "random-online")]["feedback"] == "random"
    for grid in ("iso-params", "sparsity", "feedback", "sigma"):
        assert (tmp_path / grid / "accuracy.png").is_file() and f"## {grid}: " in (tmp_path / "results.md").read_text()


def test_depth_and_recurrence_grids_run_end_to_end(toy, tmp_path):
    result = _ablate(toy, tmp_path, "depth", "recurrence", "--seeds", "1")
    assert result.exit_code == 0, result.output
    rows = {(r["grid"], r["config"]): r for r in _rows(tmp_path / "results.csv")}
    assert len(rows) == 3 + 7 and {r["status"] for r in rows.values()} == {"ok"}
    assert [rows[("depth", f"layers{n}")]["n_layers"] for n in (1, 2, 4)] == ["1", "2", "4"]
    params = {c: int(r["total_parameters"]) for (g, c), r in rows.items() if g == "recurrence"}
    assert params["dense-nodelay"] - params["conv-nodelay"] > 0            # conv: 3 taps per layer, not N^2 - N
    assert int(rows[("recurrence", "conv-learned")]["learnable_delays"]) > 0
    assert rows[("recurrence", "conv-fixed")]["learn_delays"] == "False"


def test_bits_grid_runs_end_to_end_with_footprints_pareto_and_heat_map(toy, tmp_path):
    result = _ablate(toy, tmp_path, "bits", "--seeds", "1", "--epochs", "1", "--max-samples", "16")
    assert result.exit_code == 0, result.output
    rows = {r["config"]: r for r in _rows(tmp_path / "results.csv")}
    assert len(rows) == 15 and {r["status"] for r in rows.values()} == {"ok"}
    fp = {c: int(r["footprint_bits"]) for c, r in rows.items()}
    assert fp["ternary-none"] < fp["2bit-none"] < fp["4bit-none"] < fp["8bit-none"] < fp["32bit-none"]
    assert fp["32bit-none"] == int(rows["32bit-none"]["float_footprint_bits"])
    assert fp["ternary-step5"] < fp["ternary-step1"] and rows["ternary-step5"]["bits_per_delay"] == "3"
    for name in ("pareto.png", "heatmap.png", "pruning.png", "accuracy.png"):
        assert (tmp_path / "bits" / name).is_file(), name
    md = (tmp_path / "results.md").read_text()
    assert "](bits/pareto.png)" in md and "](bits/heatmap.png)" in md and "| footprint (kbit) |" in md
    assert "Pruning `ternary-step5`" in md


def test_pareto_front_keeps_the_undominated_points():
    from onlinedelay.plots import pareto_front

    assert pareto_front([10, 20, 30, 40, 5], [0.5, 0.4, 0.8, 0.7, np.nan]) == [0, 2]


def test_rerun_skips_finished_runs_and_resumes_a_killed_one(toy, tmp_path):
    out = tmp_path / "abl"
    first = _ablate(toy, out, "delays", "--seeds", "1", "--checkpoint-every", "1", "--no-plots")
    assert first.exit_code == 0, first.output
    again = _ablate(toy, out, "delays", "--seeds", "1", "--checkpoint-every", "1", "--no-plots")
    assert again.exit_code == 0 and again.output.count("already done") == 3, again.output

    run_dir = out / "delays/synaptic/seed0"
    reference = [a.copy() for a in _params(run_dir / "last.h5")]
    spec = json.loads((run_dir / "result.json").read_text())
    for path in run_dir.iterdir():
        path.unlink()

    class Killed(Exception):
        pass

    def kill_in_epoch_two(event, seen=[]):          # noqa: B006 - a counter across calls
        if event["kind"] == "batch":
            seen.append(1)
            if len(seen) == 6:
                raise Killed

    trainer = Trainer(NetworkConfig.from_dict(spec["network"]), LearningConfig.from_dict(spec["learning"]),
                      RunConfig.from_dict(spec["run"]), run_dir, progress=kill_in_epoch_two)
    with pytest.raises(Killed):
        trainer.run()
    assert (run_dir / "checkpoint.h5").is_file() and not (run_dir / "result.json").exists()
    resumed = _ablate(toy, out, "delays", "--seeds", "1", "--checkpoint-every", "1", "--no-plots")
    assert resumed.exit_code == 0, resumed.output
    assert "delays/synaptic/seed0 resumed" in resumed.output and resumed.output.count("already done") == 2
    for a, b in zip(reference, _params(run_dir / "last.h5")):
        np.testing.assert_array_equal(a, b)
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_parallel_processes_give_the_same_runs(toy, report, tmp_path):
    result = _ablate(toy, tmp_path, "delays", "--seeds", "1", "--jobs", "2", "--no-plots")
    assert result.exit_code == 0, result.output
    for config in ("none", "synaptic", "axonal"):
        _assert_same_model(tmp_path / f"delays/{config}/seed0/best.h5", report[0] / f"delays/{config}/seed0/best.h5")


def test_dask_scheduler_on_loopback_gives_the_same_runs(toy, report, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, host="127.0.0.1", protocol="tcp",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = _ablate(toy, tmp_path, "delays", "--seeds", "1", "--no-plots", "--scheduler",
                         cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    assert result.output.count(" trained: ") == 3
    for config in ("none", "synaptic", "axonal"):
        _assert_same_model(tmp_path / f"delays/{config}/seed0/best.h5", report[0] / f"delays/{config}/seed0/best.h5")


def test_missing_optional_dependencies_fail_before_any_run(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = _ablate(toy, tmp_path, "delays")
    assert result.exit_code == 2 and "pip install 'onlinedelay[plots]'" in result.output, result.output
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = _ablate(toy, tmp_path, "delays", "--no-plots", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 2 and "pip install 'onlinedelay[dask]'" in result.output, result.output
    assert not (tmp_path / "delays" / "none").exists()


@pytest.mark.parametrize("args,needle", [
    (["wiring"], "'wiring' is unknown"),
    ([], "name at least one grid: delays, iso-params"),
    (["delays", "--seeds", "0"], "0 is not in the range"),
])
def test_bad_requests_exit_2(toy, tmp_path, args, needle):
    result = _ablate(toy, tmp_path, *args)
    assert result.exit_code == 2 and needle in result.output, result.output


def test_a_file_dataset_needs_a_test_file(toy, tmp_path):
    result = CliRunner().invoke(main, ["ablate", "delays", "--dataset", toy["train"], "--out", str(tmp_path)])
    assert result.exit_code == 2 and "give --test-dataset FILE" in result.output


def test_prune_delays_zeroes_shortest_longest_and_random_shares(monkeypatch):
    net = Network(NetworkConfig(n_inputs=6, n_hidden=3, n_outputs=2, input_delays="synaptic"), seed=1)
    original = net.params.input.delay.copy()
    seen = []
    monkeypatch.setattr("onlinedelay.ablate.pruning.evaluate_arrays",
                        lambda net, x, labels, start: seen.append(net.params.input.delay.copy()) or {"accuracy": 0.5})
    curves = ablate.prune_delays(net, np.zeros((5, 4, 6), np.uint16), np.zeros(4, np.int64), seed=3)
    assert set(curves) == set(ablate.PRUNE_ORDERS) and all(len(c) == 11 for c in curves.values())
    n = original.size
    for i, order in enumerate(ablate.PRUNE_ORDERS):
        previous = np.zeros(n, bool)
        for j, f in enumerate(ablate.PRUNE_FRACTIONS):
            delays = seen[11 * i + j]
            zeroed = (delays == 0) & (original != 0)
            assert zeroed.sum() == round(f * n) and (zeroed >= previous).all()      # nested shares
            np.testing.assert_array_equal(delays[~zeroed], original[~zeroed])
            if order != "random" and 0 < zeroed.sum() < n:
                kept = original[~zeroed]
                cut = original[zeroed]
                assert cut.max() <= kept.min() if order == "shortest-first" else cut.min() >= kept.max()
            previous = zeroed
    np.testing.assert_array_equal(net.params.input.delay, original)               # restored


def test_ablation_json_records_the_version_and_the_source_revision(report):
    meta = json.loads((report[0] / "delays" / "ablation.json").read_text())
    assert meta["version"] == onlinedelay.__version__
    assert meta["commit"] == provenance.git_revision().get("commit")      # None outside a git checkout


def test_bad_library_requests_raise_the_shared_error_type():
    assert issubclass(ablate.AblationError, OnlineDelayError)
    for kwargs, needle in (({"seeds": 0}, "seeds=0 is not allowed; expected an integer >= 1"),
                           ({"jobs": True}, "jobs=True is not allowed"),
                           ({"seeds": 2.0}, "seeds=2.0 is not allowed")):
        with pytest.raises(ablate.AblationError, match=needle):
            ablate.run_ablation(["delays"], plots=False, **kwargs)
    with pytest.raises(OnlineDelayError, match="name at least one grid"):
        ablate.run_ablation([], plots=False)
