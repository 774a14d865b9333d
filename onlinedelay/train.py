"""Training and evaluation: epochs of batches, validation, checkpoints, resume, divergence checks.

A run writes into its output folder::

    config.json       resolved network / learning / run configs, seed, package version, data file
    metrics.jsonl     one JSON line per epoch (loss, accuracies, time, samples/s, mean delay)
    checkpoint.h5     everything needed to continue (parameters, optimizer, epoch and batch position)
    last.h5, best.h5  the model after the last epoch and the one with the best validation accuracy

Batch order is drawn from ``default_rng([seed, epoch])``, so a run resumed from a checkpoint takes
exactly the batches the uninterrupted run would have taken and ends with identical parameters.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ._version import __version__
from .config import LearningConfig, NetworkConfig, RunConfig
from .atomic import atomic_path
from .io import load_model, restore_optimizer, save_model
from .learning import ThreeFactorLearner
from .network import Network
from .quantize import footprint_bits


class DivergenceError(RuntimeError):
    """Training produced NaN or inf; the last good checkpoint is kept."""


class ConfigMismatchError(ValueError):
    """``--resume`` was asked with a configuration that differs from the checkpoint's."""


# -- data ------------------------------------------------------------------------------------------
def load_split(run: RunConfig, dt_ms: float, split: str):
    """Load one split and bin it: returns (x (T, N, C) uint16, labels (N,), dataset)."""
    from .datasets import load_dataset

    ds = load_dataset(run.dataset, split=split, data_dir=run.data_dir)
    x = ds.frames_batch(np.arange(len(ds)), dt_ms=dt_ms, n_steps=run.n_steps, pool=run.pool,
                        overflow=run.overflow)
    return x, np.asarray(ds.labels, np.int64), ds


def map_labels(labels, file_names, model_names, where: str) -> np.ndarray:
    """Map a file's labels onto a model's classes by name (orders may differ)."""
    file_names, model_names = list(file_names), list(model_names)
    if file_names == model_names:
        return labels
    missing = sorted(set(file_names) - set(model_names))
    if missing or len(file_names) != len(model_names):
        raise ValueError(f"{where}: class names do not match the model's: the file has "
                         f"{file_names}, the model {model_names}")
    lookup = np.array([model_names.index(name) for name in file_names], np.int64)
    return lookup[labels]


# -- inference --------------------------------------------------------------------------------------
def infer(net: Network, x, loss_start_step: int = 0, batch_size: int = 64):
    """Predictions by the summed softmax over steps >= ``loss_start_step``.

    x : (T, N, C) counts.  Returns (predictions (N,), hidden spike counts (N, sum of layer sizes)).
    """
    n_steps, n = x.shape[0], x.shape[1]
    preds = np.empty(n, np.int64)
    spikes = np.zeros((n, net.state.z.shape[0]))
    for start in range(0, n, batch_size):
        chunk = net.check_sequence(x[:, start:start + batch_size])
        b = chunk.shape[1]
        net.reset(b)
        votes = np.zeros((net.config.n_outputs, b))
        for t in range(n_steps):
            net.advance(chunk[t].T)
            spikes[start:start + b] += net.state.z.T
            if t >= loss_start_step:
                y = net.state.y.astype(np.float64)
                e = np.exp(y - y.max(axis=0))
                votes += e / e.sum(axis=0)
        preds[start:start + b] = votes.argmax(axis=0)
    return preds, spikes


def evaluate_arrays(net: Network, x, labels, loss_start_step: int = 0) -> dict:
    """Accuracy, per-class accuracy, confusion matrix, spikes and synaptic operations per sample."""
    preds, spikes = infer(net, x, loss_start_step)
    n_classes = net.config.n_outputs
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (labels, preds), 1)
    per_class = [float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None
                 for k in range(n_classes)]
    fan_out_in, fan_out_hidden = net.fan_out()
    input_counts = np.asarray(x, np.float64).sum(axis=0)             # (N, C)
    synops = input_counts @ fan_out_in + spikes @ fan_out_hidden
    return {"accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
            "per_class_accuracy": per_class, "confusion": confusion.tolist(),
            "mean_spikes_per_neuron": float(spikes.mean()), "synops_per_sample": float(synops.mean()),
            "n_samples": int(len(labels))}


# -- training ---------------------------------------------------------------------------------------
def _mean_delay(net: Network):
    d = np.concatenate([proj.delay for _, _, proj in net.params.projections()])
    return float(d.mean()) if d.size else None


