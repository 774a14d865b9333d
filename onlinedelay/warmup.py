"""Compile (and cache on disk) every kernel by running a tiny network through each code path."""

from __future__ import annotations

import time

import numpy as np

from .config import LearningConfig, NetworkConfig
from .learning import ThreeFactorLearner
from .network import Network


def warmup(dtypes=("float32", "float64")) -> float:
    """Run each kernel once per dtype and per variant; returns the seconds it took."""
    start = time.perf_counter()
    x = np.ones((6, 2, 3), np.int64)
    for dtype in dtypes:
        for reset in ("soft", "hard"):
            cfg = NetworkConfig(n_inputs=3, n_hidden=2, n_outputs=2, max_delay_steps=2, reset=reset,
                                recurrent=True, input_delays="synaptic", recurrent_delays="axonal")
            for optimizer in ("adam", "sgd"):
                net = Network(cfg, seed=0, batch_size=2, dtype=dtype)
                learner = ThreeFactorLearner(net, LearningConfig(optimizer=optimizer, update="online"))
                learner.run_sample(x, np.array([0, 1]), update=True)
                net.step(x[0])
    return time.perf_counter() - start
