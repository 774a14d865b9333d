"""Evaluation in one place: the prediction rule, inference, accuracies, class matching, model info.

The prediction of a sample is the argmax of the softmax of the readout summed over the steps
``t >= loss_start_step`` (:func:`predict`): validation during training, ``eval`` and the ablations
use it, and the stream's per-sample vote follows the same rule.
"""

from __future__ import annotations

import math
import unicodedata

import numpy as np

from .config import LearningConfig, RunConfig
from .errors import OnlineDelayError, check_choice
from .io import load_model
from .network import Network
from .quantize import footprint_bits

CLASS_MATCHING = ("by-name", "by-index")


# -- the prediction rule ---------------------------------------------------------------------------
def softmax(y) -> np.ndarray:
    """Softmax over axis 0 in float64: y (n_outputs,) or (n_outputs, B) readout."""
    y = np.asarray(y).astype(np.float64)
    e = np.exp(y - y.max(axis=0))
    return e / e.sum(axis=0)


def predict(readouts, loss_start_step: int = 0) -> np.ndarray:
    """The prediction rule: argmax of the softmax summed over the steps from ``loss_start_step``.

    readouts : (T, n_outputs, B) readout of every step.  Returns (B,) int64 class indices.
    The probabilities are added step by step, in time order.
    """
    readouts = np.asarray(readouts)
    if not 0 <= loss_start_step < readouts.shape[0]:
        raise OnlineDelayError(f"loss_start_step={loss_start_step} leaves no step of a "
                               f"{readouts.shape[0]}-step sample to predict from")
    votes = np.zeros(readouts.shape[1:])
    for y in readouts[loss_start_step:]:
        votes += softmax(y)
    return vote(votes)


def vote(votes) -> np.ndarray:
    """The class each column of summed probabilities ``votes`` (n_outputs, B) votes for, (B,) int64.

    Learners that cannot keep every readout add ``softmax(y)`` step by step into ``votes`` and call
    this: the same rule as :func:`predict`, with memory independent of the number of steps."""
    return np.asarray(votes).argmax(axis=0).astype(np.int64)


def infer(net: Network, x, loss_start_step: int = 0, batch_size: int = 64, observe=None):
    """Predictions (:func:`predict`) of every sample, ``batch_size`` samples at a time.

    x : (T, N, C) counts.  Returns (predictions (N,), hidden spike counts (N, sum of layer sizes)).
    ``observe(t, x_t)``, if given, is called after every step with the (B, C) counts of that step
    (``net.state`` holds the step's spikes and membranes; ``metrics.Recorder`` is one).
    """
    n_steps, n = x.shape[0], x.shape[1]
    preds = np.empty(n, np.int64)
    spikes = np.zeros((n, net.state.z.shape[0]))
    for start in range(0, n, batch_size):
        chunk = net.check_sequence(x[:, start:start + batch_size])
        b = chunk.shape[1]
        net.reset(b)
        readouts = np.empty((n_steps, net.config.n_outputs, b))
        for t in range(n_steps):
            net.advance(chunk[t].T)
            spikes[start:start + b] += net.state.z.T
            readouts[t] = net.state.y
            if observe is not None:
                observe(t, chunk[t])
        preds[start:start + b] = predict(readouts, loss_start_step)
    return preds, spikes


def evaluate_arrays(net: Network, x, labels, loss_start_step: int = 0, metrics: bool = False) -> dict:
    """Accuracy, per-class accuracy, confusion matrix, spikes and synaptic operations per sample
    (input counts and spikes times structural fan-out); with ``metrics`` also the NeuroBench-style
    metrics of the same pass under ``"metrics"`` (:mod:`onlinedelay.metrics`)."""
    recorder = None
    if metrics:
        from .metrics import Recorder      # metrics imports this module

        recorder = Recorder(net, x.shape[0])
    preds, spikes = infer(net, x, loss_start_step, observe=recorder)
    n_classes = net.config.n_outputs
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (labels, preds), 1)
    per_class = [float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None
                 for k in range(n_classes)]
    fan_out_in, fan_out_hidden = net.fan_out()
    input_counts = x.channel_totals() if isinstance(x, BinnedSplit) else np.asarray(x, np.float64).sum(axis=0)
    synops = input_counts @ fan_out_in + spikes @ fan_out_hidden
    return {"accuracy": float((preds == labels).mean()) if len(labels) else float("nan"),
            "per_class_accuracy": per_class, "confusion": confusion.tolist(),
            "mean_spikes_per_neuron": float(spikes.mean()), "synops_per_sample": float(synops.mean()),
            "n_samples": int(len(labels)), **({"metrics": recorder.metrics()} if recorder else {})}


