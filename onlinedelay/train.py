"""Training: epochs of batches, validation, checkpoints, resume, divergence checks.

A run writes into its output folder::

    config.json       resolved network / learning / run configs, seed, package version, data file
    metrics.jsonl     one JSON line per epoch (loss, accuracies, time, samples/s, mean delay, delays at the limits)
    checkpoint.h5     everything needed to continue (parameters, optimizer, epoch and batch position)
    last.h5, best.h5  the model after the last epoch and the one with the best validation accuracy
                      (the best training accuracy when there is no validation split)

Batch order is drawn from ``default_rng([seed, epoch])``, so a run resumed from a checkpoint takes
exactly the batches the uninterrupted run would have taken and ends with identical parameters.
Evaluation lives in :mod:`.evaluate`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np

from ._version import __version__
from .atomic import atomic_path, remove_stale_temporaries
from .config import LearningConfig, NetworkConfig, RunConfig
from .errors import OnlineDelayError
from .evaluate import clipped_note, evaluate_arrays, infer, load_split, samples_longer_than, select_samples
from .evaluate import evaluate_model  # noqa: F401 - re-exported: the walkthrough notebook imports it from here
from .io import load_model, restore_optimizer, save_model
from .learning import ThreeFactorLearner
from .network import Network
from .quantize import footprint_bits

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.h5", "best.h5", "last.h5")
# options that may change when a run is resumed: they do not change what is computed
RESUMABLE_CHANGES = ("epochs", "threads", "checkpoint_every")
COMPILE_NOTICE_S = 1.0           # say "compiling kernels" when warming them takes longer than this


class DivergenceError(RuntimeError):
    """Training produced NaN or inf; the last good checkpoint is kept."""


class ConfigMismatchError(OnlineDelayError):
    """``--resume`` was asked with a configuration that differs from the checkpoint's."""


# -- helpers ----------------------------------------------------------------------------------------
def _mean_delay(net: Network):
    d = np.concatenate([proj.delay for _, _, proj in net.params.projections()])
    return float(d.mean()) if d.size else None


def _finite_params(net: Network) -> bool:
    return all(np.isfinite(a).all() for _, a in net.params.arrays() if a.dtype.kind == "f")


def run_batch(learner: ThreeFactorLearner, x, labels) -> dict:
    """One training batch: ``learner.run_sample(x, labels, update=True)``.  The learner warns of
    nothing; the epoch line reports the delays at the limits (:func:`delays_at_limits`)."""
    return learner.run_sample(x, labels, update=True)


def delays_at_limits(net: Network) -> tuple[int, int]:
    """(delays at 0 or ``max_delay_steps``, all delays): learned delays end there only by clipping."""
    d = np.concatenate([proj.delay for _, _, proj in net.params.projections()])
    return int(np.count_nonzero((d <= 0) | (d >= net.config.max_delay_steps))), int(d.size)


