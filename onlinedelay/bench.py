"""Benchmark harness behind ``onlinedelay bench`` (issue 5).

For each named configuration (network sizes, delay mode, density) and each batch size and thread
count, the harness measures through the public API only (``Network``, ``ThreeFactorLearner``):

* **training** -- ``learner.run_sample(x, labels, update=True)`` on one batch (forward pass,
  traces, flush, optimizer step): samples/s and nanoseconds per synapse-step, where a batch is
  ``synapses x T x B`` synapse-steps;
* **inference** -- ``net.run(x)`` on a fresh network (no learner): samples/s;
* **streaming** -- single-sample ``net.step(x_t)`` at batch 1, every step timed on its own with
  ``time.perf_counter_ns``: median and p99 latency in microseconds;
* **the machine's streaming bound** -- a numba triad ``a[i] = b[i] + s * c[i]`` (float32) over
  three arrays each as large as the configuration's per-synapse trace state
  (``synapses x B x trace_arrays``; with 2 threads each Python thread streams its own half through
  the GIL-free kernel), timed alternately with the training repeats so both see the same machine;
  ``bound_ns_per_synapse_step = triad_ns_per_element x trace_arrays`` (each trace array streamed
  once per step: about 12 bytes per trace, 48 per synapse-step with delays, close to the 44 of
  performance.md), and every training figure is also given as a ratio to it.  This is the bound
  of an online rule that streams every trace every step; the chunked soft-reset kernels
  (kernels/chunk.py) touch each trace once per chunk, so their ratio can be below 1;
* **peak resident memory** -- the high-water mark of a fresh child process per sequence length T
  that builds the network and runs one training sample of length T (batch 1, 1 thread), so the
  peaks of different T never mix (see :func:`measure_memory` for why not ``ru_maxrss``).

Timings exclude compilation (one warm-up run of everything first) and are medians over repeats.
Input is Poisson spike counts at ``SPIKES_PER_STEP`` spikes per step summed over all input
channels (5,000 spikes per 100-step sample, as for 700 cochlea channels; with 140 pooled channels
each channel fires 5x as often), drawn from a seed.

Nothing here prints: :func:`run_bench` returns a plain dict (JSON-serialisable),
:func:`format_report` renders it as text and :func:`write_json` writes it atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from ._version import __version__
from .atomic import atomic_path
from .config import LearningConfig, NetworkConfig
from .learning import ThreeFactorLearner
from .network import Network

SCHEMA = "onlinedelay-bench/1"
SPIKES_PER_STEP = 50.0            # input spikes per step over all channels: 5,000 per 100-step sample
STEPS = 100                       # T of the throughput and latency measurements
MEMORY_STEPS = (100, 1000, 10000)
QUICK_STEPS = 20
QUICK_MEMORY_STEPS = (20, 200, 2000)
DEFAULT_REPEATS = 5
BATCH_SIZES = (1, 32)
THREADS = (1, 2)
MIN_LATENCY_STEPS = 1000          # at least this many timed streaming steps (full mode)
TRIAD_ELEMENTS_PER_REPEAT = 20_000_000   # one triad timing streams at least this many elements
QUICK_TRIAD_ELEMENTS_PER_REPEAT = 2_000_000
MEMORY_CHILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class BenchConfig:
    """A named network configuration of the benchmark.

    Parameters
    ----------
    name : str, the name given to ``--config``
    description : str, one line for the table
    n_inputs, n_hidden, n_outputs : int, layer sizes
    input_delays : str, "synaptic", "axonal" or "none"
    density : float, fraction of input -> hidden synapses present
    max_delay_steps : int, largest delay in steps
    """

    name: str
    description: str
    n_inputs: int
    n_hidden: int
    n_outputs: int
    input_delays: str
    density: float
    max_delay_steps: int = 25

    def network_config(self) -> NetworkConfig:
        """The :class:`NetworkConfig` this benchmark configuration runs."""
        return NetworkConfig(n_inputs=self.n_inputs, n_hidden=self.n_hidden, n_outputs=self.n_outputs,
                             input_delays=self.input_delays, max_delay_steps=self.max_delay_steps,
                             density=self.density)

    @property
    def trace_arrays(self) -> int:
        """Per-synapse, per-sample trace arrays a training step must stream.

        Weight eligibility trace and its readout-filtered copy (2), plus the same pair for the
        delays when delays are learned (4).
        """
        return 2 if self.input_delays == "none" else 4


_ALL_CONFIGS = (
    BenchConfig("syn140-dense", "140-256-20, synaptic delays, density 1.0", 140, 256, 20, "synaptic", 1.0),
    BenchConfig("syn140-sparse", "140-256-20, synaptic delays, density 0.2", 140, 256, 20, "synaptic", 0.2),
    BenchConfig("axon140-dense", "140-256-20, axonal delays, density 1.0", 140, 256, 20, "axonal", 1.0),
    BenchConfig("axon140-sparse", "140-256-20, axonal delays, density 0.2", 140, 256, 20, "axonal", 0.2),
    BenchConfig("none140-dense", "140-256-20, no delays, density 1.0", 140, 256, 20, "none", 1.0),
    BenchConfig("none140-sparse", "140-256-20, no delays, density 0.2", 140, 256, 20, "none", 0.2),
    BenchConfig("syn700-dense", "700-256-20, synaptic delays, density 1.0", 700, 256, 20, "synaptic", 1.0),
    BenchConfig("none700-dense", "700-256-20, no delays, density 1.0", 700, 256, 20, "none", 1.0),
    BenchConfig("tiny", "20-16-4, synaptic delays (max 5), density 0.5 -- smoke tests", 20, 16, 4,
                "synaptic", 0.5, 5),
)
CONFIGS = {c.name: c for c in _ALL_CONFIGS}
DEFAULT_CONFIGS = tuple(c.name for c in _ALL_CONFIGS if c.name != "tiny")
QUICK_CONFIGS = ("syn140-sparse", "none140-sparse")
# (dense, sparse) pairs whose speed ratio the report derives
SPARSE_PAIRS = (("syn140-dense", "syn140-sparse"), ("axon140-dense", "axon140-sparse"),
                ("none140-dense", "none140-sparse"))


class OptionError(ValueError):
    """A bad benchmark option; ``option`` is its command-line name without dashes."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures (build with :func:`make_plan`).

    Attributes
    ----------
    configs : tuple of BenchConfig
    batch_sizes : tuple of int
    threads : tuple of int
    repeats : int, timed repeats per figure (the median is reported)
    steps : int, T of the throughput and latency measurements
    memory_steps : tuple of int, the T of each peak-memory child (empty: no memory measurement)
    seed : int, seeds the networks and the input
    quick : bool
    """

    configs: tuple
    batch_sizes: tuple
    threads: tuple
    repeats: int
    steps: int
    memory_steps: tuple
    seed: int = 0
    quick: bool = False

    def rows(self) -> list:
        """Every (config, batch_size, threads) combination, in measuring order."""
        return [(c, b, t) for c in self.configs for b in self.batch_sizes for t in self.threads]

    def to_dict(self) -> dict:
        """The settings as plain data (for the JSON report)."""
        return {"configs": [c.name for c in self.configs], "batch_sizes": list(self.batch_sizes),
                "threads": list(self.threads), "repeats": self.repeats, "steps": self.steps,
                "memory_steps": list(self.memory_steps), "seed": self.seed, "quick": self.quick,
                "input_spikes_per_step": SPIKES_PER_STEP, "memory_batch_size": 1, "memory_threads": 1,
                "streaming_batch_size": 1}


def make_plan(configs=(), batch_sizes=(), threads=(), repeats: int | None = None, quick: bool = False,
              memory: bool = True, seed: int = 0, json_path=None) -> Plan:
    """Validate the options and decide what to measure.

    Parameters
    ----------
    configs : names from :data:`CONFIGS` (comma-separated lists allowed); empty: the issue's
        eight configurations (``--quick``: two of them)
    batch_sizes : ints >= 1; empty: (1, 32) (``--quick``: (1,))
    threads : ints in [1, numba's thread count]; empty: (1, 2) (``--quick``: (1,))
    repeats : int >= 1; None: 5 (``--quick``: 1)
    quick : bool, small T, one repeat, few configurations (a smoke test, not a measurement)
    memory : bool, measure peak memory (three child processes per configuration)
    seed : int
    json_path : where the report will be written, checked now so a long run cannot fail at the end

    Raises
    ------
    OptionError
        naming the offending option.
    """
    names = [n.strip() for item in configs for n in str(item).split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise OptionError("config", f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    if not names:
        names = list(QUICK_CONFIGS if quick else DEFAULT_CONFIGS)
    names = list(dict.fromkeys(names))
    batch_sizes = tuple(dict.fromkeys(batch_sizes)) or ((1,) if quick else BATCH_SIZES)
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise OptionError("batch", f"batch size {b!r} is not allowed; expected an integer >= 1")
    threads = tuple(dict.fromkeys(threads)) or ((1,) if quick else THREADS)
    available = _numba_max_threads()
    for t in threads:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
            raise OptionError("threads", f"thread count {t!r} is not allowed; expected an integer >= 1")
        if t > available:
            raise OptionError("threads", f"{t} threads requested but numba can use {available} on this machine "
                                         "(NUMBA_NUM_THREADS)")
    if repeats is None:
        repeats = 1 if quick else DEFAULT_REPEATS
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise OptionError("repeats", f"repeats={repeats!r} is not allowed; expected an integer >= 1")
    if json_path is not None:
        parent = Path(json_path).expanduser().resolve().parent
        if Path(json_path).is_dir():
            raise OptionError("json", f"{json_path} is a directory; expected a file name")
        if not parent.is_dir():
            raise OptionError("json", f"directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise OptionError("json", f"directory {parent} is not writable")
    steps = QUICK_STEPS if quick else STEPS
    memory_steps = (QUICK_MEMORY_STEPS if quick else MEMORY_STEPS) if memory else ()
    return Plan(tuple(CONFIGS[n] for n in names), tuple(int(b) for b in batch_sizes),
                tuple(int(t) for t in threads), int(repeats), steps, memory_steps, int(seed), bool(quick))


# -- input ---------------------------------------------------------------------------------------
def _rng(seed: int, *keys) -> np.random.Generator:
    """An independent stream for (seed, keys...), stable across runs and Python versions."""
    words = [int(seed)] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def poisson_input(n_steps: int, batch_size: int, n_inputs: int, rng: np.random.Generator,
                  spikes_per_step: float = SPIKES_PER_STEP) -> np.ndarray:
    """Poisson spike counts, (n_steps, batch_size, n_inputs) uint8.

    Each channel fires ``spikes_per_step / n_inputs`` spikes per step on average, so a sample
    holds about ``spikes_per_step x n_steps`` spikes whatever the number of channels.  uint8 keeps
    the sample itself small in the long-T memory measurement.
    """
    rate = spikes_per_step / n_inputs
    out = np.empty((n_steps, batch_size, n_inputs), np.uint8)
    block = 100                                  # draw in blocks: no (T, B, n_in) int64 temporary
    for t in range(0, n_steps, block):
        counts = rng.poisson(rate, size=(min(block, n_steps - t), batch_size, n_inputs))
        out[t:t + block] = np.minimum(counts, 255)
    return out


# -- the triad bound -------------------------------------------------------------------------------
def _triad(a, b, c, scalar, passes):
    """a[i] = b[i] + s * c[i] over the whole arrays, ``passes`` times (s changes per pass)."""
    n = a.size
    for p in range(passes):
        s = np.float32(scalar + 1e-7 * p)         # varies per pass: no pass can be elided
        for i in range(n):
            a[i] = b[i] + s * c[i]
    return a[n // 2]


# compiled lazily on first call (never at import), cached on disk; nogil: threads run it side by side
_triad_kernel = numba.njit(cache=True, nogil=True)(_triad)


class Triad:
    """Three float32 arrays of ``n_elements`` and the triad ``a = b + s c`` over them.

    The arrays are cut from one buffer at offsets that differ modulo 4 KiB, so the measured bound
    does not suffer the 4 KiB aliasing stall (performance.md).  With ``threads > 1`` the arrays
    are split into contiguous chunks, one per Python thread running the (GIL-free) numba kernel:
    the bound is the machine's streaming rate, independent of numba's threading layer.

    Parameters
    ----------
    n_elements : int, length of each array
    threads : int
    min_elements_per_timing : int, each timing streams at least this many elements (several passes
        over small arrays)
    """

    def __init__(self, n_elements: int, threads: int, min_elements_per_timing: int):
        n = max(1, int(n_elements))
        stride = -(-n // 1024) * 1024 + 272           # floats: multiple of 4 KiB + 1088 bytes
        self.buffer = np.empty(3 * stride, np.float32)
        self.a, self.b, self.c = (self.buffer[k * stride:k * stride + n] for k in range(3))
        self.b[:] = 1.0
        self.c[:] = 0.5
        self.a[:] = 0.0
        self.n_elements = n
        self.threads = max(1, min(int(threads), n))
        self.passes = max(1, -(-int(min_elements_per_timing) // n))
        bounds = [k * n // self.threads for k in range(self.threads + 1)]
        self._chunks = [(self.a[lo:hi], self.b[lo:hi], self.c[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def _chunk(self, arrays) -> None:
        _triad_kernel(*arrays, 0.5, self.passes)

    def run(self) -> None:
        """One timing's worth of passes (all threads)."""
        if self._pool is None:
            self._chunk(self._chunks[0])
        else:
            list(self._pool.map(self._chunk, self._chunks))

    def ns_per_element(self) -> float:
        """Time one :meth:`run`; nanoseconds (wall clock) per array element per pass."""
        return _elapsed_ns(self.run) / (self.passes * self.n_elements)

    def close(self) -> None:
        """Stop the worker threads and drop the arrays."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._chunks = []
        self.buffer = self.a = self.b = self.c = None


# -- timing helpers ----------------------------------------------------------------------------------
def _elapsed_ns(function: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    function()
    return time.perf_counter_ns() - start


@contextlib.contextmanager
def _quiet_training():
    """Ignore the learner's 'delays were clipped' warning: a training fact, not a benchmark one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*delays were clipped.*", category=RuntimeWarning)
        yield


def _summary_ms(times_ns) -> dict:
    arr = np.asarray(times_ns, dtype=np.float64) / 1e6
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max())}


