"""Benchmark harness behind ``onlinedelay bench``.

For each named configuration, batch size and thread count it measures, through the public API
only, training and inference throughput, single-sample streaming latency, the machine's
streaming bound (a triad over arrays the size of the trace state), peak resident memory per
sequence length T, and with ``--peers`` the PyTorch peers on the same batches.  Nothing here
prints: :func:`run_bench` returns a plain dict (JSON-serialisable), :func:`format_report`
renders it as text and :func:`write_json` writes it atomically.

==================  ==========================================================================
``configs``         the named network configurations (add one there: one line)
``workload``        the seeded Poisson input every figure, ours and the peers', is timed on
``plan``            options -> :class:`Plan` (what to measure), validated
``measure``         training, inference, streaming latency of one row; ``triad``: the bound
``memory``          peak memory, a fresh child process per T
``peers``           PyTorch BPTT / DCLS peers (``torch_peers``, optional extra) and ratios
``run``             the whole run; ``report``: text table and JSON
==================  ==========================================================================

Machine facts (CPU, caches, versions, git revision) come from :mod:`onlinedelay.provenance`.
Measured figures are in ``docs/benchmarks.md``.
"""

from ..provenance import machine_info
from .configs import CONFIGS, DEFAULT_CONFIGS, QUICK_CONFIGS, SPARSE_PAIRS, BenchConfig
from .measure import (MIN_LATENCY_STEPS, QUICK_TRIAD_ELEMENTS_PER_REPEAT, TRIAD_ELEMENTS_PER_REPEAT,
                      measure_paired_batches, measure_paired_threads, measure_row, measure_streaming)
from .memory import MEMORY_CHILD_TIMEOUT_S, measure_memory
from .peers import PEERS, Peer, measure_peers, missing_message
from .plan import (BATCH_SIZES, DEFAULT_REPEATS, MEMORY_STEPS, QUICK_MEMORY_STEPS, QUICK_STEPS, STEPS, THREADS,
                   OptionError, Plan, make_plan)
from .report import format_report, write_json
from .run import SCHEMA, derived_ratios, run_bench
from .triad import Triad
from .workload import SPIKES_PER_STEP, poisson_input, rng_for, training_batch

__all__ = ["BATCH_SIZES", "CONFIGS", "DEFAULT_CONFIGS", "DEFAULT_REPEATS", "MEMORY_CHILD_TIMEOUT_S", "MEMORY_STEPS",
           "MIN_LATENCY_STEPS", "PEERS", "QUICK_CONFIGS", "QUICK_MEMORY_STEPS", "QUICK_STEPS",
           "QUICK_TRIAD_ELEMENTS_PER_REPEAT", "SCHEMA", "SPARSE_PAIRS", "SPIKES_PER_STEP", "STEPS", "THREADS",
           "TRIAD_ELEMENTS_PER_REPEAT", "BenchConfig", "OptionError", "Peer", "Plan", "Triad", "derived_ratios",
           "format_report", "machine_info", "make_plan", "measure_memory", "measure_paired_batches",
           "measure_paired_threads", "measure_peers", "measure_row",
           "measure_streaming", "missing_message", "poisson_input", "rng_for", "run_bench", "training_batch",
           "write_json"]
