"""One ablation run: train (or resume, or copy), evaluate on the test split, prune if asked.

Runs in a worker process (``--jobs``, Dask) as well as inline; everything it needs is in the
JSON-able task spec, and everything it produces is written into the run's own folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from .._version import __version__
from ..atomic import atomic_path
from ..config import LearningConfig, NetworkConfig, RunConfig
from ..io import load_model
from ..evaluate import evaluate_arrays, load_eval_data
from ..metrics import metrics_summary
from ..train import DivergenceError, Trainer
from .plan import read_json
from .pruning import PRUNE_FRACTIONS, PRUNE_ORDERS, prune_delays

COPIED_FILES = ("checkpoint.h5", "best.h5", "last.h5", "metrics.jsonl", "config.json")


def _learned_mean_delay(spec: dict) -> float:
    """Mean input delay (steps) of the learned run a ``fixed-mean`` run takes its delays from."""
    learned = load_model(Path(spec["mean_from"]) / "best.h5").net.params.input.delay
    return float(np.mean(learned.astype(np.float64)))


def _copy_run(source: Path, out: Path) -> None:
    for name in COPIED_FILES:
        if (source / name).is_file():
            with atomic_path(out / name) as tmp:
                shutil.copyfile(source / name, tmp)


def _train(spec: dict, out: Path) -> tuple:
    """Train or resume the run; returns (action, status, note, initial input delay or None)."""
    prepare, initial_delay = None, None
    if spec.get("mean_from"):
        initial_delay = _learned_mean_delay(spec)

        def prepare(net, value=initial_delay):
            net.set_delays("input", np.full(net.params.input.delay.shape, value))
    trainer = Trainer(NetworkConfig.from_dict(spec["network"]), LearningConfig.from_dict(spec["learning"]),
                      RunConfig.from_dict(spec["run"]), out, prepare_network=prepare)
    resume = (out / "checkpoint.h5").is_file() and (out / "config.json").is_file()
    try:
        trainer.run(resume=resume)
    except DivergenceError as err:
        return ("resumed" if resume else "trained"), "diverged", str(err), initial_delay
    return ("resumed" if resume else "trained"), "ok", None, initial_delay


def _evaluate(result: dict, spec: dict, out: Path) -> None:
    """Test accuracy, key metrics (:func:`metrics.metrics_summary`), parameter counts, delay statistics
    (and pruning curves) of best.h5 on the test split, into ``result``."""
    loaded, x, labels = load_eval_data(out / "best.h5", spec.get("test_dataset"))[:3]
    net = loaded.net
    lc = loaded.learning_config or LearningConfig()
    evaluation = evaluate_arrays(net, x, labels, lc.loss_start_step, metrics=True)
    result["test_accuracy"] = evaluation["accuracy"]
    result["metrics"] = metrics_summary(evaluation["metrics"])
    counts = net.parameter_counts()
    result["parameters"] = counts
    result["total_parameters"] = int(sum(counts.values()))
    d = net.params.input.delay.astype(np.float64)
    result["mean_delay_steps"] = float(d.mean()) if d.size else None
    result["std_delay_steps"] = float(d.std()) if d.size else None
    if spec.get("prune") and d.size:
        curves = prune_delays(net, x, labels, PRUNE_FRACTIONS, PRUNE_ORDERS, lc.loss_start_step, spec["seed"])
        pruning = {"fractions": list(PRUNE_FRACTIONS), "curves": curves, "n_delays": int(d.size),
                   "mode": net.config.input_delays}
        with atomic_path(out / "pruning.json") as tmp:
            tmp.write_text(json.dumps(pruning, indent=1))
        result["pruning"] = pruning


def execute_run(spec: dict) -> dict:
    """Train (or resume, or copy) one run, evaluate it, prune it if asked; returns and writes result.json.

    ``spec`` is a :class:`Task` spec from :func:`plan`.  A run that diverges is a result
    (``status = "diverged"``, no accuracy), not an error.
    """
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    reused = spec.get("copy_from")
    if reused:
        action = "copied"
        _copy_run(Path(reused), out)
        source_result = read_json(Path(reused) / "result.json") or {}
        status, note = source_result.get("status", "ok"), source_result.get("note")
        initial_delay = source_result.get("initial_input_delay_steps")
    else:
        action, status, note, initial_delay = _train(spec, out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (out / "metrics.jsonl").is_file() else []
    valid = [m["valid_accuracy"] for m in metrics if m.get("valid_accuracy") is not None]
    result = {"id": spec["id"], "grid": spec["grid"], "config": spec["config"], "description": spec["description"],
              "seed": spec["seed"], "key": spec["key"], "status": status, "note": note, "action": action,
              "reused_from": reused, "test_accuracy": None, "best_valid_accuracy": max(valid) if valid else None,
              "final_train_accuracy": metrics[-1]["train_accuracy"] if metrics else None,
              "epochs_done": len(metrics), "train_seconds": float(sum(m["seconds"] for m in metrics)),
              "initial_input_delay_steps": initial_delay, "network": spec["network"], "learning": spec["learning"],
              "run": spec["run"], "version": __version__}
    if status == "ok":
        _evaluate(result, spec, out)
    result["wall_seconds"] = time.perf_counter() - started
    with atomic_path(out / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result