def _synapses(net: Network) -> int:
    return int(sum(proj.pre.size for _, _, proj in net.params.projections()))


# -- measurements --------------------------------------------------------------------------------------
def measure_row(config: BenchConfig, batch_size: int, threads: int, plan: Plan) -> dict:
    """Training, inference and the triad bound of one (configuration, batch size, threads).

    Returns
    -------
    dict with ``training``, ``inference`` and ``bound`` sub-dicts (see :func:`run_bench`).
    """
    steps, repeats = plan.steps, plan.repeats
    rng = _rng(plan.seed, config.name, batch_size, "train")
    x = poisson_input(steps, batch_size, config.n_inputs, rng)
    labels = rng.integers(0, config.n_outputs, size=batch_size)
    net = Network(config.network_config(), seed=plan.seed, batch_size=batch_size, dtype="float32",
                  threads=threads)
    learner = ThreeFactorLearner(net, LearningConfig())
    synapses = _synapses(net)
    synapse_steps = synapses * steps * batch_size
    min_elements = QUICK_TRIAD_ELEMENTS_PER_REPEAT if plan.quick else TRIAD_ELEMENTS_PER_REPEAT
    triad = Triad(synapses * batch_size * config.trace_arrays, threads, min_elements)

    try:
        with _quiet_training():
            learner.run_sample(x, labels, update=True)       # warm-up: compilation, first touch
            triad.run()
            train_ns, triad_ns_el, hidden_spikes = [], [], []
            for _ in range(repeats):                         # alternate: both see the same machine
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
    inf_ns = [_elapsed_ns(lambda: inf_net.run(x)) for _ in range(repeats)]

    train_med_ns = float(np.median(train_ns))
    inf_med_ns = float(np.median(inf_ns))
    triad_ns = float(np.median(triad_ns_el))
    bound_ns = triad_ns * config.trace_arrays
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
            "batch_ms": _summary_ms(train_ns),
            "ns_per_synapse_step_over_bound": train_ns_syn / bound_ns,
            "samples_per_s_over_bound": train_samples_per_s / bound_samples_per_s,
            "hidden_spikes_per_sample": float(np.median(hidden_spikes)),
        },
        "inference": {
            "samples_per_s": 1e9 * batch_size / inf_med_ns,
            "ns_per_synapse_step": inf_med_ns / synapse_steps,
            "batch_ms": _summary_ms(inf_ns),
        },
        "bound": {
            "trace_arrays": config.trace_arrays,
            "triad_elements": triad_elements,
            "triad_ns_per_element": triad_ns,
            "triad_gb_per_s": 12.0 / triad_ns,            # 2 float32 read + 1 written per element
            "ns_per_synapse_step": bound_ns,
            "training_samples_per_s": bound_samples_per_s,
        },
    }