def _finite_params(net: Network) -> bool:
    return all(np.isfinite(a).all() for _, a in net.params.arrays() if a.dtype.kind == "f")


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

    def _prepare(self):
        run = self.run_config
        self.progress({"kind": "info", "message": f"loading {run.dataset}"})
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
        self.x_train, self.y_train = x[:, train_idx], labels[train_idx]
        self.x_valid, self.y_valid = x[:, valid_idx], labels[valid_idx]
        self.net_config = self.net_config.replace(n_inputs=x.shape[2], n_outputs=len(self.class_names))

    def _resolved(self) -> dict:
        return {"network": self.net_config.to_dict(), "learning": self.learn_config.to_dict(),
                "run": self.run_config.to_dict(), "seed": self.run_config.seed, "version": __version__,
                "data_file": self.data_path, "class_names": self.class_names}

    def _save(self, name, training: dict, with_optimizer: bool) -> Path:
        path = self.out / name
        save_model(path, self.net, self.class_names, self.learner if with_optimizer else None, training)
        return path

    def run(self, resume: bool = False) -> dict:
        run, lc = self.run_config, self.learn_config
        self._prepare()
        self.out.mkdir(parents=True, exist_ok=True)
        resolved = self._resolved()
        checkpoint = self.out / "checkpoint.h5"
        start_epoch, start_batch, partial = 0, 0, {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        best_valid = -1.0
        if resume:
            if not checkpoint.exists():
                raise FileNotFoundError(f"--resume: no checkpoint in {self.out} (looked for {checkpoint})")
            self._check_resume(resolved)
            loaded = load_model(checkpoint)
            self.net = loaded.net
            self.net.set_threads(run.threads)
            self.learner = ThreeFactorLearner(self.net, lc, seed=run.seed)
            restore_optimizer(self.learner, loaded.optimizer)
            pos = loaded.training
            start_epoch, start_batch, partial = pos["epoch"], pos["batch"], pos["partial"]
            best_valid = pos["best_valid"]
            self.progress({"kind": "info", "message": f"resuming at epoch {start_epoch + 1}, batch {start_batch}"})
        else:
            self.net = Network(self.net_config, seed=run.seed, threads=run.threads)
            if self.prepare_network is not None:
                self.prepare_network(self.net)
            self.learner = ThreeFactorLearner(self.net, lc, seed=run.seed)
            with atomic_path(self.out / "config.json") as tmp:
                tmp.write_text(json.dumps(resolved, indent=2))
            (self.out / "metrics.jsonl").write_text("")
        n_train = len(self.y_train)
        if n_train == 0:
            raise ValueError(f"{run.dataset}: no training samples left after the validation split")
        n_batches = math.ceil(n_train / run.batch_size)
        last_metrics = None
        for epoch in range(start_epoch, run.epochs):
            order = np.random.default_rng([run.seed, epoch]).permutation(n_train)
            started = time.perf_counter() - partial["seconds"]
            for b in range(start_batch, n_batches):
                idx = order[b * run.batch_size:(b + 1) * run.batch_size]
                out = self.learner.run_sample(self.x_train[:, idx], self.y_train[idx], update=True)
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
                                                 "best_valid": best_valid, "run": run.to_dict()}, True)
            seconds = time.perf_counter() - started
            valid = (evaluate_arrays(self.net, self.x_valid, self.y_valid, lc.loss_start_step)["accuracy"]
                     if len(self.y_valid) else None)
            last_metrics = {"epoch": epoch + 1, "train_loss": partial["loss"] / partial["seen"],
                            "train_accuracy": partial["correct"] / partial["seen"], "valid_accuracy": valid,
                            "seconds": seconds, "samples_per_s": partial["seen"] / max(seconds, 1e-9),
                            "mean_input_delay_steps": _mean_delay(self.net)}
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(last_metrics) + "\n")
            score = valid if valid is not None else last_metrics["train_accuracy"]
            info = {"epoch": epoch + 1, "metrics": last_metrics, "run": run.to_dict()}
            if score > best_valid:
                best_valid = score
                self._save("best.h5", info, False)
            self._save("last.h5", info, False)
            start_batch, partial = 0, {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            self._save("checkpoint.h5", {"epoch": epoch + 1, "batch": 0, "partial": partial,
                                         "best_valid": best_valid, "run": run.to_dict()}, True)
            self.progress({"kind": "epoch", **last_metrics})
        return {"out_dir": str(self.out), "epochs": run.epochs, "best_valid_accuracy": best_valid,
                "last": last_metrics, "n_train": n_train, "n_valid": int(len(self.y_valid)),
                "parameters": self.net.parameter_counts(), "footprint": footprint_bits(self.net)}

    def _check_resume(self, resolved: dict) -> None:
        path = self.out / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"--resume: {path} is missing")
        saved = json.loads(path.read_text())
        for section in ("network", "learning", "run"):
            mine, theirs = dict(resolved[section]), dict(saved.get(section, {}))
            mine.pop("epochs", None)
            theirs.pop("epochs", None)
            if mine != theirs:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise ConfigMismatchError(f"--resume: the {section} configuration differs from the run in "
                                          f"{self.out} in: {', '.join(diff)}")