# -- data ------------------------------------------------------------------------------------------
EAGER_BYTES = 256 << 20       # a binned split up to this size is held as one array; larger ones are binned per batch


class BinnedSplit:
    """A split binned on demand: it stands for the (T, N, C) uint16 count array of its samples.

    ``x[:, sel]`` (a slice, or indices of the samples) reads and bins just those samples from the
    dataset's file, exactly as binning the whole split would; ``subset(sel)`` is a lazy selection;
    ``channel_totals()`` the (N, C) counts summed over steps.  Memory: one batch plus the index.
    """

    def __init__(self, ds, indices, dt_ms: float, n_steps: int, pool: int, overflow: str):
        self.ds, self.indices = ds, np.asarray(indices, np.int64)
        self._bin = dict(dt_ms=dt_ms, n_steps=n_steps, pool=pool, overflow=overflow)
        self.shape = (n_steps, self.indices.size, ds.n_channels // pool)
        self.dtype = np.dtype(np.uint16)
        self.ndim = 3

    def subset(self, sel) -> "BinnedSplit":
        return BinnedSplit(self.ds, self.indices[sel], **self._bin)

    def __getitem__(self, key):
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None)):
            raise TypeError("a BinnedSplit is indexed as x[:, samples]")
        return self.ds.frames_batch(self.indices[key[1]], **self._bin)

    def channel_totals(self, batch: int = 256) -> np.ndarray:
        out = np.zeros(self.shape[1:], np.float64)
        for a in range(0, self.shape[1], batch):
            out[a:a + batch] = self[:, a:a + batch].sum(axis=0)
        return out


def select_samples(x, sel):
    """``x[:, sel]``, lazily for a :class:`BinnedSplit`."""
    return x.subset(sel) if isinstance(x, BinnedSplit) else x[:, sel]


def load_split(run: RunConfig, dt_ms: float, split: str, eager_bytes: int | None = None):
    """Load one split: returns (x (T, N, C) uint16 counts, labels (N,), dataset).

    ``x`` is an array when the binned split takes at most ``eager_bytes`` (default EAGER_BYTES), else a
    :class:`BinnedSplit` that bins each batch when asked (SSC's 75 k training samples would take
    about 2 GB binned); both give the same counts."""
    from .datasets import load_dataset

    ds = load_dataset(run.dataset, split=split, data_dir=run.data_dir)
    if ds.n_channels % run.pool:
        divisors = [d for d in range(1, min(ds.n_channels, 10) + 1) if ds.n_channels % d == 0]
        raise OnlineDelayError(f"pool={run.pool} does not divide the {ds.n_channels} channels of {ds.path}; "
                               f"choose a divisor (e.g. {', '.join(map(str, divisors))})")
    lazy = BinnedSplit(ds, np.arange(len(ds)), dt_ms, run.n_steps, run.pool, run.overflow)
    limit = EAGER_BYTES if eager_bytes is None else eager_bytes
    x = lazy if 2 * int(np.prod(lazy.shape)) > limit else lazy[:, :]
    return x, np.asarray(ds.labels, np.int64), ds


def samples_longer_than(ds, dt_ms: float, n_steps: int) -> int:
    """How many samples of ``ds`` have events after the ``n_steps`` steps of ``dt_ms`` (clipped or dropped)."""
    from .datasets import steps_for

    count = 0
    for i in range(len(ds)):
        times = ds.events(i)[0]
        if times.size and steps_for(float(times.max()), dt_ms) > n_steps:
            count += 1
    return count


def clipped_note(n_long: int, n_total: int, run: RunConfig, dt_ms: float, what: str) -> str | None:
    """One line about the samples longer than the window (None when there are none)."""
    if not n_long:
        return None
    fate = "count in the last step" if run.overflow == "clip" else "are dropped"
    return (f"{n_long} of the {n_total} samples in {what} last longer than --n-steps {run.n_steps} x {dt_ms:g} ms "
            f"= {run.n_steps * dt_ms / 1000:g} s; their later events {fate}")