def measure_streaming(config: BenchConfig, threads: int, plan: Plan) -> dict:
    """Per-step latency of single-sample streaming: ``net.step(x_t)`` at batch 1, each step timed.

    Returns
    -------
    dict: ``latency_us_median``, ``latency_us_p99``, ``latency_us_max``, ``steps_timed``.
    """
    steps = plan.steps
    n_samples = plan.repeats if plan.quick else max(plan.repeats, -(-MIN_LATENCY_STEPS // steps))
    xs = poisson_input(steps, n_samples + 1, config.n_inputs, _rng(plan.seed, config.name, "stream"))
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


_MEMORY_KEYS = ("peak_rss_mb", "sample_peak_rss_mb", "rss_before_sample_mb", "sample_growth_mb", "input_mb",
                "training_s")


def measure_memory(config: BenchConfig, memory_steps, seed: int = 0) -> dict:
    """Peak resident memory of one training sample per T, each in a fresh child process.

    The child builds the network (batch 1, 1 thread) and a learner, runs a 2-step warm-up sample
    (loads the kernels), draws the length-T input, then runs one training sample of length T.
    Peaks are the child's own high-water mark (``VmHWM`` in ``/proc/self/status``), not
    ``ru_maxrss``: on Linux a child's ``ru_maxrss`` starts at the peak of the process it was
    spawned from (the address space replaced at exec), so it would report this process's peak.

    Returns
    -------
    dict of lists, one entry per T:

    * ``steps``
    * ``peak_rss_mb`` -- peak over the child's whole life (imports, compilation cache, network, sample)
    * ``sample_peak_rss_mb`` -- peak while the length-T sample runs (high-water mark reset just before
      through ``/proc/self/clear_refs``; None where that is not possible)
    * ``rss_before_sample_mb`` -- resident memory just before the sample (input already drawn)
    * ``sample_growth_mb`` -- sample_peak_rss_mb - rss_before_sample_mb: what running the sample added
    * ``input_mb`` -- the uint8 input sample itself, ``training_s`` -- how long the sample took

    and ``peak_rss_ratio``, ``sample_peak_rss_ratio``: last T over first T.
    """
    out = {"steps": [], **{key: [] for key in _MEMORY_KEYS}}
    for steps in memory_steps:
        child = _run_memory_child(config, int(steps), seed)
        out["steps"].append(int(steps))
        for key in _MEMORY_KEYS:
            out[key].append(child[key])
    for key in ("peak_rss", "sample_peak_rss"):
        values = out[f"{key}_mb"]
        ok = values and values[0] and values[-1]
        out[f"{key}_ratio"] = values[-1] / values[0] if ok else None
    return out


def _run_memory_child(config: BenchConfig, steps: int, seed: int) -> dict:
    spec = json.dumps({"config": dataclasses.asdict(config), "steps": steps, "seed": seed})
    code = "import sys; from onlinedelay.bench import _memory_child_main; _memory_child_main(sys.argv[1], sys.argv[2])"
    with tempfile.TemporaryDirectory(prefix="onlinedelay-bench-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        log_path = os.path.join(tmp, "child.log")
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.run([sys.executable, "-c", code, spec, result_path], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=MEMORY_CHILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"memory child for {config.name} at T={steps} ran over "
                                   f"{MEMORY_CHILD_TIMEOUT_S:.0f} s and was killed") from None
        if proc.returncode != 0:
            with open(log_path, "rb") as log:
                tail = log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"memory child for {config.name} at T={steps} exited with {proc.returncode}:\n{tail}")
        with open(result_path) as fh:
            return json.load(fh)


def _status_mb(field: str):
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB, or None off Linux."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's high-water mark to its current RSS (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory_child_main(spec_json: str, result_path: str) -> None:
    """Entry point of a memory child: one training sample of length T; writes its facts as JSON."""
    spec = json.loads(spec_json)
    config = BenchConfig(**spec["config"])
    steps, seed = int(spec["steps"]), int(spec["seed"])
    rng = _rng(seed, config.name, "memory", steps)
    net = Network(config.network_config(), seed=seed, batch_size=1, dtype="float32", threads=1)
    learner = ThreeFactorLearner(net, LearningConfig())
    labels = rng.integers(0, config.n_outputs, size=1)
    with _quiet_training():
        learner.run_sample(poisson_input(2, 1, config.n_inputs, rng), labels, update=True)
        x = poisson_input(steps, 1, config.n_inputs, rng)
        peak_before = _status_mb("VmHWM")
        rss_before = _status_mb("VmRSS")
        reset = _reset_peak_rss()
        start = time.perf_counter()
        learner.run_sample(x, labels, update=True)
        seconds = time.perf_counter() - start
    sample_peak = _status_mb("VmHWM") if reset else None
    if peak_before is None:                    # not Linux: ru_maxrss (may include the parent's peak)
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = usage * (1 if sys.platform == "darwin" else 1024) / 1e6
    else:
        peak = max(peak_before, sample_peak or 0.0, _status_mb("VmHWM"))
    result = {"peak_rss_mb": peak, "sample_peak_rss_mb": sample_peak, "rss_before_sample_mb": rss_before,
              "sample_growth_mb": None if sample_peak is None or rss_before is None else sample_peak - rss_before,
              "input_mb": x.nbytes / 1e6, "training_s": seconds}
    with open(result_path, "w") as fh:
        json.dump(result, fh)


# -- the whole run -------------------------------------------------------------------------------------
def run_bench(plan: Plan, progress: Callable[[str], None] | None = None) -> dict:
    """Measure everything the plan asks for.

    Parameters
    ----------
    plan : Plan, from :func:`make_plan`
    progress : optional callable receiving one line per stage (the CLI sends them to stderr)

    Returns
    -------
    dict (JSON-serialisable)::

        schema, machine (see :func:`machine_info`), settings (the plan),
        results: one dict per (config, batch_size, threads) with name, config, description,
            network (sizes, delays, density), batch_size, threads, steps, synapses,
            synapse_steps_per_batch, input_spikes_per_sample,
            training  {samples_per_s, ns_per_synapse_step, ns_per_synapse_step_over_bound,
                       samples_per_s_over_bound, batch_ms {median, min, max}, hidden_spikes_per_sample},
            inference {samples_per_s, ns_per_synapse_step, batch_ms},
            streaming {latency_us_median, latency_us_p99, latency_us_max, steps_timed, steps_per_s}
                      (batch 1, measured once per config and thread count),
            bound     {trace_arrays, triad_elements, triad_ns_per_element, triad_gb_per_s,
                       ns_per_synapse_step, training_samples_per_s},
        memory: {config name: see :func:`measure_memory`},
        derived: sparse_speedup and thread_speedup (training samples/s ratios from this run),
        wall_s: seconds the whole run took.

    ``machine`` also holds ``load_average_start`` and ``load_average_end``.
    """
    say = progress or (lambda message: None)
    started = time.perf_counter()
    load_start = _load_average()
    rows = plan.rows()
    results, streaming = [], {}
    for i, (config, batch, threads) in enumerate(rows, 1):
        name = f"{config.name}/b{batch}/t{threads}"
        say(f"[{i}/{len(rows)}] {name}: training, triad bound, inference")
        row = measure_row(config, batch, threads, plan)
        if (config.name, threads) not in streaming:
            say(f"[{i}/{len(rows)}] {name}: streaming latency (batch 1)")
            streaming[config.name, threads] = measure_streaming(config, threads, plan)
        results.append({"name": name, "config": config.name, "description": config.description,
                        "network": config.network_config().to_dict(), "batch_size": batch,
                        "threads": threads, "steps": plan.steps, **row,
                        "streaming": streaming[config.name, threads]})
    memory = {}
    for config in plan.configs if plan.memory_steps else ():
        say(f"memory: {config.name} at T = {', '.join(map(str, plan.memory_steps))} (fresh process each)")
        memory[config.name] = measure_memory(config, plan.memory_steps, plan.seed)
    machine = machine_info()
    machine["load_average_start"], machine["load_average_end"] = load_start, _load_average()
    return {"schema": SCHEMA, "machine": machine, "settings": plan.to_dict(), "results": results,
            "memory": memory, "derived": _derived(results), "wall_s": time.perf_counter() - started}


def _load_average():
    """1, 5 and 15-minute load averages (other work on a shared machine skews every figure)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _derived(results) -> dict:
    """Side-by-side ratios of training samples/s measured in this run."""
    by_key = {(r["config"], r["batch_size"], r["threads"]): r["training"]["samples_per_s"] for r in results}
    sparse = []
    for dense, sparse_name in SPARSE_PAIRS:
        for (name, batch, threads), value in by_key.items():
            if name == dense and (sparse_name, batch, threads) in by_key:
                sparse.append({"dense": dense, "sparse": sparse_name, "batch_size": batch, "threads": threads,
                               "training_speedup": by_key[sparse_name, batch, threads] / value})
    thread = []
    for (name, batch, threads), value in by_key.items():
        if threads == 1:
            for (other, b2, t2), v2 in by_key.items():
                if other == name and b2 == batch and t2 > 1:
                    thread.append({"config": name, "batch_size": batch, "threads": t2,
                                   "training_speedup": v2 / value})
    return {"sparse_speedup": sparse, "thread_speedup": thread}


# -- machine information ---------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _numba_max_threads() -> int:
    return int(numba.config.NUMBA_NUM_THREADS)


def _git_revision() -> dict:
    """Commit and dirty flag of the source checkout (best effort; never takes git's index lock)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, env=env)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def machine_info() -> dict:
    """CPU, cores, caches, memory, library versions, source revision and the date (UTC)."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.lower().startswith("model name")), platform.processor() or platform.machine())
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        level, kind, size = (_read(str(index / f)).strip() for f in ("level", "type", "size"))
        if level and size:
            caches[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        layer = numba.threading_layer()
    except ValueError:                       # no parallel kernel has run yet
        layer = None
    return {"cpu_model": model, "cores": os.cpu_count(), "cores_usable": affinity, "caches": caches,
            "memory_gb": mem_kb * 1024 / 1e9, "platform": platform.platform(),
            "python_version": platform.python_version(), "numpy_version": np.__version__,
            "numba_version": numba.__version__, "numba_threads": _numba_max_threads(),
            "numba_threading_layer": layer, "package_version": __version__, "git": _git_revision(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# -- output --------------------------------------------------------------------------------------------------
def write_json(report: dict, path) -> None:
    """Write ``report`` to ``path`` atomically (temporary file in the same directory, then os.replace)."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(report, fh, indent=2, allow_nan=False)
        fh.write("\n")


def _fmt(value, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, no exponent for everyday magnitudes."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = int(math.floor(math.log10(abs(value))))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def _table(header, rows) -> list:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    align = ["<" if i == 0 else ">" for i in range(len(header))]
    line = lambda cells: "  ".join(f"{str(c):{a}{w}}" for c, a, w in zip(cells, align, widths))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_report(report: dict) -> str:
    """The report as a readable text table (what ``onlinedelay bench`` prints)."""
    m, s = report["machine"], report["settings"]
    lines = [f"onlinedelay {m['package_version']} bench -- {m['date']}",
             f"machine: {m['cpu_model']}, {m['cores_usable']}/{m['cores']} cores, "
             + ", ".join(f"{k} {v}" for k, v in m["caches"].items())
             + f"; numpy {m['numpy_version']}, numba {m['numba_version']}"
             + (f" (threading layer {m['numba_threading_layer']})" if m.get("numba_threading_layer") else ""),
             f"load average (1, 5, 15 min) at start {m.get('load_average_start')}, at end {m.get('load_average_end')}"
             " -- other work on the machine slows every figure",
             f"T = {s['steps']} steps, {s['input_spikes_per_step'] * s['steps']:,.0f} input spikes per sample, "
             f"medians of {s['repeats']} repeat(s) after warm-up" + ("  [--quick: smoke test, not a measurement]"
                                                                     if s["quick"] else ""),
             ""]
    header = ["config", "B", "thr", "synapses", "train/s", "ns/syn-step", "bound ns", "x bound",
              "infer/s", "step med us", "step p99 us"]
    rows = []
    for r in report["results"]:
        tr, inf, st, bd = r["training"], r["inference"], r["streaming"], r["bound"]
        rows.append([r["config"], r["batch_size"], r["threads"], f"{r['synapses']:,}", _fmt(tr["samples_per_s"]),
                     _fmt(tr["ns_per_synapse_step"]), _fmt(bd["ns_per_synapse_step"]),
                     _fmt(tr["ns_per_synapse_step_over_bound"]), _fmt(inf["samples_per_s"]),
                     _fmt(st["latency_us_median"]), _fmt(st["latency_us_p99"])])
    lines += _table(header, rows)
    lines += ["",
              "train/s, infer/s: samples per second (batch of B, one learner.run_sample / net.run per batch); "
              "ns/syn-step: training time per synapse x step x sample;",
              "bound ns: triad a = b + s*c over arrays of synapses x B x trace arrays (2 without delays, 4 with), "
              "ns per element x trace arrays; x bound = ns/syn-step / bound ns;",
              "step med/p99 us: single-sample streaming net.step latency at batch 1."]
    if report["memory"]:
        steps = next(iter(report["memory"].values()))["steps"]
        header = (["config"] + [f"T={t} MB" for t in steps] + [f"T={steps[-1]}/T={steps[0]}"]
                  + [f"+run T={t}" for t in steps] + [f"input T={steps[-1]}"])
        rows = [[name] + [_fmt(v, 4) for v in mem["peak_rss_mb"]] + [_fmt(mem["peak_rss_ratio"], 4)]
                + [_fmt(v, 2) for v in mem["sample_growth_mb"]] + [_fmt(mem["input_mb"][-1], 2)]
                for name, mem in report["memory"].items()]
        lines += ["", "peak resident memory, MB (a fresh process per T; batch 1, 1 thread, one training sample of T steps):"]
        lines += _table(header, rows)
        lines += ["T=... MB: the process's peak (VmHWM); +run: what running the sample added to the resident "
                  "memory it had before (input already drawn); input: the uint8 sample itself."]
    derived = report["derived"]
    if derived["sparse_speedup"] or derived["thread_speedup"]:
        lines += ["", "training speed ratios measured in this run:"]
        for d in derived["sparse_speedup"]:
            lines.append(f"  {d['sparse']} vs {d['dense']} (B={d['batch_size']}, {d['threads']} thr): "
                         f"{_fmt(d['training_speedup'])}x")
        for d in derived["thread_speedup"]:
            lines.append(f"  {d['config']} B={d['batch_size']}: {d['threads']} threads vs 1: "
                         f"{_fmt(d['training_speedup'])}x")
    lines += ["", f"wall time {report['wall_s']:.0f} s"]
    return "\n".join(lines)
