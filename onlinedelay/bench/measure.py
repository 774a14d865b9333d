"""Timing one benchmark row through the public API only (``Network``, ``ThreeFactorLearner``).

* **training** -- ``learner.run_sample(x, labels, update=True)`` on one batch (forward pass,
  traces, flush, optimizer step): samples/s and nanoseconds per synapse-step, where a batch is
  ``synapses x T x B`` synapse-steps;
* **inference** -- ``net.run(x)`` on a fresh network (no learner): samples/s;
* **the streaming bound** -- the triad (:mod:`.triad`) over three arrays each as large as the
  configuration's per-synapse trace state (``synapses x B x trace_arrays``, see
  :func:`synapses_and_traces`), timed alternately
  with the training repeats so both see the same machine;
  ``bound_ns_per_synapse_step = triad_ns_per_element x trace_arrays`` (each trace array streamed
  once per step: about 12 bytes per trace, 48 per synapse-step with delays).  This bounds an
  online rule that streams every trace every step; the chunked kernels (kernels/chunk.py) touch
  each trace once per chunk, so their ratio to it can be below 1;
* **streaming** -- single-sample ``net.step(x_t)`` at batch 1, every step timed on its own with
  ``time.perf_counter_ns``: median and p99 latency in microseconds;
* **threads against one thread, paired** -- a 1-thread and a multi-thread learner on the same batch,
  one training run of each per round (the order alternating), so both see the same minutes of a
  machine whose speed drifts (:func:`measure_paired_threads`);
* **batch 1 against a batch, paired** -- per synapse-step, a batch and a quarter of its samples one at a
  time per round, the order alternating (:func:`measure_paired_batches`);
* **ours against a peer, paired** -- one training (and one inference) call of ours and of the peer's
  per round, the order alternating (peers.measure_paired_peer, on our :func:`training_calls`).

Timings exclude compilation (one warm-up run of everything first) and are medians over repeats.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Callable

import numpy as np

from ..config import LearningConfig
from ..learning import ThreeFactorLearner
from ..network import Network
from .configs import BenchConfig
from .triad import Triad
from .workload import TIMED_S, poisson_input, repeats_for, training_batch, rng_for

MIN_LATENCY_STEPS = 1000          # at least this many timed streaming steps (full mode)
TRIAD_ELEMENTS_PER_REPEAT = 20_000_000   # one triad timing streams at least this many elements
QUICK_TRIAD_ELEMENTS_PER_REPEAT = 2_000_000


def elapsed_ns(function: Callable[[], object]) -> int:
    """Wall-clock nanoseconds one call of ``function`` takes."""
    start = time.perf_counter_ns()
    function()
    return time.perf_counter_ns() - start


@contextlib.contextmanager
def quiet_training():
    """Ignore the learner's 'delays were clipped' warning: a training fact, not a benchmark one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*delays were clipped.*", category=RuntimeWarning)
        yield


def summary_ms(times_ns) -> dict:
    """{median, min, max} of nanosecond timings, in milliseconds."""
    arr = np.asarray(times_ns, dtype=np.float64) / 1e6
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max())}


def synapses_and_traces(net: Network) -> tuple:
    """(synapses, trace arrays per synapse) over every projection between spiking neurons.

    A projection's synapses stream a weight eligibility trace and its readout-filtered copy (2),
    plus the same pair for the delays when the projection has delays (4); the second number is
    the average over all synapses (2 or 4 when every projection is alike).
    """
    synapses = traces = 0
    for layer, kind, proj in net.params.projections():
        spec = getattr(net.config.layer_specs[layer], kind)          # None: no such projection (empty)
        delays = "none" if spec is None else spec.delays
        synapses += proj.pre.size
        traces += proj.pre.size * (2 if delays == "none" else 4)
    return int(synapses), traces / max(synapses, 1)