def load_eval_data(model_path, dataset: str | None = None, split: str = "test", data_dir=None):
    """(loaded model, x (T, N, C), labels (N,) in the model's class order, dataset) for evaluation.

    The data are binned as the model was trained (its stored run config); ``dataset`` and
    ``data_dir`` override where they come from.
    """
    loaded = load_model(model_path)
    training = loaded.training or {}
    run = RunConfig.from_dict(training["run"]) if "run" in training else RunConfig()
    if dataset is not None:
        run = run.replace(dataset=str(dataset))
    if data_dir is not None:
        run = run.replace(data_dir=str(data_dir))
    x, labels, ds = load_split(run, loaded.net.config.dt_ms, split)
    if x.shape[2] != loaded.net.config.n_inputs:
        raise ValueError(f"{ds.path}: {x.shape[2]} input channels after pooling by {run.pool}, "
                         f"the model has {loaded.net.config.n_inputs}")
    labels = map_labels(labels, ds.class_names, loaded.class_names, str(ds.path))
    return loaded, x, labels, ds


def evaluate_model(model_path, dataset: str | None = None, split: str = "test", data_dir=None) -> dict:
    """Evaluate a saved model on a dataset split, binned as the model was trained."""
    loaded, x, labels, ds = load_eval_data(model_path, dataset, split, data_dir)
    lc = loaded.learning_config or LearningConfig()
    result = evaluate_arrays(loaded.net, x, labels, lc.loss_start_step)
    result.update({"model": str(model_path), "data_file": str(ds.path), "split": split,
                   "class_names": loaded.class_names, "footprint": footprint_bits(loaded.net)})
    return result


def describe(net: Network) -> str:
    """One line: the layers, their projections and the readout."""
    c, parts = net.config, []
    for spec in net.layer_specs:
        ff = spec.feedforward
        text = f"{spec.n_neurons} LIF ({spec.reset} reset; in: {ff.connectivity}"
        text += f" {ff.density:g}" if ff.connectivity == "sparse" else ""
        text += f", {ff.delays} delays" if ff.delays != "none" else ""
        text += f", {ff.weight_bits}{'' if ff.weight_bits == 'ternary' else '-bit'} weights" if ff.quantized_weights else ""
        text += f", delay step {ff.delay_step:g}" if ff.quantized_delays else ""
        if spec.recurrent is not None:
            rec = spec.recurrent
            text += f"; recurrent: {rec.connectivity}" + (f" k={rec.kernel_size}" if rec.connectivity == "conv" else "")
            text += f", {rec.delays} delays" if rec.delays != "none" else ""
        parts.append(text + ")")
    return (f"{c.n_inputs} inputs -> " + " -> ".join(parts) + f" -> {c.n_outputs} readout (reads "
            f"{'every layer' if c.readout == 'all' else 'the last layer'}); delays up to {c.max_delay_steps} steps")


def model_info(model_path) -> dict:
    """Architecture, parameter counts, memory in bits, and delay statistics of a saved model."""
    loaded = load_model(model_path)
    net, c = loaded.net, loaded.net.config
    counts = net.parameter_counts()
    bits = net.dtype.itemsize * 8
    n_delays = sum(v for k, v in counts.items() if k.endswith("_delays"))
    n_weights = sum(counts.values()) - n_delays
    delay_bits = max(1, math.ceil(math.log2(c.max_delay_steps + 1)))
    stats = {}
    for l, kind, proj in net.params.projections():
        if proj.delay.size:
            spec = net.layer_specs[l]
            mode = spec.feedforward.delays if kind == "feedforward" else spec.recurrent.delays
            name = ("input" if kind == "feedforward" else "recurrent") if len(net.layer_specs) == 1 \
                else f"layer{l + 1}.{kind}"
            d = proj.delay.astype(np.float64)
            stats[name] = {"mode": mode, "mean": float(d.mean()), "std": float(d.std()),
                           "min": float(d.min()), "max": float(d.max())}
    return {"model": str(model_path), "network": c.to_dict(), "architecture": describe(net),
            "class_names": loaded.class_names,
            "parameters": counts, "total_weights": n_weights, "total_delays": n_delays,
            "stored_bits": {"weights": n_weights * bits, "delays": n_delays * bits, "precision_bits": bits},
            "integer_delay_bits": {"per_delay": delay_bits, "total": n_delays * delay_bits},
            "delay_stats": stats, "training": loaded.training, "footprint": footprint_bits(net)}
