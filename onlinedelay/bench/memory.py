"""Peak resident memory of one training sample per sequence length T, each in a fresh child process.

A fresh process per T keeps the peaks of different T apart; see :func:`measure_memory` for why
the child reads ``VmHWM`` rather than ``ru_maxrss``.
"""

from __future__ import annotations

import json
import sys
import time

try:
    import resource
except ImportError:                            # Windows: no resource module (and no /proc either)
    resource = None

from ..config import LearningConfig
from ..learning import ThreeFactorLearner
from ..network import Network
from ..provenance import read_text
from .child import run_child
from .configs import BenchConfig
from .measure import quiet_training
from .workload import poisson_input, rng_for

MEMORY_CHILD_TIMEOUT_S = 3600.0
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
        child = run_child("onlinedelay.bench.memory:memory_child_main",
                          {"config": config.to_dict(), "steps": int(steps), "seed": seed},
                          f"memory child for {config.name} at T={steps}", MEMORY_CHILD_TIMEOUT_S)
        out["steps"].append(int(steps))
        for key in _MEMORY_KEYS:
            out[key].append(child[key])
    for key in ("peak_rss", "sample_peak_rss"):
        values = out[f"{key}_mb"]
        ok = values and values[0] and values[-1]
        out[f"{key}_ratio"] = values[-1] / values[0] if ok else None
    return out


def _status_mb(field: str):
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB, or None off Linux."""
    for line in read_text("/proc/self/status").splitlines():
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


def memory_child_main(spec_json: str, result_path: str) -> None:
    """Entry point of a memory child: one training sample of length T; writes its facts as JSON."""
    spec = json.loads(spec_json)
    config = BenchConfig.from_dict(spec["config"])
    steps, seed = int(spec["steps"]), int(spec["seed"])
    rng = rng_for(seed, config.name, "memory", steps)
    net = Network(config.network_config(), seed=seed, batch_size=1, dtype="float32", threads=1)
    learner = ThreeFactorLearner(net, LearningConfig())
    labels = rng.integers(0, config.n_outputs, size=1)
    with quiet_training():
        learner.run_sample(poisson_input(2, 1, config.n_inputs, rng), labels, update=True)
        x = poisson_input(steps, 1, config.n_inputs, rng)
        peak_before = _status_mb("VmHWM")
        rss_before = _status_mb("VmRSS")
        reset = _reset_peak_rss()
        start = time.perf_counter()
        learner.run_sample(x, labels, update=True)
        seconds = time.perf_counter() - start
    sample_peak = _status_mb("VmHWM") if reset else None
    if peak_before is None and resource is None:
        peak = None
    elif peak_before is None:                  # not Linux: ru_maxrss (may include the parent's peak)
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = usage * (1 if sys.platform == "darwin" else 1024) / 1e6
    else:
        peak = max(peak_before, sample_peak or 0.0, _status_mb("VmHWM"))
    result = {"peak_rss_mb": peak, "sample_peak_rss_mb": sample_peak, "rss_before_sample_mb": rss_before,
              "sample_growth_mb": None if sample_peak is None or rss_before is None else sample_peak - rss_before,
              "input_mb": x.nbytes / 1e6, "training_s": seconds}
    with open(result_path, "w") as fh:
        json.dump(result, fh)