def measure_row(config: BenchConfig, batch_size: int, threads: int, plan) -> dict:
    """Training, inference and the triad bound of one (configuration, batch size, threads).

    Returns
    -------
    dict with ``synapses``, ``synapse_steps_per_batch``, ``input_spikes_per_sample`` and
    ``training``, ``inference`` and ``bound`` sub-dicts (see :func:`~onlinedelay.bench.run_bench`).
    """
    steps, repeats = plan.steps, plan.repeats
    x, labels = training_batch(config.name, config.n_inputs, config.n_outputs, steps, batch_size, plan.seed)
    net = Network(config.network_config(), seed=plan.seed, batch_size=batch_size, dtype="float32",
                  threads=threads)
    learner = ThreeFactorLearner(net, LearningConfig())
    synapses, trace_arrays = synapses_and_traces(net)
    synapse_steps = synapses * steps * batch_size
    min_elements = QUICK_TRIAD_ELEMENTS_PER_REPEAT if plan.quick else TRIAD_ELEMENTS_PER_REPEAT
    triad = Triad(round(synapses * batch_size * trace_arrays), threads, min_elements)

    budget_s = 0.0 if plan.quick else TIMED_S
    try:
        with quiet_training():
            learner.run_sample(x, labels, update=True)       # warm-up: compilation, first touch
            triad.run()
            start = time.perf_counter_ns()                   # one more, timed: how many repeats fill the budget
            learner.run_sample(x, labels, update=True)
            n_train = repeats_for(time.perf_counter_ns() - start, repeats, budget_s)
            train_ns, triad_ns_el, hidden_spikes = [], [], []
            for r in range(n_train):                         # alternate: both see the same machine
                if r < repeats:
                    triad_ns_el.append(triad.ns_per_element())
                start = time.perf_counter_ns()
                out = learner.run_sample(x, labels, update=True)
                train_ns.append(time.perf_counter_ns() - start)
                hidden_spikes.append(float(out["spikes"]) / batch_size)
        triad_elements = triad.n_elements
    finally:
        triad.close()                                        # free the triad arrays before inference
    del learner, net

    inf_net = Network(config.network_config(), seed=plan.seed, batch_size=batch_size, dtype="float32",
                      threads=threads)
    inf_net.run(x)                                           # warm-up
    n_infer = repeats_for(elapsed_ns(lambda: inf_net.run(x)), repeats, budget_s)
    inf_ns = [elapsed_ns(lambda: inf_net.run(x)) for _ in range(n_infer)]

    train_med_ns = float(np.median(train_ns))
    inf_med_ns = float(np.median(inf_ns))
    triad_ns = float(np.median(triad_ns_el))
    bound_ns = triad_ns * trace_arrays
    train_ns_syn = train_med_ns / synapse_steps
    bound_samples_per_s = 1e9 * batch_size / (bound_ns * synapse_steps)
    train_samples_per_s = 1e9 * batch_size / train_med_ns
    return {
        "synapses": synapses,
        "synapse_steps_per_batch": synapse_steps,
        "input_spikes_per_sample": float(x.sum(dtype=np.int64)) / batch_size,
        "training": {
            "samples_per_s": train_samples_per_s,
            "ns_per_synapse_step": train_ns_syn,
            "batch_ms": summary_ms(train_ns),
            "ns_per_synapse_step_over_bound": train_ns_syn / bound_ns,
            "samples_per_s_over_bound": train_samples_per_s / bound_samples_per_s,
            "hidden_spikes_per_sample": float(np.median(hidden_spikes)),
        },
        "inference": {
            "samples_per_s": 1e9 * batch_size / inf_med_ns,
            "ns_per_synapse_step": inf_med_ns / synapse_steps,
            "batch_ms": summary_ms(inf_ns),
        },
        "bound": {
            "trace_arrays": trace_arrays,
            "triad_elements": triad_elements,
            "triad_ns_per_element": triad_ns,
            "triad_gb_per_s": 12.0 / triad_ns,            # 2 float32 read + 1 written per element
            "ns_per_synapse_step": bound_ns,
            "training_samples_per_s": bound_samples_per_s,
        },
    }


