"""Running an ablation: tasks to worker processes or a Dask cluster, resuming, then the report."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import shlex
from pathlib import Path

from .._version import __version__
from ..atomic import atomic_path
from ..config import LearningConfig, NetworkConfig, RunConfig
from ..datasets import DATASETS
from ..errors import check_int
from ..plots import require_matplotlib
from ..provenance import git_revision
from .execute import execute_run
from .grids import GRID_SUMMARIES, AblationError, check_grids, make_grid
from .plan import Task, finished_result, plan
from .report import write_report


class _InlineExecutor(cf.Executor):
    """Runs each submitted call at once in this process (``jobs=1``: no pickling, plain tracebacks)."""

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        return future


def _dask_executor(address: str):
    try:
        # dask is an optional extra (onlinedelay[dask]), needed only with --scheduler
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

    def emit(task: Task, state, **extra):
        progress({"kind": "run", "id": task.id, "state": state, "done": len(results) + len(failed),
                  "total": total, **extra})

    for task in tasks:
        result = finished_result(task)
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


def _check_request(grids, run: RunConfig, seeds, jobs, scheduler, test_dataset, plots) -> list:
    """Everything that can be wrong with the request, checked before any run starts."""
    grids = check_grids(grids)
    check_int("seeds", seeds, minimum=1, error=AblationError)
    check_int("jobs", jobs, minimum=1, error=AblationError)
    if run.dataset.lower() not in DATASETS and test_dataset is None:
        raise AblationError(f"--dataset {run.dataset} is a file without a test split; give --test-dataset FILE")
    if plots:
        try:
            require_matplotlib()
        except ImportError as err:
            raise AblationError(f"{err} (or pass --no-plots)") from None
    if scheduler:
        _dask_executor(scheduler)[0].close()          # fail now, not after the first grid
    return grids


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
    network, learning, run = network or NetworkConfig(), learning or LearningConfig(), run or RunConfig()
    grids = _check_request(grids, run, seeds, jobs, scheduler, test_dataset, plots)
    out = Path(out)
    variants = {grid: make_grid(grid, network, learning, run) for grid in grids}
    commit = git_revision().get("commit")
    for grid in grids:
        meta = {"grid": grid, "summary": GRID_SUMMARIES[grid], "seeds": [run.seed + k for k in range(seeds)],
                "variants": [{"name": v.name, "description": v.description, "network": v.network.to_dict(),
                              "learning": v.learning.to_dict(), "prune": v.prune,
                              "fixed_at_mean_of": v.fixed_at_mean_of} for v in variants[grid]],
                "dataset": run.dataset, "test_dataset": test_dataset, "version": __version__,
                "commit": commit, "command": _command(grid, out, seeds, jobs, test_dataset, plots)}
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
