"""The synthetic workload every benchmark figure (ours and the peers') is measured on.

Input is Poisson spike counts at :data:`SPIKES_PER_STEP` spikes per step summed over all input
channels (5,000 spikes per 100-step sample, as for 700 cochlea channels; with 140 pooled
channels each channel fires 5x as often), drawn from a seed, and uniform random labels.
"""

from __future__ import annotations

import zlib

import numpy as np

SPIKES_PER_STEP = 50.0            # input spikes per step over all channels: 5,000 per 100-step sample


def rng_for(seed: int, *keys) -> np.random.Generator:
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


def training_batch(config_name: str, n_inputs: int, n_outputs: int, n_steps: int, batch_size: int,
                   seed: int) -> tuple:
    """The batch a (configuration, batch size) is timed on: x (n_steps, batch_size, n_inputs) uint8,
    labels (batch_size,) int64.  The same arguments give the same batch, so peers see our input."""
    rng = rng_for(seed, config_name, batch_size, "train")
    x = poisson_input(n_steps, batch_size, n_inputs, rng)
    labels = rng.integers(0, n_outputs, size=batch_size)
    return x, labels


TIMED_S = 0.3          # a figure times at least this long (fast rows repeat more; not in --quick)
MAX_REPEATS = 200


def repeats_for(call_ns: int, repeats: int, budget_s: float) -> int:
    """How many timed calls a figure takes: at least ``repeats``, and enough that calls of ``call_ns``
    fill ``budget_s`` (at most MAX_REPEATS).  Five batch-1 samples of ~4 ms are 20 ms of timing,
    which scatters by +-30 % between runs on a shared 2-core VM; the median of ~75 does not."""
    return max(repeats, min(MAX_REPEATS, -(-int(budget_s * 1e9) // max(int(call_ns), 1))))
