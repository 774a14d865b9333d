"""NamedTuples of preallocated arrays: parameters, forward state, learning state, gradients.

Shapes use B (batch), n_in, n_hidden (N), n_out, n_syn (synapses of a projection, CSR order:
row j holds the synapses onto hidden neuron j), n_delays (n_syn for synaptic delays, n_pre for
axonal delays, 0 without delays), n_slots (ring length), n_lag (delay-pipeline lag + 1).
The batch is always the last (contiguous) axis of per-sample state.  Floating arrays use the
network dtype (float32 by default); indices are int32.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Projection(NamedTuple):
    """Synapses from a presynaptic population onto the hidden layer, as CSR rows."""

    indptr: np.ndarray        # (N + 1,) int32, row pointers
    pre: np.ndarray           # (n_syn,) int32, presynaptic index of each synapse
    weight: np.ndarray        # (n_syn,) float, learned
    delay: np.ndarray         # (n_delays,) float, learned, steps in [0, max_delay_steps]
    delay_steps: np.ndarray   # (n_syn,) int32, floor(delay + 0.5) of each synapse (forward pass)
    delay_of_syn: np.ndarray  # (n_syn,) int32, index into ``delay`` (all 0 when n_delays = 0)
    pre_of_delay: np.ndarray  # (n_delays,) int32, presynaptic index of each delay parameter


class Parameters(NamedTuple):
    """Everything a trained model is; ``recurrent`` has no synapses when recurrence is off."""

    input: Projection
    recurrent: Projection
    w_out: np.ndarray         # (n_out, N) float, readout weights
    b_out: np.ndarray         # (n_out,) float, readout bias (inside the leaky integrator)


class NetworkState(NamedTuple):
    """Per-sample forward state; reset to zero at the start of every sample."""

    v: np.ndarray             # (N, B) membrane potential before reset (threshold units)
    z: np.ndarray             # (N, B) spikes of the last step (0/1)
    decay_eff: np.ndarray     # (N, B) decay applied to v in the last step
    current: np.ndarray       # (N, B) scratch: input current of the last step
    y: np.ndarray             # (n_out, B) readout
    hist_in: np.ndarray       # (n_slots, n_in, B) ring of input counts
    hist_rec: np.ndarray      # (n_slots, N, B) ring of z^(t-1) (recurrent input); n_slots 0 without recurrence
    future: np.ndarray        # (n_slots, N, B) current pushed but not yet arrived: step a lives in slot a % n_slots
    pulled_in: np.ndarray     # (n_slots,) uint8, 1 where hist_in's step is not in ``future`` (pulled instead)
    pulled_rec: np.ndarray    # (n_slots,) uint8, the same for hist_rec (0 slots without recurrence)
    pull_until: np.ndarray    # (2,) int64, steps t < pull_until[k] receive pulled input (k: input, recurrent)
    t: np.ndarray             # (1,) int64, steps taken since reset


class ProjectionTraces(NamedTuple):
    """Eligibility traces of one projection (delay arrays are empty when delays are not learned).

    Soft reset (chunked kernels, kernels/chunk.py): ebar_* plus the filtered-trace history ``xh``,
    ``xearly`` and, for axonal delays, ``unit_signal``/``unit_edge``.  Hard reset (per-step kernels):
    eps_*, ebar_* and ``xi``.  Unused arrays have a zero-length leading axis.
    """

    eps_w: np.ndarray         # (n_syn, B) hard reset, else (0, B)
    ebar_w: np.ndarray        # (n_syn, B); (B, n_syn) for a dense projection summed by BLAS (dense.py)
    eps_d: np.ndarray         # (n_syn, B) hard reset with learned delays, else (0, B)
    ebar_d: np.ndarray        # (n_syn, B) with learned delays, else (0, B)
    xi: np.ndarray            # (n_delays, B) hard reset, axonal: Gaussian delay derivative (scratch)
    xh: np.ndarray            # (n_pre, 2H, B) soft reset: mirrored ring of the presynaptic filtered trace
    xearly: np.ndarray        # (n_pre, K, B) soft reset: filtered trace of the first K steps
    unit_signal: np.ndarray   # (n_delays, n_buf, B) soft reset, axonal: tap sums of a chunk (scratch)
    unit_edge: np.ndarray     # (n_delays, B) soft reset, axonal: read-ahead correction (scratch)
    windows: np.ndarray       # (n_pre * n_buf * B,) soft reset, dense without per-synapse delays: scratch


class LearnerState(NamedTuple):
    """Per-sample learning state; memory is fixed, whatever the sequence length."""

    psi_lag: np.ndarray       # (n_lag, N, B) hard reset: pseudo-derivative of the last n_lag steps
    signal_lag: np.ndarray    # (n_lag, N, B) hard reset: learning signal L of the last n_lag steps
    decay_lag: np.ndarray     # (n_lag, N, B) hard reset: effective membrane decay of the last n_lag steps
    psi_buf: np.ndarray       # (n_buf, N, B) soft reset: psi of the steps not yet processed (from step ``cursor[1]``)
    signal_buf: np.ndarray    # (n_buf, N, B) soft reset: L of the same steps
    factors: np.ndarray       # (2, N, n_buf, B) soft reset scratch: P and Q of a chunk
    factors_b: np.ndarray     # (3, N, B) soft reset scratch: A, Pa, Qa of a chunk
    probs: np.ndarray         # (n_out, B) softmax of the readout
    delta: np.ndarray         # (n_out, B) weighted error dE/dy
    zbar: np.ndarray          # (N, B) readout-filtered spikes
    bbar: np.ndarray          # (B,) readout-filtered constant (bias trace)
    input: ProjectionTraces
    recurrent: ProjectionTraces
    t: np.ndarray             # (1,) int64, steps seen since reset
    flushed: np.ndarray       # (1,) int64, 1 once the delay pipeline has been flushed
    cursor: np.ndarray        # (3,) int64 soft reset: first step whose weight / delay traces are pending, first unfiltered step


class Gradients(NamedTuple):
    """dE/d(parameter), accumulated (summed over steps and batch) until applied."""

    w_in: np.ndarray          # (n_syn_in,)
    d_in: np.ndarray          # (n_delays_in,)
    w_rec: np.ndarray         # (n_syn_rec,)
    d_rec: np.ndarray         # (n_delays_rec,)
    w_out: np.ndarray         # (n_out, N)
    b_out: np.ndarray         # (n_out,)


def zeros_like_tuple(tup):
    """A NamedTuple of the same type with every array replaced by zeros (recursively)."""
    return type(tup)(*(zeros_like_tuple(a) if isinstance(a, tuple) else np.zeros_like(a) for a in tup))


def copy_tuple(tup):
    """Deep copy of a NamedTuple of arrays."""
    return type(tup)(*(copy_tuple(a) if isinstance(a, tuple) else a.copy() for a in tup))


def fill_tuple(tup, value=0) -> None:
    """Set every array of a NamedTuple (recursively) to ``value`` in place."""
    for a in tup:
        if isinstance(a, tuple):
            fill_tuple(a, value)
        else:
            a[...] = value


def assign_tuple(dst, src) -> None:
    """Copy every array of ``src`` into the same-shaped array of ``dst`` in place."""
    for a, b in zip(dst, src):
        if isinstance(a, tuple):
            assign_tuple(a, b)
        else:
            if a.shape != b.shape:
                raise ValueError(f"cannot restore an array of shape {b.shape} into shape {a.shape}")
            a[...] = b
