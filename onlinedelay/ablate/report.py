"""The ablation report: results.csv, pruning.csv, results.md, reproduce.sh and PNG plots.

Everything is read back from the run folders under OUT (``result.json`` of each run,
``ablation.json`` of each grid), so the report can be rewritten at any time, from any machine
that sees OUT, and covers every grid ever run there.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .. import plots
from .._version import __version__
from ..atomic import atomic_path
from ..config import NetworkConfig
from ..io import load_model
from ..network import Network
from ..quantize import footprint_bits
from .grids import GRID_NAMES
from .plan import read_json

_CSV_FIELDS = ["grid", "config", "seed", "status", "test_accuracy", "best_valid_accuracy", "final_train_accuracy",
               "epochs_done", "n_hidden", "n_layers", "recurrent", "recurrent_delays", "input_delays", "density", "delay_init", "learn_delays", "feedback",
               "update", "sigma_steps", "total_parameters", "learnable_delays", "mean_delay_steps",
               "std_delay_steps", "initial_input_delay_steps", "weight_bits", "delay_step", "bits_per_delay",
               "footprint_bits", "float_footprint_bits", "effective_synops_per_sample", "dense_synops_per_sample",
               "activation_sparsity", "membrane_updates_per_sample", "mean_delay_ms", "max_delay_ms",
               "train_seconds", "reused_from", "path"]
# results.csv column <- key of a run's result["metrics"] (metrics.metrics_summary; per sample of the test split)
_METRIC_COLUMNS = {"effective_synops_per_sample": "effective_synops", "dense_synops_per_sample": "dense_synops",
                   "activation_sparsity": "activation_sparsity", "membrane_updates_per_sample": "membrane_updates",
                   "mean_delay_ms": "mean_delay_ms", "max_delay_ms": "max_delay_ms"}


def _row(grid, variant, seed, result, out: Path) -> dict:
    net, learn = variant["network"], variant["learning"]
    config = NetworkConfig.from_dict(net)
    has_delays = any(spec.feedforward.delays != "none" or (spec.recurrent is not None and spec.recurrent.delays != "none")
                     for spec in config.layer_specs)
    row = {"grid": grid, "config": variant["name"], "seed": seed, "status": "missing", "n_hidden": net["n_hidden"],
           "n_layers": config.n_layers, "recurrent": config.recurrent, "recurrent_delays": config.recurrent_delays,
           "input_delays": net["input_delays"], "density": net["density"], "delay_init": net["delay_init"],
           "learn_delays": learn["learn_delays"] and has_delays, "feedback": learn["feedback"],
           "update": learn["update"], "sigma_steps": learn["sigma_steps"],
           "path": f"{grid}/{variant['name']}/seed{seed}", **_footprint_columns(config)}
    if result:
        for name in ("status", "test_accuracy", "best_valid_accuracy", "final_train_accuracy", "epochs_done",
                     "total_parameters", "mean_delay_steps", "std_delay_steps", "initial_input_delay_steps",
                     "train_seconds"):
            row[name] = result.get(name)
        metrics = result.get("metrics") or {}
        row.update({column: metrics.get(key) for column, key in _METRIC_COLUMNS.items()})
        counts = result.get("parameters") or {}
        row["learnable_delays"] = sum(v for k, v in counts.items() if k.endswith("_delays")) if counts else None
        source = result.get("reused_from")
        if source:
            inside = Path(source).resolve().is_relative_to(out.resolve())
            row["reused_from"] = str(Path(source).resolve().relative_to(out.resolve())) if inside else source
    return row


def _footprint_columns(config: NetworkConfig) -> dict:
    """Weight precision, delay step, delay bits and the footprint (bits) of a configuration
    (quantize.footprint_bits of its initial network: the precision, not the learned values, sets it)."""
    fp = footprint_bits(Network(config, seed=0))
    spec = config.layer_specs[0].feedforward
    per_delay = max((e["bits_per_delay"] for e in fp["projections"].values()), default=0)
    return {"weight_bits": spec.weight_bits, "delay_step": spec.delay_step if spec.quantized_delays else 0.0,
            "bits_per_delay": per_delay, "footprint_bits": round(fp["total_bits"]),
            "float_footprint_bits": round(fp["float_total_bits"])}


def _mean_std(values) -> str:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def _runs_cell(rows) -> str:
    ok = sum(r["status"] == "ok" for r in rows)
    diverged = sum(r["status"] == "diverged" for r in rows)
    missing = sum(r["status"] == "missing" for r in rows)
    text = f"{ok}"
    if diverged:
        text += f" (+{diverged} diverged)"
    if missing:
        text += f" ({missing} missing)"
    return text


def _mean_of(rows, column: str, fmt: str) -> str:
    """The mean of ``column`` over the rows that have it (seeds), formatted; '–' when none has."""
    v = [r[column] for r in rows if r.get(column) is not None]
    return format(float(np.mean(v)), fmt) if v else "–"


def _fmt_seconds(rows) -> str:
    v = [r["train_seconds"] for r in rows if r.get("train_seconds") is not None]
    return f"{np.mean(v):.0f}" if v else "–"


def write_report(out, plots: bool = True) -> dict:
    """Write results.csv, pruning.csv, results.md, reproduce.sh (and PNG plots) for every grid in ``out``.

    Returns {name: path} of the files written.
    """
    out = Path(out)
    metas = [(grid, read_json(out / grid / "ablation.json")) for grid in GRID_NAMES]
    metas = [(grid, meta) for grid, meta in metas if meta]
    rows, prune_rows, sections, commands, files = [], [], [], [], {}
    for grid, meta in metas:
        grid_rows, by_variant, pruning = [], {}, {}
        for variant in meta["variants"]:
            vrows = []
            for seed in meta["seeds"]:
                result = read_json(out / grid / variant["name"] / f"seed{seed}" / "result.json")
                vrows.append(_row(grid, variant, seed, result, out))
                if result and result.get("pruning"):
                    p = result["pruning"]
                    pruning.setdefault(variant["name"], []).append(p)
                    for order, accs in p["curves"].items():
                        for f, acc in zip(p["fractions"], accs):
                            prune_rows.append({"grid": grid, "config": variant["name"], "seed": seed, "order": order,
                                               "fraction_zeroed": f, "accuracy": acc})
            by_variant[variant["name"]] = vrows
            grid_rows += vrows
        rows += grid_rows
        pngs = _grid_plots(out, grid, meta, by_variant, pruning) if plots else {}
        files.update({f"{grid}/{name}": path for name, path in pngs.items()})
        sections.append(_grid_section(grid, meta, by_variant, pruning, pngs, out))
        commands.append(meta["command"])
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    files["results.csv"] = out / "results.csv"
    with atomic_path(out / "pruning.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["grid", "config", "seed", "order", "fraction_zeroed", "accuracy"])
        writer.writeheader()
        writer.writerows(prune_rows)
    files["pruning.csv"] = out / "pruning.csv"
    head = ("# Ablation results\n\nWritten by `onlinedelay ablate` (onlinedelay "
            f"{__version__}). Test accuracy is that of each run's `best.h5` (best validation epoch) on the "
            "test split; cells give the mean ± sample standard deviation over seeds (synops, activation sparsity and "
            "delay latency: the mean; NeuroBench-style metrics on the test split, see `onlinedelay/metrics.py`). "
            "Every run's folder "
            "holds its config, metrics, models and `result.json`; `results.csv` has one row per run.\n")
    reproduce = ("## Reproduce\n\nRun from the folder these commands were first run in (paths are relative "
                 "to it); finished runs are skipped, interrupted ones resume:\n\n```bash\n"
                 + "\n".join(commands) + "\n```\n")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(head + "\n" + "\n".join(sections) + "\n" + reproduce)
    files["results.md"] = out / "results.md"
    with atomic_path(out / "reproduce.sh") as tmp:
        tmp.write_text("#!/usr/bin/env bash\n# Reproduce every ablation in this folder (written by onlinedelay "
                       "ablate).\nset -euo pipefail\n" + "\n".join(commands) + "\n")
        tmp.chmod(0o755)
    files["reproduce.sh"] = out / "reproduce.sh"
    return files


def _grid_section(grid, meta, by_variant, pruning, pngs, out) -> str:
    base = read_json(out / grid / "base_config.json") or {}
    run = base.get("run", {})
    lines = [f"## {grid}: {meta['summary']}", "",
             f"Dataset `{meta['dataset']}`"
             + (f" (tested on `{meta['test_dataset']}`)" if meta.get("test_dataset") else "")
             + f"; seeds {', '.join(map(str, meta['seeds']))}; {run.get('epochs', '?')} epochs, batch "
             f"{run.get('batch_size', '?')}" + (f", at most {run['max_samples']} training samples"
                                               if run.get("max_samples") else "")
             + ".", "",
             ("| config | description | hidden | parameters | footprint (kbit) | test accuracy | best valid accuracy "
              "| mean delay (steps) | synops / sample | activation sparsity | mean delay latency (ms) | s / run | runs |"),
             "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|"]
    descriptions = {v["name"]: v["description"] for v in meta["variants"]}
    for name, rows in by_variant.items():
        params = [r["total_parameters"] for r in rows if r.get("total_parameters")]
        delays = [r["mean_delay_steps"] for r in rows if r.get("mean_delay_steps") is not None]
        lines.append(f"| {name} | {descriptions[name]} | {rows[0]['n_hidden']} | "
                     f"{params[0] if params else '–'} | {rows[0]['footprint_bits'] / 1000:.1f} | "
                     f"{_mean_std([r.get('test_accuracy') for r in rows])} | "
                     f"{_mean_std([r.get('best_valid_accuracy') for r in rows])} | "
                     f"{f'{np.mean(delays):.2f}' if delays else '–'} | {_mean_of(rows, 'effective_synops_per_sample', ',.0f')} | "
                     f"{_mean_of(rows, 'activation_sparsity', '.3f')} | {_mean_of(rows, 'mean_delay_ms', '.1f')} | "
                     f"{_fmt_seconds(rows)} | {_runs_cell(rows)} |")
    for name, curves in pruning.items():
        orders = list(curves[0]["curves"])
        lines += ["", (f"Pruning `{name}` ({curves[0]['n_delays']} {curves[0]['mode']} delays, {len(curves)} "
                       "seeds): test accuracy after setting a share of the delays to zero, no retraining."), "",
                  "| delays zeroed | " + " | ".join(orders) + " |", "|---:|" + "---|" * len(orders)]
        for i, f in enumerate(curves[0]["fractions"]):
            cells = [_mean_std([c["curves"][o][i] for c in curves]) for o in orders]
            lines.append(f"| {100 * f:.0f} % | " + " | ".join(cells) + " |")
    if pngs:
        lines.append("")
        lines += [f"![{grid} {name}]({grid}/{path.name})" for name, path in pngs.items()]
    lines += ["", f"Reproduce: `{meta['command']}`", ""]
    return "\n".join(lines)


def _grid_plots(out, grid, meta, by_variant, pruning) -> dict:
    # matplotlib is an optional extra (onlinedelay[plots]); run_ablation checks it is there first
    from matplotlib.figure import Figure

    written = {}
    names = list(by_variant)
    accs = [[np.nan if r.get("test_accuracy") is None else r["test_accuracy"] for r in by_variant[n]] for n in names]
    fig = plots.accuracy_by_config(names, accs, title=f"{grid}: test accuracy per config")
    written["accuracy"] = out / grid / "accuracy.png"
    fig.savefig(written["accuracy"], dpi=120)
    delays, initial, max_delay = {}, [], 0
    for name, rows in by_variant.items():
        values = []
        for r in rows:
            model = out / r["path"] / "best.h5"
            if r["status"] == "ok" and model.is_file() and r["learn_delays"]:
                net = load_model(model).net
                values.append(net.params.input.delay.astype(np.float64))
                max_delay = max(max_delay, net.config.max_delay_steps)
                if not delays:                       # the first learned variant's initial delays, for reference
                    initial.append(Network(net.config, seed=r["seed"]).params.input.delay.astype(np.float64))
        if values:
            delays[name] = np.concatenate(values)
    if delays:
        delays = {f"initial ({next(iter(delays))})": np.concatenate(initial), **delays}
        fig = plots.delay_histogram(delays, max_delay, title=f"{grid}: learned input delays (all seeds)")
        written["delays"] = out / grid / "delays.png"
        fig.savefig(written["delays"], dpi=120)
    if pruning:
        fig = Figure(figsize=(5.5 * len(pruning), 3.8), layout="constrained")
        for ax, (name, curves) in zip(np.atleast_1d(fig.subplots(1, len(pruning))), pruning.items()):
            summary = {}
            for order in curves[0]["curves"]:
                acc = np.array([c["curves"][order] for c in curves], np.float64)
                summary[order] = (curves[0]["fractions"], acc.mean(axis=0),
                                  acc.std(axis=0, ddof=1) if len(curves) > 1 else None)
            plots.pruning_curves(summary, ax=ax, title=f"{grid}/{name}: delays set to zero")
        written["pruning"] = out / grid / "pruning.png"
        fig.savefig(written["pruning"], dpi=120)
    if grid == "bits":
        written.update(_bits_plots(out, grid, names, accs, by_variant))
    return written


def _bits_plots(out, grid, names, accs, by_variant) -> dict:
    """The bits grid: accuracy against footprint (Pareto) and the weight x delay bit-budget heat map."""
    first = [by_variant[n][0] for n in names]
    footprints = [r["footprint_bits"] for r in first]
    fig = plots.pareto_accuracy_footprint(names, footprints, accs, title=f"{grid}: accuracy vs memory footprint")
    written = {"pareto": out / grid / "pareto.png"}
    fig.savefig(written["pareto"], dpi=120)
    weights = list(dict.fromkeys(r["weight_bits"] for r in first))
    delays = list(dict.fromkeys((r["delay_step"], r["bits_per_delay"]) for r in first))
    acc = np.full((len(delays), len(weights)), np.nan)
    fp = np.full((len(delays), len(weights)), np.nan)
    for r, a in zip(first, accs):
        i, j = delays.index((r["delay_step"], r["bits_per_delay"])), weights.index(r["weight_bits"])
        a = np.asarray(a, np.float64)
        acc[i, j] = np.nanmean(a) if np.isfinite(a).any() else np.nan
        fp[i, j] = r["footprint_bits"]
    delay_labels = ["no delays" if step == 0 else f"step {step:g} ({bits} bit)" for step, bits in delays]
    weight_labels = [w if w == "ternary" else f"{w} bit" for w in weights]
    fig = plots.bit_budget_heatmap(weight_labels, delay_labels, acc, fp, title=f"{grid}: bit budget")
    written["heatmap"] = out / grid / "heatmap.png"
    fig.savefig(written["heatmap"], dpi=120)
    return written