def measure_streaming(config: BenchConfig, threads: int, plan) -> dict:
    """Per-step latency of single-sample streaming: ``net.step(x_t)`` at batch 1, each step timed.

    Returns
    -------
    dict: ``latency_us_median``, ``latency_us_p99``, ``latency_us_max``, ``steps_timed``, ``steps_per_s``.
    """
    steps = plan.steps
    n_samples = plan.repeats if plan.quick else max(plan.repeats, -(-MIN_LATENCY_STEPS // steps))
    xs = poisson_input(steps, n_samples + 1, config.n_inputs, rng_for(plan.seed, config.name, "stream"))
    net = Network(config.network_config(), seed=plan.seed, batch_size=1, dtype="float32", threads=threads)
    net.reset(batch_size=1)
    for t in range(steps):                                   # warm-up sample
        net.step(xs[t, n_samples])
    latency_ns = np.empty(n_samples * steps, np.int64)
    clock = time.perf_counter_ns
    k = 0
    for s in range(n_samples):
        net.reset(batch_size=1)
        for t in range(steps):
            x_t = xs[t, s]
            start = clock()
            net.step(x_t)
            latency_ns[k] = clock() - start
            k += 1
    lat_us = latency_ns / 1e3
    return {"latency_us_median": float(np.median(lat_us)), "latency_us_p99": float(np.percentile(lat_us, 99)),
            "latency_us_max": float(lat_us.max()), "steps_timed": int(lat_us.size),
            "steps_per_s": float(1e6 / np.median(lat_us))}


def _alternated_ratios(runs, ratio, plan) -> dict:
    """Time the two callables ``runs`` back to back per round (which goes first alternates), at least
    ``plan.repeats`` rounds and more until they fill the timing budget; ``ratio(ns_0, ns_1)`` of each round.
    Returns {"rounds", "median", "min", "max"} of the per-round ratios."""
    budget_s = 0.0 if plan.quick else TIMED_S
    with quiet_training():
        pair_ns = sum(elapsed_ns(run) for run in runs)
        ratios = []
        for r in range(repeats_for(pair_ns, plan.repeats, budget_s)):
            ns = [0, 0]
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                ns[k] = elapsed_ns(runs[k])
            ratios.append(ratio(*ns))
    arr = np.array(ratios)
    return {"rounds": len(ratios), "median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max())}


def measure_paired_batches(config: BenchConfig, batch_size: int, threads: int, plan) -> dict:
    """Training at batch 1 against batch ``batch_size`` per synapse-step, timed in alternated pairs.

    Each round times one ``run_sample`` of a batch of ``batch_size`` and, back to back, ``batch_size // 4``
    (at least 1) single-sample ``run_sample`` calls of a batch-1 learner (which goes first alternates);
    the ratio of a round is the batch-1 time per sample over the batch's time per sample, so per
    synapse-step (above 1: batch 1 is slower).  Both see the same minutes of a machine whose speed
    drifts, which the rows' medians, timed minutes apart, do not; the batch-1 learner goes through
    different samples after each batch run (colder caches than its row, which repeats one sample).
    Returns {"rounds", "median", "min", "max"} of the per-round ratios (:func:`_alternated_ratios`).
    """
    x, labels = training_batch(config.name, config.n_inputs, config.n_outputs, plan.steps, batch_size, plan.seed)
    singles = max(1, batch_size // 4)
    samples = [(np.ascontiguousarray(x[:, b:b + 1]), labels[b:b + 1]) for b in range(singles)]   # as the rows'
    learners = [ThreeFactorLearner(Network(config.network_config(), seed=plan.seed, batch_size=b, dtype="float32",
                                           threads=threads), LearningConfig()) for b in (batch_size, 1)]
    runs = (lambda: learners[0].run_sample(x, labels, update=True),
            lambda: [learners[1].run_sample(xs, ys, update=True) for xs, ys in samples])
    return _alternated_ratios(runs, lambda ns_batch, ns_one: (ns_one / singles) / (ns_batch / batch_size), plan)


def training_calls(config: BenchConfig, batch_size: int, threads: int, plan) -> dict:
    """{"train": one ``run_sample`` (with its update) of a learner, "infer": one ``run`` of a fresh network},
    both on the row's batch (:func:`~onlinedelay.bench.workload.training_batch`): what a peer is
    timed against in alternated pairs."""
    x, labels = training_batch(config.name, config.n_inputs, config.n_outputs, plan.steps, batch_size, plan.seed)
    nets = [Network(config.network_config(), seed=plan.seed, batch_size=batch_size, dtype="float32", threads=threads)
            for _ in range(2)]
    learner = ThreeFactorLearner(nets[0], LearningConfig())

    def train():
        with quiet_training():
            learner.run_sample(x, labels, update=True)

    return {"train": train, "infer": lambda: nets[1].run(x)}


def measure_paired_threads(config: BenchConfig, batch_size: int, threads: int, plan) -> dict:
    """Training at ``threads`` threads against 1 thread on the same batch, timed in alternated pairs.

    Each round times one ``run_sample`` of each learner back to back (which goes first alternates);
    the ratio of a round is the 1-thread time over the ``threads`` time (above 1: the threads are
    faster).  Returns {"rounds", "median", "min", "max"} of the per-round ratios (:func:`_alternated_ratios`).
    """
    x, labels = training_batch(config.name, config.n_inputs, config.n_outputs, plan.steps, batch_size, plan.seed)
    learners = [ThreeFactorLearner(Network(config.network_config(), seed=plan.seed, batch_size=batch_size,
                                           dtype="float32", threads=t), LearningConfig()) for t in (1, threads)]
    runs = tuple(lambda l=learner: l.run_sample(x, labels, update=True) for learner in learners)
    return _alternated_ratios(runs, lambda ns_one, ns_threads: ns_one / ns_threads, plan)