def normalise_class_name(name: str) -> str:
    """The spelling-free form of a class name: NFKC, case-folded, ä/ö/ü/ß -> ae/oe/ue/ss, accents dropped."""
    text = unicodedata.normalize("NFKC", str(name)).casefold().strip()
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(umlaut, spelled)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def map_labels(labels, file_names, model_names, where: str, classes: str = "by-name") -> np.ndarray:
    """Map a file's labels onto a model's classes.

    classes : "by-name" (orders may differ; names match exactly or after
        :func:`normalise_class_name`) or "by-index" (same order, names ignored; the counts must match).
    """
    check_choice("--classes", classes, CLASS_MATCHING)
    file_names, model_names = list(file_names), list(model_names)
    if classes == "by-index" or file_names == model_names:
        if len(file_names) != len(model_names):
            raise OnlineDelayError(f"{where}: {len(file_names)} classes, the model has {len(model_names)}")
        return labels
    if len(file_names) != len(model_names):
        raise OnlineDelayError(f"{where}: class names do not match the model's: the file has {len(file_names)} "
                               f"classes {file_names}, the model {len(model_names)} {model_names}")
    exact = {name: k for k, name in enumerate(model_names)}
    loose = {}
    for k, name in enumerate(model_names):
        loose.setdefault(normalise_class_name(name), []).append(k)
    lookup, unknown = [], []
    for name in file_names:
        found = exact.get(name)
        if found is None:
            candidates = loose.get(normalise_class_name(name), [])
            found = candidates[0] if len(candidates) == 1 else None
        if found is None:
            unknown.append(name)
        lookup.append(found)
    if unknown or len(set(lookup)) != len(lookup):
        raise OnlineDelayError(f"{where}: class names do not match the model's: the file has {file_names}, "
                               f"the model {model_names}; unmatched: {unknown or 'two names match one class'} "
                               f"(use --classes by-index if the file keeps the model's order)")
    return np.array(lookup, np.int64)[labels]


def _eval_run(loaded, dataset, data_dir) -> RunConfig:
    """The run config a model was trained with, pointed at ``dataset`` / ``data_dir`` where given."""
    training = loaded.training or {}
    run = RunConfig.from_dict(training["run"]) if "run" in training else RunConfig()
    if dataset is not None:
        run = run.replace(dataset=str(dataset))
    if data_dir is not None:
        run = run.replace(data_dir=str(data_dir))
    return run


def load_eval_data(model_path, dataset: str | None = None, split: str = "test", data_dir=None,
                   classes: str = "by-name"):
    """(loaded model, x (T, N, C), labels (N,) in the model's class order, dataset) for evaluation.

    The data are binned as the model was trained (its stored run config); ``dataset`` and
    ``data_dir`` override where they come from; ``classes`` as in :func:`map_labels`.
    """
    loaded = load_model(model_path)
    run = _eval_run(loaded, dataset, data_dir)
    x, labels, ds = load_split(run, loaded.net.config.dt_ms, split)
    if x.shape[2] != loaded.net.config.n_inputs:
        raise OnlineDelayError(f"{ds.path}: {x.shape[2]} input channels after pooling by {run.pool}, "
                               f"the model has {loaded.net.config.n_inputs}")
    labels = map_labels(labels, ds.class_names, loaded.class_names, str(ds.path), classes)
    return loaded, x, labels, ds


def evaluate_model(model_path, dataset: str | None = None, split: str = "test", data_dir=None,
                   classes: str = "by-name", metrics: bool = True) -> dict:
    """Evaluate a saved model on a dataset split, binned as the model was trained.

    Returns :func:`evaluate_arrays`'s dict plus model, data_file, split, class_names,
    ``n_long_samples`` (samples with events after the model's ``n_steps``) and ``note`` (a line
    about them, or None); with ``metrics`` the NeuroBench-style metrics (:mod:`onlinedelay.metrics`).
    """
    loaded, x, labels, ds = load_eval_data(model_path, dataset, split, data_dir, classes)
    lc = loaded.learning_config or LearningConfig()
    result = evaluate_arrays(loaded.net, x, labels, lc.loss_start_step, metrics)
    dt_ms, run = loaded.net.config.dt_ms, _eval_run(loaded, dataset, data_dir)
    n_long = samples_longer_than(ds, dt_ms, run.n_steps)
    result.update({"model": str(model_path), "data_file": str(ds.path), "split": split,
                   "class_names": loaded.class_names, "n_long_samples": n_long, "footprint": footprint_bits(loaded.net),
                   "note": clipped_note(n_long, len(ds), run, dt_ms, f"the {split} split")})
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
