"""Compile (and cache on disk) every kernel by running tiny inputs through each code path."""

from __future__ import annotations

import time
import warnings

import numpy as np

from . import segments
from .config import LearningConfig, NetworkConfig
from .learning import ThreeFactorLearner
from .network import Network


def warmup(dtypes=("float32", "float64")) -> float:
    """Run every kernel once per dtype, variant and serial/parallel build; returns the seconds it took."""
    start = time.perf_counter()
    x = np.ones((6, 2, 3), np.int64)
    parallel_work = segments.PARALLEL_WORK
    segments.PARALLEL_WORK = 0                    # tiny networks: compile the parallel builds too
    try:
        _run_everything(x, dtypes)
    finally:
        segments.PARALLEL_WORK = parallel_work
    return time.perf_counter() - start


def _run_everything(x, dtypes) -> None:
    from .datasets.cochlea import cochlea_spikes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # tiny random nets clip delays
        for dtype in dtypes:
            for threads in (1, 2):
                # soft: chunk kernels (synaptic input; axonal recurrent), BLAS for a dense input without
                # per-synapse delays; hard: per-step kernels
                for reset, (inp, rec) in (("soft", ("synaptic", "axonal")), ("soft", ("none", "none")),
                                          ("hard", ("axonal", "synaptic"))):
                    cfg = NetworkConfig(n_inputs=3, n_hidden=2, n_outputs=2, max_delay_steps=2, reset=reset,
                                        recurrent=True, input_delays=inp, recurrent_delays=rec)
                    # two layers read by the readout (the learning signal reads column blocks of the
                    # readout weights) with conv recurrence
                    deep = cfg.replace(n_layers=2, readout="all", recurrent="conv", hidden_delays=rec)
                    # one layer without recurrence: segments (segments.py), per-spike gradients
                    flat = cfg.replace(recurrent="none")
                    for c in (cfg, deep, flat):
                        net = Network(c, seed=0, batch_size=2, dtype=dtype, threads=threads)
                        ThreeFactorLearner(net).run_sample(x, np.array([0, 1]), update=True)
                        net.run(x)
                    for optimizer in ("adam", "sgd"):
                        net = Network(cfg, seed=0, batch_size=2, dtype=dtype, threads=threads)
                        learner = ThreeFactorLearner(net, LearningConfig(optimizer=optimizer, update="online"))
                        learner.run_sample(x, np.array([0, 1]), update=True)
                        net.step(x[0])
                    net.reset(1)                                  # batch 1: whole steps in one kernel call
                    for counts in (x[1, 0], x[2, 0].astype(np.uint8), x[3, 0].astype(dtype)):
                        net.step(counts)
            # int32 push targets ((max_delay_steps + 1) * n_hidden > 2^16; smaller networks use uint16)
            wide = NetworkConfig(n_inputs=1, n_hidden=2**15 + 1, n_outputs=2, max_delay_steps=1, input_delays="synaptic")
            for batch in (1, 2):
                Network(wide, seed=0, batch_size=batch, dtype=dtype).step(np.ones((batch, 1), np.int64))
        cochlea_spikes(np.zeros(480), 48000.0)                # the front end of `data generate`
