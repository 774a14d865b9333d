"""Planning an ablation: every (grid, variant, seed) as a :class:`Task`, identical runs trained once.

A run's ``key`` is a hash of its network, learning and run configs (and, for a fixed-at-mean
run, the key of the run it takes its delays from).  A later task with a key already planned in
this invocation, or found finished anywhere under OUT, copies that run instead of training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import LearningConfig, NetworkConfig, RunConfig
from .grids import make_grid

FINAL_STATUSES = ("ok", "diverged")


@dataclass(frozen=True)
class Task:
    """One run: ``id`` is ``grid/variant/seed<s>``; ``spec`` (JSON-able) goes to :func:`execute_run`."""

    id: str
    spec: dict
    needs: tuple = ()


def read_json(path):
    """The JSON content of ``path``, or None when it is missing or unreadable (a run not done yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_key(net: NetworkConfig, learn: LearningConfig, run: RunConfig, extra=None) -> str:
    """16 hex digits identifying a run's configuration (equal keys train the same model)."""
    blob = json.dumps({"network": net.to_dict(), "learning": learn.to_dict(), "run": run.to_dict(),
                       "extra": extra}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _finished_runs(out: Path) -> dict:
    """key -> run folder of every finished run under ``out``."""
    found = {}
    for path in sorted(out.glob("*/*/seed*/result.json")):
        result = read_json(path)
        if result and result.get("status") in FINAL_STATUSES and result.get("key"):
            found.setdefault(result["key"], path.parent)
    return found


def plan(grids, network=None, learning=None, run=None, seeds: int = 3, out="runs/ablate",
         test_dataset: str | None = None, variants: dict | None = None) -> list:
    """The runs of ``grids`` x ``seeds`` as :class:`Task` s, each after the tasks it needs.

    variants : optional {grid: [Variant]} (default: :func:`make_grid` with the base configs).
    """
    out = Path(out)
    run = run or RunConfig()
    on_disk = _finished_runs(out)
    first, keys, tasks = {}, {}, []
    for grid in grids:
        grid_variants = (variants or {}).get(grid) or make_grid(grid, network, learning, run)
        for var in grid_variants:
            for k in range(seeds):
                seed = run.seed + k
                vrun = var.run.replace(seed=seed)
                tid = f"{grid}/{var.name}/seed{seed}"
                mean_of = f"{grid}/{var.fixed_at_mean_of}/seed{seed}" if var.fixed_at_mean_of else None
                key = run_key(var.network, var.learning, vrun, keys.get(mean_of))
                keys[tid] = key
                spec = {"id": tid, "grid": grid, "config": var.name, "description": var.description, "seed": seed,
                        "out_dir": str(out / tid), "network": var.network.to_dict(),
                        "learning": var.learning.to_dict(), "run": vrun.to_dict(), "key": key,
                        "copy_from": None, "mean_from": None, "prune": var.prune, "test_dataset": test_dataset}
                needs = []
                if key in first:
                    spec["copy_from"] = str(out / first[key])
                    needs.append(first[key])
                elif key in on_disk and on_disk[key] != out / tid:
                    spec["copy_from"] = str(on_disk[key])
                else:
                    first[key] = tid
                    if mean_of:
                        spec["mean_from"] = str(out / mean_of)
                        needs.append(mean_of)
                tasks.append(Task(tid, spec, tuple(needs)))
    return tasks


def finished_result(task: Task):
    """The task's result.json if it finished with the task's configuration, else None."""
    result = read_json(Path(task.spec["out_dir"]) / "result.json")
    if result and result.get("key") == task.spec["key"] and result.get("status") in FINAL_STATUSES:
        return result
    return None