def read_metrics(path) -> list[dict]:
    """The epoch lines of a ``metrics.jsonl`` (unreadable lines, e.g. one cut by a kill, are skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("epoch"), int):
            lines.append(line)
    return lines


def load_run_config(out_dir) -> dict:
    """The ``config.json`` of the run in ``out_dir`` as written by :class:`Trainer` (validated)."""
    path = Path(out_dir) / "config.json"
    if not path.is_file():
        raise OnlineDelayError(f"--resume: no run in {out_dir} ({path} is missing); start one without --resume")
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise OnlineDelayError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(s), dict) for s in ("network", "learning", "run")):
        raise OnlineDelayError(f"{path}: expected the sections network, learning and run")
    return saved


def _position(path, training) -> dict:
    """The validated training position stored in a checkpoint."""
    def bad(field, need):
        raise OnlineDelayError(f"{path}: attrs/training: {field}: expected {need}")

    if not isinstance(training, dict):
        bad("training", "a dict with epoch, batch, partial and best_valid")
    for field in ("epoch", "batch"):
        value = training.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            bad(field, "an integer >= 0")
    partial = training.get("partial")
    if not isinstance(partial, dict) or not all(isinstance(partial.get(k), (int, float)) and
                                                not isinstance(partial.get(k), bool)
                                                for k in ("loss", "correct", "seen", "seconds")):
        bad("partial", "a dict of numbers loss, correct, seen, seconds")
    best = training.get("best_valid")
    if isinstance(best, bool) or not isinstance(best, (int, float)) or not math.isfinite(best):
        bad("best_valid", "a finite number")
    return training


class _CompileNotice:
    """Says "compiling kernels" once the block inside takes longer than ``COMPILE_NOTICE_S`` seconds."""

    def __init__(self, progress):
        self.progress = progress
        self.timer = threading.Timer(COMPILE_NOTICE_S, self._say)
        self.timer.daemon = True
        self.said = False

    def _say(self):
        self.said = True
        self.progress({"kind": "info", "message": "compiling kernels (first run only)..."})

    def __enter__(self):
        self.started = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        if self.said and exc[0] is None:
            seconds = time.perf_counter() - self.started
            self.progress({"kind": "info", "message": f"kernels compiled in {seconds:.1f} s"})


# -- training ---------------------------------------------------------------------------------------
class Trainer:
    """Train a network on a dataset; ``run()`` returns the final summary dict.

    progress : optional callable receiving event dicts ({"kind": "batch" | "epoch" | "info", ...})
    prepare_network : optional callable(net) run once on a fresh (not resumed) network before
        training, e.g. to set starting delays with ``net.set_delays``
    """

    def __init__(self, net_config: NetworkConfig, learn_config: LearningConfig, run_config: RunConfig,
                 out_dir, progress=None, prepare_network=None):
        self.net_config, self.learn_config, self.run_config = net_config, learn_config, run_config
        self.out = Path(out_dir)
        self.progress = progress or (lambda event: None)
        self.prepare_network = prepare_network

    def _info(self, message: str) -> None:
        self.progress({"kind": "info", "message": message})

    def _prepare(self):
        """Load and split the data; raises before anything is written if the run cannot start."""
        run, lc = self.run_config, self.learn_config
        if lc.loss_start_step >= run.n_steps:
            raise OnlineDelayError(f"loss_start_step={lc.loss_start_step} leaves no step of the {run.n_steps}-step "
                                   f"samples (n_steps) in the loss and the prediction; it must be < {run.n_steps}")
        self._info(f"loading {run.dataset}")
        x, labels, ds = load_split(run, self.net_config.dt_ms, "train")
        self.class_names = list(ds.class_names)
        self.data_path = str(ds.path)
        train_idx, valid_idx = np.arange(len(labels)), np.zeros(0, np.int64)
        if run.valid_fraction > 0:
            from .datasets import split_by_speaker

            train_idx, valid_idx = split_by_speaker(ds, valid_fraction=run.valid_fraction, seed=run.seed)
        if run.max_samples is not None and run.max_samples < len(train_idx):
            keep = np.random.default_rng([run.seed, 1]).choice(len(train_idx), run.max_samples, replace=False)
            train_idx = np.sort(train_idx[keep])
        if len(train_idx) == 0:
            raise OnlineDelayError(f"{ds.path}: no training samples left after the validation split "
                                   f"(valid_fraction={run.valid_fraction})")
        self.x_train, self.y_train = select_samples(x, train_idx), labels[train_idx]
        self.x_valid, self.y_valid = select_samples(x, valid_idx), labels[valid_idx]
        self.net_config = self.net_config.replace(n_inputs=x.shape[2], n_outputs=len(self.class_names))
        note = clipped_note(samples_longer_than(ds, self.net_config.dt_ms, run.n_steps), len(ds), run,
                            self.net_config.dt_ms, "the training split")
        if note:
            self._info(note)
        if not len(valid_idx):
            self._info("no validation split (valid_fraction 0): best.h5 is the epoch with the best "
                       "training accuracy")

    def _resolved(self) -> dict:
        return {"network": self.net_config.to_dict(), "learning": self.learn_config.to_dict(),
                "run": self.run_config.to_dict(), "seed": self.run_config.seed, "version": __version__,
                "data_file": self.data_path, "class_names": self.class_names}

    def _save(self, name, training: dict, with_optimizer: bool) -> Path:
        path = self.out / name
        save_model(path, self.net, self.class_names, self.learner if with_optimizer else None, training)
        return path

    def _warm_kernels(self) -> None:
        """Compile (or load from numba's cache) the kernels of this run on a throwaway copy of its
        network, so that compilation stays out of epoch 1's samples/s; the run itself is untouched."""
        run = self.run_config
        n_train = len(self.y_train)
        sizes = {min(2, run.batch_size, n_train), min(2, n_train % run.batch_size)} - {0}
        with _CompileNotice(self.progress):
            for size in sorted(sizes):
                net = Network(self.net_config, seed=run.seed, threads=run.threads)
                learner = ThreeFactorLearner(net, self.learn_config, seed=run.seed)
                run_batch(learner, self.x_train[:, :size], self.y_train[:size])
                infer(net, self.x_train[:, :size], self.learn_config.loss_start_step)

    def _resume(self, resolved: dict) -> dict:
        """Load the checkpoint into the trainer; returns its training position."""
        checkpoint = self.out / "checkpoint.h5"
        if not checkpoint.exists():
            raise OnlineDelayError(f"--resume: no checkpoint in {self.out} (looked for {checkpoint}); the run "
                                   f"stopped before its first one: start it again without --resume")
        self._check_resume(resolved)
        loaded = load_model(checkpoint)
        position = _position(checkpoint, loaded.training)
        self.net = loaded.net
        self.net.set_threads(self.run_config.threads)
        self.learner = ThreeFactorLearner(self.net, self.learn_config, seed=self.run_config.seed)
        restore_optimizer(self.learner, loaded.optimizer)
        kept = [m for m in read_metrics(self.out / "metrics.jsonl") if m["epoch"] <= position["epoch"]]
        with atomic_path(self.out / "metrics.jsonl") as tmp:      # drop lines of epochs the checkpoint lacks
            tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
        return position

    def run(self, resume: bool = False) -> dict:
        run, lc = self.run_config, self.learn_config
        self._prepare()
        self.out.mkdir(parents=True, exist_ok=True)
        for path in remove_stale_temporaries(self.out, RUN_FILES):
            self._info(f"removed {path.name}, left by an interrupted write")
        resolved = self._resolved()
        checkpoint = self.out / "checkpoint.h5"
        start_epoch, start_batch, partial = 0, 0, {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        best_score, best_epoch = -1.0, None
        if resume:
            pos = self._resume(resolved)
            start_epoch, start_batch, partial = pos["epoch"], pos["batch"], pos["partial"]
            best_score, best_epoch = pos["best_valid"], pos.get("best_epoch")
            if start_epoch >= run.epochs:
                return self._summary(best_score, best_epoch, finished_already=True)
            self._info(f"resuming at epoch {start_epoch + 1}, batch {start_batch}")
        else:
            self.net = Network(self.net_config, seed=run.seed, threads=run.threads)
            if self.prepare_network is not None:
                self.prepare_network(self.net)
            self.learner = ThreeFactorLearner(self.net, lc, seed=run.seed)
            with atomic_path(self.out / "config.json") as tmp:
                tmp.write_text(json.dumps(resolved, indent=2))
            (self.out / "metrics.jsonl").write_text("")
        self._warm_kernels()
        n_train = len(self.y_train)
        n_batches = math.ceil(n_train / run.batch_size)
        measure = "valid_accuracy" if len(self.y_valid) else "train_accuracy"
        learns_delays = lc.learn_delays and lc.lr_delays > 0 and delays_at_limits(self.net)[1] > 0
        for epoch in range(start_epoch, run.epochs):
            order = np.random.default_rng([run.seed, epoch]).permutation(n_train)
            started = time.perf_counter() - partial["seconds"]
            for b in range(start_batch, n_batches):
                idx = order[b * run.batch_size:(b + 1) * run.batch_size]
                out = run_batch(self.learner, self.x_train[:, idx], self.y_train[idx])
                if not math.isfinite(out["loss"]) or not _finite_params(self.net):
                    raise DivergenceError(
                        f"training diverged at epoch {epoch + 1}, batch {b + 1}: loss={out['loss']!r} "
                        f"(NaN/inf in the loss or parameters). The last good checkpoint is kept"
                        f"{' at ' + str(checkpoint) if checkpoint.exists() else ''}; lower the learning rates.")
                partial["loss"] += out["loss"] * len(idx)
                partial["correct"] += int(out["correct"].sum())
                partial["seen"] += len(idx)
                elapsed = time.perf_counter() - started
                self.progress({"kind": "batch", "epoch": epoch + 1, "epochs": run.epochs, "batch": b + 1,
                               "batches": n_batches, "loss": partial["loss"] / partial["seen"],
                               "accuracy": partial["correct"] / partial["seen"],
                               "samples_per_s": partial["seen"] / max(elapsed, 1e-9)})
                if run.checkpoint_every and (b + 1) % run.checkpoint_every == 0 and b + 1 < n_batches:
                    partial["seconds"] = elapsed
                    self._save("checkpoint.h5", {"epoch": epoch, "batch": b + 1, "partial": partial,
                                                 "best_valid": best_score, "best_epoch": best_epoch,
                                                 "run": run.to_dict()}, True)
            seconds = time.perf_counter() - started
            valid = (evaluate_arrays(self.net, self.x_valid, self.y_valid, lc.loss_start_step)["accuracy"]
                     if len(self.y_valid) else None)
            metrics = {"epoch": epoch + 1, "train_loss": partial["loss"] / partial["seen"],
                       "train_accuracy": partial["correct"] / partial["seen"], "valid_accuracy": valid,
                       "seconds": seconds, "samples_per_s": partial["seen"] / max(seconds, 1e-9),
                       "mean_input_delay_steps": _mean_delay(self.net),
                       "delays_at_limits": delays_at_limits(self.net)[0] if learns_delays else None}
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            info = {"epoch": epoch + 1, "metrics": metrics, "run": run.to_dict()}
            if metrics[measure] > best_score:
                best_score, best_epoch = metrics[measure], epoch + 1
                self._save("best.h5", info, False)
            self._save("last.h5", info, False)
            start_batch, partial = 0, {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            self._save("checkpoint.h5", {"epoch": epoch + 1, "batch": 0, "partial": partial,
                                         "best_valid": best_score, "best_epoch": best_epoch,
                                         "run": run.to_dict()}, True)
            self.progress({"kind": "epoch", "max_delay_steps": self.net_config.max_delay_steps,
                           "n_delays": delays_at_limits(self.net)[1], **metrics})
        return self._summary(best_score, best_epoch)

    def _summary(self, best_score: float, best_epoch, finished_already: bool = False) -> dict:
        """The dict ``run()`` returns.

        best : {"epoch", "accuracy", "measure": "valid_accuracy" or "train_accuracy"} of best.h5;
        best_valid_accuracy : its validation accuracy (None without a validation split);
        finished_already : True when a resumed run had already done its epochs (nothing was trained).
        """
        metrics = read_metrics(self.out / "metrics.jsonl")
        measure = "valid_accuracy" if len(self.y_valid) else "train_accuracy"
        return {"out_dir": str(self.out), "epochs": self.run_config.epochs,
                "epochs_done": metrics[-1]["epoch"] if metrics else 0, "finished_already": finished_already,
                "best": {"epoch": best_epoch, "accuracy": best_score, "measure": measure},
                "best_valid_accuracy": best_score if measure == "valid_accuracy" else None,
                "last": metrics[-1] if metrics else None, "n_train": len(self.y_train),
                "n_valid": int(len(self.y_valid)), "parameters": self.net.parameter_counts(),
                "footprint": footprint_bits(self.net)}

    def _check_resume(self, resolved: dict) -> None:
        saved = load_run_config(self.out)
        for section in ("network", "learning", "run"):
            mine, theirs = dict(resolved[section]), dict(saved[section])
            for key in RESUMABLE_CHANGES:
                mine.pop(key, None)
                theirs.pop(key, None)
            if mine != theirs:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise ConfigMismatchError(f"--resume: the {section} configuration differs from the run in "
                                          f"{self.out} in: {', '.join(diff)}")
