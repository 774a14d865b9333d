"""Ablations: named grids of configurations, a resumable parallel runner, and result tables.

A grid is a list of :class:`Variant` s -- network, learning and run configs derived from base
configs (the ``train`` options) -- and nothing else; :func:`make_grid` builds one:

==================  =====================================================================
``delays``          input delays none / synaptic / axonal, same hidden size
``iso-params``      synaptic and axonal delay models vs weights-only models widened to the
                    same number of learnable parameters (``Network.parameter_counts``)
``fixed-vs-learned``  learned delays; fixed random delays (uniform init, not learned); all
                    fixed at 0; all fixed at the mean of the learned delays of the same seed
``pruning``         synaptic and axonal delay models; after training, delays are set to zero
                    shortest first, longest first and in a random order, in steps of 10 %,
                    with the test accuracy at each step (no retraining)
``sparsity``        input density 1.0, 0.5, 0.2, 0.1, without and with delays
``feedback``        symmetric vs random feedback x online vs accumulate updates
``sigma``           width of the Gaussian delay surrogate, 0.5 / 1 / 2 / 4 steps
==================  =====================================================================

:func:`run_ablation` runs every (variant, seed) of the chosen grids, each in its own folder
``OUT/<grid>/<variant>/seed<s>/`` with the seed ``s = run.seed + k`` (k = 0 .. seeds-1), holding
the :class:`~onlinedelay.train.Trainer` artefacts plus ``result.json`` (and ``pruning.json``).
Then :func:`write_report` writes, into ``OUT``::

    results.csv       one row per run (all grids run in OUT)
    pruning.csv       one row per (run, order, fraction) of the pruning curves
    results.md        per grid: mean ± std over seeds, plots, and the command that reproduces it
    reproduce.sh      those commands
    <grid>/ablation.json, <grid>/base_config.json   what was asked (base configs, seeds, variants)
    <grid>/accuracy.png, delays.png, pruning.png    (matplotlib: ``pip install 'onlinedelay[plots]'``)

Design choices
--------------
* **Resume.** A run whose ``result.json`` matches its configuration (a hash of the network,
  learning and run configs) is skipped; one with a ``checkpoint.h5`` is continued with
  ``Trainer.run(resume=True)``, which ends with exactly the parameters of an uninterrupted run;
  anything else starts afresh.  Re-running the same command after an interruption (Ctrl-C, a
  killed machine) therefore does only the missing work.  Raising ``--epochs`` on a finished
  ablation continues every run from its last checkpoint.
* **Identical runs are trained once.**  ``delays/synaptic``, ``fixed-vs-learned/learned`` and
  ``pruning/synaptic`` are the same training run for a given seed; later copies (in this
  invocation or found finished anywhere under OUT) copy the first one's files instead of
  training again (``reused_from`` in the result).
* **Fixed at the mean.**  ``Trainer`` builds its network from the config and seed, so a run
  whose delays start at a given value is seeded through the resume path: the network is built
  as the trainer would, its input delays set with ``Network.set_delays``, and saved as an
  epoch-0 checkpoint (with a fresh optimizer) that ``Trainer.run(resume=True)`` continues.
  The value is the mean input delay of the ``learned`` variant's ``best.h5`` of the same seed.
* **Evaluation.**  Every number is the accuracy of ``best.h5`` (best validation epoch) on the
  dataset's test split (``--test-dataset FILE`` when ``--dataset`` is a file).
* **Parallelism.**  ``jobs`` worker processes (spawned, one run each at a time); with
  ``scheduler`` the same runs go to a Dask distributed cluster (``pip install
  'onlinedelay[dask]'``; workers must see OUT and the dataset at the same paths, and should run
  one thread each: ``dask worker ADDRESS --nthreads 1 --nworkers N``).  Runs only depend on
  each other for copies and for the fixed-at-mean variant.  Every run is deterministic in its
  seed, so results do not depend on ``jobs`` or the scheduler.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import json
import math
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__
from .config import LearningConfig, NetworkConfig, RunConfig

__all__ = ["GRID_NAMES", "GRID_SUMMARIES", "DENSITIES", "SIGMAS", "PRUNE_FRACTIONS", "PRUNE_ORDERS",
           "AblationError", "Variant", "Task", "make_grid", "iso_hidden", "dataset_dims", "plan",
           "run_ablation", "execute_run", "prune_delays", "pruning_curve", "write_report", "format_event"]

GRID_SUMMARIES = {
    "delays": "input delays none vs synaptic vs axonal, same hidden size (3 configs)",
    "iso-params": "synaptic / axonal delay models vs weights-only models widened to their parameter count (4 configs)",
    "fixed-vs-learned": "learned delays vs fixed random vs all fixed at 0 vs all fixed at the learned mean (4 configs)",
    "pruning": "synaptic / axonal models; zero delays shortest-first, longest-first, random in 10 % steps (2 configs)",
    "sparsity": "input density 1.0, 0.5, 0.2, 0.1 without and with delays (8 configs)",
    "feedback": "symmetric vs random feedback x online vs accumulate updates (4 configs)",
    "sigma": "Gaussian delay-surrogate width sigma 0.5, 1, 2, 4 steps (4 configs)",
}
GRID_NAMES = tuple(GRID_SUMMARIES)
DENSITIES = (1.0, 0.5, 0.2, 0.1)
SIGMAS = (0.5, 1.0, 2.0, 4.0)
PRUNE_FRACTIONS = tuple(k / 10 for k in range(11))
PRUNE_ORDERS = ("shortest-first", "longest-first", "random")
_FINAL = ("ok", "diverged")
_COPIED_FILES = ("checkpoint.h5", "best.h5", "last.h5", "metrics.jsonl", "config.json")


class AblationError(ValueError):
    """A bad ablation request (unknown grid, missing test data or optional dependency)."""


@dataclass(frozen=True)
class Variant:
    """One named configuration of a grid.

    Attributes
    ----------
    name : str, folder name and table label
    description : str, one line for the table
    network, learning, run : the configs of its runs (the run's seed is set per seed)
    fixed_at_mean_of : str or None, name of the variant whose learned input delays' mean this
        variant starts from (same seed)
    prune : bool, compute pruning curves after training
    """

    name: str
    description: str
    network: NetworkConfig
    learning: LearningConfig
    run: RunConfig
    fixed_at_mean_of: str | None = None
    prune: bool = False


@dataclass(frozen=True)
class Task:
    """One run: ``id`` is ``grid/variant/seed<s>``; ``spec`` (JSON-able) goes to :func:`execute_run`."""

    id: str
    spec: dict
    needs: tuple = ()


# -- grids -----------------------------------------------------------------------------------------
def _with_delays(net: NetworkConfig) -> str:
    """The delay mode of grids that need delays: the base's, or synaptic when the base has none."""
    return net.input_delays if net.input_delays != "none" else "synaptic"


def dataset_dims(run: RunConfig) -> tuple:
    """(n_inputs, n_outputs) of ``run.dataset`` after pooling by ``run.pool``."""
    from .datasets import load_dataset

    ds = load_dataset(run.dataset, split="train", data_dir=run.data_dir)
    if ds.n_channels % run.pool:
        raise AblationError(f"pool={run.pool} does not divide the {ds.n_channels} channels of {ds.path}")
    return ds.n_channels // run.pool, ds.n_classes


def _total(net: NetworkConfig) -> int:
    from .network import Network

    return sum(Network(net, seed=0).parameter_counts().values())


def iso_hidden(weights_only: NetworkConfig, target_total: int) -> int:
    """Hidden size at which ``weights_only`` has the learnable-parameter count nearest ``target_total``.

    ``weights_only`` must carry the dataset's ``n_inputs`` / ``n_outputs``; counts come from
    ``Network.parameter_counts`` (the count grows with the hidden size, so a bisection finds it).
    """
    lo, hi = 1, 2
    while _total(weights_only.replace(n_hidden=hi)) < target_total:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _total(weights_only.replace(n_hidden=mid)) < target_total:
            lo = mid
        else:
            hi = mid
    below, above = _total(weights_only.replace(n_hidden=lo)), _total(weights_only.replace(n_hidden=hi))
    return lo if target_total - below < above - target_total else hi


def make_grid(name: str, network: NetworkConfig | None = None, learning: LearningConfig | None = None,
              run: RunConfig | None = None, dims: tuple | None = None) -> list:
    """The variants of grid ``name`` derived from base configs (defaults: the config defaults).

    dims : (n_inputs, n_outputs) for ``iso-params`` (default: read from ``run.dataset``).
    Returns a list of :class:`Variant`.
    """
    net = network or NetworkConfig()
    learn = learning or LearningConfig()
    run = run or RunConfig()
    if name not in GRID_SUMMARIES:
        raise AblationError(f"grid {name!r} is unknown; choose one of {', '.join(GRID_NAMES)}")
    mode = _with_delays(net)

    def v(vname, description, n=None, lc=None, **extra):
        return Variant(vname, description, n or net, lc or learn, run, **extra)

    if name == "delays":
        return [v("none", "weights only", net.replace(input_delays="none")),
                v("synaptic", "learned delay per synapse", net.replace(input_delays="synaptic")),
                v("axonal", "learned delay per input channel", net.replace(input_delays="axonal"))]
    if name == "iso-params":
        n_in, n_out = dims if dims is not None else dataset_dims(run)
        sized = net.replace(n_inputs=n_in, n_outputs=n_out)
        out = []
        for delays in ("synaptic", "axonal"):
            target = _total(sized.replace(input_delays=delays))
            wide = iso_hidden(sized.replace(input_delays="none"), target)
            out.append(v(delays, f"learned {delays} delays, {net.n_hidden} hidden ({target} parameters)",
                         net.replace(input_delays=delays)))
            out.append(v(f"none-iso-{delays}", f"weights only, widened to {wide} hidden to match {delays}",
                         net.replace(input_delays="none", n_hidden=wide)))
        return out
    if name == "fixed-vs-learned":
        with_d = net.replace(input_delays=mode, delay_init="uniform")
        fixed = learn.replace(learn_delays=False)
        return [v("learned", f"{mode} delays learned from a uniform init", with_d, learn.replace(learn_delays=True)),
                v("fixed-random", f"{mode} delays fixed at their uniform random init", with_d, fixed),
                v("fixed-zero", "all delays fixed at 0", with_d.replace(delay_init="zero"), fixed),
                v("fixed-mean", "all delays fixed at the mean of the learned delays (same seed)", with_d, fixed,
                  fixed_at_mean_of="learned")]
    if name == "pruning":
        return [v(d, f"learned {d} delays, then pruned", net.replace(input_delays=d), learn.replace(learn_delays=True),
                  prune=True) for d in ("synaptic", "axonal")]
    if name == "sparsity":
        return [v(f"density{p:g}-{d}", f"input density {p:g}, {'no delays' if d == 'none' else d + ' delays'}",
                  net.replace(density=p, input_delays=d))
                for p in DENSITIES for d in ("none", mode)]
    if name == "feedback":
        return [v(f"{fb}-{up}", f"{fb} feedback, {up} updates", None, learn.replace(feedback=fb, update=up))
                for fb in ("symmetric", "random") for up in ("online", "accumulate")]
    # sigma
    return [v(f"sigma{s:g}", f"Gaussian surrogate width {s:g} steps", net.replace(input_delays=mode),
              learn.replace(sigma_steps=s)) for s in SIGMAS]


# -- planning --------------------------------------------------------------------------------------
def _key(net: NetworkConfig, learn: LearningConfig, run: RunConfig, extra=None) -> str:
    blob = json.dumps({"network": net.to_dict(), "learning": learn.to_dict(), "run": run.to_dict(),
                       "extra": extra}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _finished_runs(out: Path) -> dict:
    """key -> run folder of every finished run under ``out``."""
    found = {}
    for path in sorted(out.glob("*/*/seed*/result.json")):
        result = _read_json(path)
        if result and result.get("status") in _FINAL and result.get("key"):
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
                key = _key(var.network, var.learning, vrun, keys.get(mean_of))
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


# -- one run ---------------------------------------------------------------------------------------
def _load_eval_data(model_path, test_dataset=None, split="test", data_dir=None):
    """(loaded model, x (T, N, C), labels (N,)) of the data a model is evaluated on."""
    from .evaluate import load_eval_data

    return load_eval_data(model_path, test_dataset, split, data_dir)[:3]


def prune_delays(net, x, labels, fractions=PRUNE_FRACTIONS, orders=PRUNE_ORDERS, loss_start_step: int = 0,
                 seed: int = 0) -> dict:
    """Accuracy as a growing share of the input delays is set to zero (no retraining).

    Parameters
    ----------
    net : Network with input delays (left as it was on return)
    x : (T, N, n_inputs) spike counts; labels : (N,) int
    fractions : shares of the delays set to 0, in [0, 1]
    orders : any of "shortest-first", "longest-first" (by the real delay, ties in index order)
        and "random" (a permutation drawn from ``seed``)

    Returns
    -------
    {order: [accuracy per fraction]}
    """
    from .evaluate import evaluate_arrays

    delays = net.params.input.delay.astype(np.float64).copy()
    if delays.size == 0:
        raise ValueError("prune_delays: the network has no input delays (input_delays='none')")
    ranking = {"shortest-first": np.argsort(delays, kind="stable"),
               "longest-first": np.argsort(-delays, kind="stable"),
               "random": np.random.default_rng(seed).permutation(delays.size)}
    curves = {}
    try:
        for order in orders:
            if order not in ranking:
                raise ValueError(f"order={order!r} is unknown; choose from {', '.join(ranking)}")
            accs = []
            for f in fractions:
                pruned = delays.copy()
                pruned[ranking[order][:round(f * delays.size)]] = 0.0
                net.set_delays("input", pruned)
                accs.append(evaluate_arrays(net, x, labels, loss_start_step)["accuracy"])
            curves[order] = accs
    finally:
        net.set_delays("input", delays)
    return curves


def pruning_curve(model_path, test_dataset=None, split="test", data_dir=None, fractions=PRUNE_FRACTIONS,
                  orders=PRUNE_ORDERS, seed: int = 0) -> dict:
    """:func:`prune_delays` on a saved model and its test data.

    Returns {"fractions", "curves": {order: [accuracy]}, "n_delays", "mode", "model"}.
    """
    loaded, x, labels = _load_eval_data(model_path, test_dataset, split, data_dir)
    lc = loaded.learning_config or LearningConfig()
    curves = prune_delays(loaded.net, x, labels, fractions, orders, lc.loss_start_step, seed)
    return {"fractions": list(fractions), "curves": curves, "n_delays": int(loaded.net.params.input.delay.size),
            "mode": loaded.net.config.input_delays, "model": str(model_path)}


def _learned_mean_delay(spec: dict) -> float:
    """Mean input delay (steps) of the learned run a ``fixed-mean`` run takes its delays from."""
    from .io import load_model

    learned = load_model(Path(spec["mean_from"]) / "best.h5").net.params.input.delay
    return float(np.mean(learned.astype(np.float64)))


def _copy_run(source: Path, out: Path) -> None:
    from .atomic import atomic_path

    for name in _COPIED_FILES:
        if (source / name).is_file():
            with atomic_path(out / name) as tmp:
                shutil.copyfile(source / name, tmp)


def execute_run(spec: dict) -> dict:
    """Train (or resume, or copy) one run, evaluate it, prune it if asked; returns and writes result.json.

    ``spec`` is a :class:`Task` spec from :func:`plan`.  A run that diverges is a result
    (``status = "diverged"``, no accuracy), not an error.
    """
    from .atomic import atomic_path
    from .evaluate import evaluate_arrays
    from .train import DivergenceError, Trainer

    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    net_cfg = NetworkConfig.from_dict(spec["network"])
    learn_cfg = LearningConfig.from_dict(spec["learning"])
    run_cfg = RunConfig.from_dict(spec["run"])
    started = time.perf_counter()
    status, note, initial_delay, reused = "ok", None, None, None
    if spec.get("copy_from"):
        action, reused = "copied", spec["copy_from"]
        _copy_run(Path(reused), out)
        source_result = _read_json(Path(reused) / "result.json") or {}
        status, note = source_result.get("status", "ok"), source_result.get("note")
        initial_delay = source_result.get("initial_input_delay_steps")
    else:
        prepare = None
        if spec.get("mean_from"):
            initial_delay = _learned_mean_delay(spec)

            def prepare(net, value=initial_delay):
                net.set_delays("input", np.full(net.params.input.delay.shape, value))
        trainer = Trainer(net_cfg, learn_cfg, run_cfg, out, prepare_network=prepare)
        resume = (out / "checkpoint.h5").is_file() and (out / "config.json").is_file()
        action = "resumed" if resume else "trained"
        try:
            trainer.run(resume=resume)
        except DivergenceError as err:
            status, note = "diverged", str(err)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (out / "metrics.jsonl").is_file() else []
    result = {"id": spec["id"], "grid": spec["grid"], "config": spec["config"], "description": spec["description"],
              "seed": spec["seed"], "key": spec["key"], "status": status, "note": note, "action": action,
              "reused_from": reused, "test_accuracy": None, "best_valid_accuracy": None,
              "final_train_accuracy": metrics[-1]["train_accuracy"] if metrics else None,
              "epochs_done": len(metrics), "train_seconds": float(sum(m["seconds"] for m in metrics)),
              "initial_input_delay_steps": initial_delay, "network": spec["network"], "learning": spec["learning"],
              "run": spec["run"], "version": __version__}
    valid = [m["valid_accuracy"] for m in metrics if m.get("valid_accuracy") is not None]
    result["best_valid_accuracy"] = max(valid) if valid else None
    if status == "ok":
        loaded, x, labels = _load_eval_data(out / "best.h5", spec.get("test_dataset"))
        net = loaded.net
        lc = loaded.learning_config or LearningConfig()
        result["test_accuracy"] = evaluate_arrays(net, x, labels, lc.loss_start_step)["accuracy"]
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
    result["wall_seconds"] = time.perf_counter() - started
    with atomic_path(out / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


# -- running ---------------------------------------------------------------------------------------
class _InlineExecutor(cf.Executor):
    """Runs each submitted call at once in this process (``jobs=1``: no pickling, plain tracebacks)."""

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        return future


def _finished_result(task: Task):
    result = _read_json(Path(task.spec["out_dir"]) / "result.json")
    if result and result.get("key") == task.spec["key"] and result.get("status") in _FINAL:
        return result
    return None


def _dask_executor(address: str):
    try:
        from distributed import Client
    except ImportError as err:
        raise AblationError(f"--scheduler needs dask.distributed, which is not installed ({err}); "
                            f"pip install 'onlinedelay[dask]'") from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as err:
        raise AblationError(f"--scheduler {address}: cannot connect to a Dask scheduler ({err})") from None
    return client, client.get_executor(pure=False)


def run_tasks(tasks, jobs: int = 1, scheduler: str | None = None, progress=None) -> tuple:
    """Run ``tasks`` (skipping finished ones), each once its needs are done.

    Returns (results {id: result}, failed {id: message}).  ``progress`` gets event dicts
    (see :func:`format_event`).
    """
    progress = progress or (lambda event: None)
    results, failed, pending = {}, {}, []
    total = len(tasks)

    def emit(task, state, **extra):
        progress({"kind": "run", "id": task.id, "state": state, "done": len(results) + len(failed),
                  "total": total, **extra})

    for task in tasks:
        result = _finished_result(task)
        if result is not None:
            results[task.id] = result
            emit(task, "skipped", result=result)
        else:
            pending.append(task)
    if not pending:
        return results, failed
    client = None
    if scheduler:
        client, executor = _dask_executor(scheduler)
        capacity = len(pending)
    elif jobs > 1:
        import multiprocessing

        executor = cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        capacity = jobs
    else:
        executor, capacity = _InlineExecutor(), 1
    running = {}
    try:
        while pending or running:
            for task in list(pending):
                broken = [n for n in task.needs if n in failed]
                if broken:
                    pending.remove(task)
                    failed[task.id] = f"needs {broken[0]}, which failed"
                    emit(task, "failed", error=failed[task.id])
                elif all(n in results for n in task.needs) and len(running) < capacity:
                    pending.remove(task)
                    emit(task, "started")
                    running[executor.submit(execute_run, task.spec)] = task
            if not running:
                for task in pending:
                    failed[task.id] = f"needs {', '.join(task.needs)}, not part of this ablation"
                    emit(task, "failed", error=failed[task.id])
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                err = future.exception()
                if err is None:
                    results[task.id] = future.result()
                    emit(task, "finished", result=results[task.id])
                else:
                    failed[task.id] = f"{type(err).__name__}: {err}"
                    emit(task, "failed", error=failed[task.id])
    finally:
        for future in running:
            future.cancel()
        if client is None:
            executor.shutdown(wait=not running, cancel_futures=True)
        else:
            executor.shutdown(wait=False)
            client.close()
    return results, failed


def _command(grid, out, seeds, jobs, test_dataset, plots) -> str:
    args = ["onlinedelay", "ablate", grid, "--config", str(Path(out) / grid / "base_config.json"),
            "--seeds", str(seeds), "--jobs", str(jobs), "--out", str(out)]
    if test_dataset:
        args += ["--test-dataset", str(test_dataset)]
    if not plots:
        args.append("--no-plots")
    return shlex.join(args)


def _git_commit():
    import subprocess

    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False,
                               cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None if found.returncode == 0 else None


def run_ablation(grids, network=None, learning=None, run=None, *, seeds: int = 3, jobs: int = 1,
                 out="runs/ablate", scheduler: str | None = None, test_dataset: str | None = None,
                 plots: bool = True, progress=None) -> dict:
    """Run grids x seeds (resuming, in parallel), then write the report.

    Parameters
    ----------
    grids : names from :data:`GRID_NAMES`
    network, learning, run : base configs (the ``train`` options); ``run.seed`` is the first seed
    seeds : int, seeds per variant; jobs : int, worker processes
    out : folder of the ablation; scheduler : Dask scheduler address or None
    test_dataset : file to test on when ``run.dataset`` is a file (named datasets use their test split)
    plots : write PNG plots (needs matplotlib)

    Returns
    -------
    {"results": {id: result}, "failed": {id: message}, "files": {name: path}}
    """
    from .datasets import DATASETS

    network, learning, run = network or NetworkConfig(), learning or LearningConfig(), run or RunConfig()
    grids = list(dict.fromkeys(grids))
    if not grids:
        raise AblationError(f"name at least one grid: {', '.join(GRID_NAMES)} (--list describes them)")
    unknown = [g for g in grids if g not in GRID_SUMMARIES]
    if unknown:
        raise AblationError(f"grid {unknown[0]!r} is unknown; choose from {', '.join(GRID_NAMES)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise AblationError(f"seeds={seeds!r} is not allowed; expected an integer >= 1")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise AblationError(f"jobs={jobs!r} is not allowed; expected an integer >= 1")
    if run.dataset.lower() not in DATASETS and test_dataset is None:
        raise AblationError(f"--dataset {run.dataset} is a file without a test split; give --test-dataset FILE")
    if plots:
        from .plots import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as err:
            raise AblationError(f"{err} (or pass --no-plots)") from None
    if scheduler:
        _dask_executor(scheduler)[0].close()          # fail now, not after the first grid
    out = Path(out)
    variants = {grid: make_grid(grid, network, learning, run) for grid in grids}
    for grid in grids:
        from .atomic import atomic_path

        meta = {"grid": grid, "summary": GRID_SUMMARIES[grid], "seeds": [run.seed + k for k in range(seeds)],
                "variants": [{"name": v.name, "description": v.description, "network": v.network.to_dict(),
                              "learning": v.learning.to_dict(), "prune": v.prune,
                              "fixed_at_mean_of": v.fixed_at_mean_of} for v in variants[grid]],
                "dataset": run.dataset, "test_dataset": test_dataset, "version": __version__,
                "commit": _git_commit(), "command": _command(grid, out, seeds, jobs, test_dataset, plots)}
        base = {"network": network.to_dict(), "learning": learning.to_dict(), "run": run.to_dict()}
        with atomic_path(out / grid / "base_config.json") as tmp:
            tmp.write_text(json.dumps(base, indent=2))
        with atomic_path(out / grid / "ablation.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
    tasks = plan(grids, network, learning, run, seeds, out, test_dataset, variants)
    results, failed = run_tasks(tasks, jobs, scheduler, progress)
    files = write_report(out, plots=plots)
    return {"results": results, "failed": failed, "files": files}


def format_event(event: dict) -> str | None:
    """One line for a progress event of :func:`run_tasks` (None for events not worth a line)."""
    if event.get("kind") != "run" or event["state"] == "started":
        return None
    head = f"[{event['done']}/{event['total']}] {event['id']}"
    if event["state"] == "failed":
        return f"{head} FAILED: {event['error']}"
    r = event["result"]
    what = "already done" if event["state"] == "skipped" else r["action"]
    if r["status"] != "ok":
        return f"{head} {what}: {r['status']}"
    return (f"{head} {what}: test accuracy {r['test_accuracy']:.3f} "
            f"({r['epochs_done']} epochs, {r['train_seconds']:.0f} s training)")


# -- report ----------------------------------------------------------------------------------------
_CSV_FIELDS = ["grid", "config", "seed", "status", "test_accuracy", "best_valid_accuracy", "final_train_accuracy",
               "epochs_done", "n_hidden", "input_delays", "density", "delay_init", "learn_delays", "feedback",
               "update", "sigma_steps", "total_parameters", "learnable_delays", "mean_delay_steps",
               "std_delay_steps", "initial_input_delay_steps", "train_seconds", "reused_from", "path"]


def _row(grid, variant, seed, result, out: Path) -> dict:
    net, learn = variant["network"], variant["learning"]
    row = {"grid": grid, "config": variant["name"], "seed": seed, "status": "missing", "n_hidden": net["n_hidden"],
           "input_delays": net["input_delays"], "density": net["density"], "delay_init": net["delay_init"],
           "learn_delays": learn["learn_delays"] and net["input_delays"] != "none", "feedback": learn["feedback"],
           "update": learn["update"], "sigma_steps": learn["sigma_steps"],
           "path": f"{grid}/{variant['name']}/seed{seed}"}
    if result:
        for name in ("status", "test_accuracy", "best_valid_accuracy", "final_train_accuracy", "epochs_done",
                     "total_parameters", "mean_delay_steps", "std_delay_steps", "initial_input_delay_steps",
                     "train_seconds"):
            row[name] = result.get(name)
        row["learnable_delays"] = (result.get("parameters") or {}).get("input_delays")
        source = result.get("reused_from")
        if source:
            inside = Path(source).resolve().is_relative_to(out.resolve())
            row["reused_from"] = str(Path(source).resolve().relative_to(out.resolve())) if inside else source
    return row


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


def _fmt_seconds(rows) -> str:
    v = [r["train_seconds"] for r in rows if r.get("train_seconds") is not None]
    return f"{np.mean(v):.0f}" if v else "–"


def write_report(out, plots: bool = True) -> dict:
    """Write results.csv, pruning.csv, results.md, reproduce.sh (and PNG plots) for every grid in ``out``.

    Returns {name: path} of the files written.
    """
    from .atomic import atomic_path

    out = Path(out)
    metas = [(grid, _read_json(out / grid / "ablation.json")) for grid in GRID_NAMES]
    metas = [(grid, meta) for grid, meta in metas if meta]
    rows, prune_rows, sections, commands, files = [], [], [], [], {}
    for grid, meta in metas:
        grid_rows, by_variant, pruning = [], {}, {}
        for variant in meta["variants"]:
            vrows = []
            for seed in meta["seeds"]:
                result = _read_json(out / grid / variant["name"] / f"seed{seed}" / "result.json")
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
            "test split; cells give the mean ± sample standard deviation over seeds. Every run's folder "
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
    base = _read_json(out / grid / "base_config.json") or {}
    run = base.get("run", {})
    lines = [f"## {grid}: {meta['summary']}", "",
             f"Dataset `{meta['dataset']}`"
             + (f" (tested on `{meta['test_dataset']}`)" if meta.get("test_dataset") else "")
             + f"; seeds {', '.join(map(str, meta['seeds']))}; {run.get('epochs', '?')} epochs, batch "
             f"{run.get('batch_size', '?')}" + (f", at most {run['max_samples']} training samples"
                                               if run.get("max_samples") else "")
             + ".", "",
             ("| config | description | hidden | parameters | test accuracy | best valid accuracy "
              "| mean delay (steps) | s / run | runs |"),
             "|---|---|---:|---:|---|---|---:|---:|---|"]
    descriptions = {v["name"]: v["description"] for v in meta["variants"]}
    for name, rows in by_variant.items():
        params = [r["total_parameters"] for r in rows if r.get("total_parameters")]
        delays = [r["mean_delay_steps"] for r in rows if r.get("mean_delay_steps") is not None]
        lines.append(f"| {name} | {descriptions[name]} | {rows[0]['n_hidden']} | "
                     f"{params[0] if params else '–'} | {_mean_std([r.get('test_accuracy') for r in rows])} | "
                     f"{_mean_std([r.get('best_valid_accuracy') for r in rows])} | "
                     f"{f'{np.mean(delays):.2f}' if delays else '–'} | {_fmt_seconds(rows)} | {_runs_cell(rows)} |")
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
    from matplotlib.figure import Figure

    from . import plots
    from .io import load_model
    from .network import Network

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
    return written
