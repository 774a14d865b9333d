"""What one ``onlinedelay bench`` run measures: the options, validated, as a :class:`Plan`."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import OnlineDelayError, check_int
from ..provenance import numba_max_threads
from .configs import CONFIGS, DEFAULT_CONFIGS, QUICK_CONFIGS
from .peers import missing_message
from .workload import SPIKES_PER_STEP, TIMED_S

STEPS = 100                       # T of the throughput and latency measurements
MEMORY_STEPS = (100, 1000, 10000)
QUICK_STEPS = 20
QUICK_MEMORY_STEPS = (20, 200, 2000)
DEFAULT_REPEATS = 5
BATCH_SIZES = (1, 32)
THREADS = (1, 2)


class OptionError(OnlineDelayError):
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
    repeats : int, timed repeats per figure at least (the median is reported; a figure whose
        repeats take under ``workload.TIMED_S`` repeats until they fill it, except with ``quick``)
    steps : int, T of the throughput and latency measurements
    memory_steps : tuple of int, the T of each peak-memory child (empty: no memory measurement)
    seed : int, seeds the networks and the input
    quick : bool
    peers : bool, also time the PyTorch peers on the same batches (``bench.peers``)
    """

    configs: tuple
    batch_sizes: tuple
    threads: tuple
    repeats: int
    steps: int
    memory_steps: tuple
    seed: int = 0
    quick: bool = False
    peers: bool = False

    def rows(self) -> list:
        """Every (config, batch_size, threads) combination, in measuring order."""
        return [(c, b, t) for c in self.configs for b in self.batch_sizes for t in self.threads]

    def to_dict(self) -> dict:
        """The settings as plain data (for the JSON report)."""
        return {"configs": [c.name for c in self.configs], "batch_sizes": list(self.batch_sizes),
                "threads": list(self.threads), "repeats": self.repeats, "steps": self.steps,
                "memory_steps": list(self.memory_steps), "seed": self.seed, "quick": self.quick,
                "peers": self.peers, "timed_s": 0.0 if self.quick else TIMED_S,
                "input_spikes_per_step": SPIKES_PER_STEP, "memory_batch_size": 1,
                "memory_threads": 1, "streaming_batch_size": 1}


def _check_json_path(json_path) -> None:
    path = Path(json_path).expanduser()
    parent = path.resolve().parent
    if path.is_dir():
        raise OptionError("json", f"{json_path} is a directory; expected a file name")
    if not parent.is_dir():
        raise OptionError("json", f"directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OptionError("json", f"directory {parent} is not writable")


def make_plan(configs=(), batch_sizes=(), threads=(), repeats: int | None = None, quick: bool = False,
              memory: bool = True, seed: int = 0, json_path=None, peers: bool = False) -> Plan:
    """Validate the options and decide what to measure.

    Parameters
    ----------
    configs : names from :data:`CONFIGS` (comma-separated lists allowed); empty:
        :data:`DEFAULT_CONFIGS` (``--quick``: :data:`QUICK_CONFIGS`)
    batch_sizes : ints >= 1; empty: (1, 32) (``--quick``: (1,))
    threads : ints in [1, numba's thread count]; empty: (1, 2) (``--quick``: (1,))
    repeats : int >= 1; None: 5 (``--quick``: 1)
    quick : bool, small T, one repeat, few configurations (a smoke test, not a measurement)
    memory : bool, measure peak memory (three child processes per configuration)
    seed : int
    json_path : where the report will be written, checked now so a long run cannot fail at the end
    peers : bool, also time the PyTorch peers on the same batches (torch must be installed)

    Raises
    ------
    OptionError
        naming the offending option.
    """
    names = [n.strip() for item in configs for n in str(item).split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise OptionError("config", f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    names = list(dict.fromkeys(names or (QUICK_CONFIGS if quick else DEFAULT_CONFIGS)))
    batch_sizes = tuple(dict.fromkeys(batch_sizes)) or ((1,) if quick else BATCH_SIZES)
    for b in batch_sizes:
        check_int("batch", b, minimum=1, error=functools.partial(OptionError, "batch"))
    threads = tuple(dict.fromkeys(threads)) or ((1,) if quick else THREADS)
    available = numba_max_threads()
    for t in threads:
        check_int("threads", t, minimum=1, error=functools.partial(OptionError, "threads"))
        if t > available:
            raise OptionError("threads", f"{t} threads requested but numba can use {available} on this machine "
                                         "(NUMBA_NUM_THREADS)")
    if repeats is None:
        repeats = 1 if quick else DEFAULT_REPEATS
    check_int("repeats", repeats, minimum=1, error=functools.partial(OptionError, "repeats"))
    if json_path is not None:
        _check_json_path(json_path)
    if peers and missing_message():
        raise OptionError("peers", missing_message())
    steps = QUICK_STEPS if quick else STEPS
    memory_steps = (QUICK_MEMORY_STEPS if quick else MEMORY_STEPS) if memory else ()
    return Plan(tuple(CONFIGS[n] for n in names), tuple(batch_sizes), tuple(threads), repeats, steps,
                memory_steps, int(seed), bool(quick), bool(peers))
