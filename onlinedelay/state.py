"""NamedTuples of preallocated arrays: parameters, forward state, learning state, gradients.

A network is a stack of hidden layers; each layer has a feedforward projection (from the input
for layer 0, from the layer below otherwise) and a recurrent one (no synapses without
recurrence).  Shapes use B (batch), n_pre (the presynaptic population), N (the layer's neurons),
n_out, n_syn (synapses of a projection, CSR order: row j holds the synapses onto neuron j),
n_delays (n_syn for synaptic delays, n_pre for axonal delays, 0 without delays), n_slots (ring
length), n_lag (delay-pipeline lag + 1).  The batch is always the last (contiguous) axis of
per-sample state.  Floating arrays use the network dtype (float32 by default); indices are int32.

Layer 0 is reachable by the short names of the single-layer model (``params.input`` is layer 0's
feedforward projection, ``params.recurrent`` its recurrent one; ``grads.w_in`` ...).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PROJECTION_KINDS = ("feedforward", "recurrent")


class Projection(NamedTuple):
    """Synapses from a presynaptic population onto a layer, as CSR rows.

    A conv projection learns ``shared_weight`` (its k taps, shared by every neuron) and keeps
    ``weight = shared_weight[weight_of_syn]`` as the per-synapse copy the kernels read; other
    projections learn ``weight`` and have empty shared arrays.
    """

    indptr: np.ndarray        # (N + 1,) int32, row pointers
    pre: np.ndarray           # (n_syn,) int32, presynaptic index of each synapse
    weight: np.ndarray        # (n_syn,) float, learned (a derived copy for conv)
    delay: np.ndarray         # (n_delays,) float, learned, steps in [0, max_delay_steps]
    delay_steps: np.ndarray   # (n_syn,) int32, floor(delay + 0.5) of each synapse (forward pass)
    delay_of_syn: np.ndarray  # (n_syn,) int32, index into ``delay`` (all 0 when n_delays = 0)
    pre_of_delay: np.ndarray  # (n_delays,) int32, presynaptic index of each delay parameter
    shared_weight: np.ndarray  # (k,) float, conv taps (learned); (0,) otherwise
    weight_of_syn: np.ndarray  # (n_syn,) int32, conv tap of each synapse; (0,) otherwise
    # low-bit projections (onlinedelay/quantize.py); all (0,) for a float projection
    weight_shadow: np.ndarray  # (n_syn,) or (k,) conv, float: the real-valued weights learned when quantized
    weight_scale: np.ndarray   # (2,) float: (alpha, beta) ternary, (s, s) k-bit; (0,) for float weights
    delay_shadow: np.ndarray   # (n_delays,) float: the real-valued delays learned when quantized
    delay_offset: np.ndarray   # (1,) float, steps: the offset of the delay grid when quantized

    @property
    def learned_weight(self) -> np.ndarray:
        """The weight array the optimizer updates: the shadow weights of a quantized projection, else
        the conv taps, or the per-synapse weights."""
        if self.weight_scale.size:
            return self.weight_shadow
        return self.shared_weight if self.weight_of_syn.size else self.weight

    @property
    def learned_delay(self) -> np.ndarray:
        """The delay array the optimizer updates: the shadow delays when quantized, else ``delay``."""
        return self.delay_shadow if self.delay_offset.size else self.delay

    def expand_shared(self) -> None:
        """Conv: copy the taps into the per-synapse weights (after the taps changed)."""
        if self.weight_of_syn.size:
            np.take(self.shared_weight, self.weight_of_syn, out=self.weight)


# the arrays a model file stores per projection; delay_steps (and a conv's weight) are derived
STORED_PROJECTION_FIELDS = ("indptr", "pre", "weight", "delay", "delay_of_syn", "pre_of_delay",
                            "shared_weight", "weight_of_syn")
# stored too where they are not empty (a float projection has none: its files are unchanged)
QUANTIZER_FIELDS = ("weight_shadow", "weight_scale", "delay_shadow", "delay_offset")


class LayerParameters(NamedTuple):
    feedforward: Projection
    recurrent: Projection     # no synapses (N + 1 zero row pointers) without recurrence


class Parameters(NamedTuple):
    """Everything a trained model is."""

    layers: tuple             # (L,) LayerParameters
    w_out: np.ndarray         # (n_out, n_readout_inputs) float, readout weights
    b_out: np.ndarray         # (n_out,) float, readout bias (inside the leaky integrator)

    @property
    def input(self) -> Projection:
        """Layer 0's feedforward projection (from the input)."""
        return self.layers[0].feedforward

    @property
    def recurrent(self) -> Projection:
        """Layer 0's recurrent projection."""
        return self.layers[0].recurrent

    def projections(self):
        """Yield (layer index, kind, Projection) for every projection, kinds as PROJECTION_KINDS."""
        for l, layer in enumerate(self.layers):
            for kind, proj in zip(PROJECTION_KINDS, layer):
                yield l, kind, proj

    def arrays(self, stored_only: bool = True):
        """Yield (name, array) for every array: ``layers/<l>/<kind>/<field>``, ``w_out``, ``b_out``.

        ``stored_only`` leaves out the derived ``delay_steps`` (recomputed from the delays); the
        quantizer arrays (:data:`QUANTIZER_FIELDS`) come only where they are not empty."""
        fields = STORED_PROJECTION_FIELDS if stored_only else Projection._fields
        for l, kind, proj in self.projections():
            for field in fields:
                if field not in QUANTIZER_FIELDS:
                    yield f"layers/{l}/{kind}/{field}", getattr(proj, field)
            for field in QUANTIZER_FIELDS:
                if getattr(proj, field).size:
                    yield f"layers/{l}/{kind}/{field}", getattr(proj, field)
        yield "w_out", self.w_out
        yield "b_out", self.b_out

    def learned(self):
        """Yield (name, array, group) of every learned array; group is weights, delays or readout.

        Per projection: the weights (or shadow weights), the delays (or shadow delays), then, when
        quantized, the weight scales (group weights) and the delay offset (group delays).  Fixed
        scales and offsets are listed too: their gradient is zero, so no optimizer moves them, and
        quantize.py recomputes fixed scales from the shadow weights after every step."""
        for l, kind, proj in self.projections():
            yield f"layers/{l}/{kind}/weight", proj.learned_weight, "weights"
            yield f"layers/{l}/{kind}/delay", proj.learned_delay, "delays"
            if proj.weight_scale.size:
                yield f"layers/{l}/{kind}/weight_scale", proj.weight_scale, "weights"
            if proj.delay_offset.size:
                yield f"layers/{l}/{kind}/delay_offset", proj.delay_offset, "delays"
        yield "w_out", self.w_out, "readout"
        yield "b_out", self.b_out, "readout"


class LayerState(NamedTuple):
    """Per-sample forward state of one layer; its spikes live in ``NetworkState.z`` (a row block)."""

    v: np.ndarray             # (N, B) membrane potential before reset
    decay_eff: np.ndarray     # (N, B) decay applied to v in the last step
    current: np.ndarray       # (N, B) scratch: input current of the last step
    hist_ff: np.ndarray       # (n_slots, n_pre, B) ring of the feedforward input (x^t or z_below^t)
    hist_rec: np.ndarray      # (n_slots, N, B) ring of z^(t-1) (recurrent input); 0 slots without recurrence
    future: np.ndarray        # (n_slots, N, B) current pushed but not yet arrived: step a lives in slot a % n_slots
    pulled_ff: np.ndarray     # (n_slots,) uint8, 1 where hist_ff's step is not in ``future`` (pulled instead)
    pulled_rec: np.ndarray    # (n_slots,) uint8, the same for hist_rec (0 slots without recurrence)
    pull_until: np.ndarray    # (2,) int64, steps t < pull_until[k] receive pulled input (k: feedforward, recurrent)


class NetworkState(NamedTuple):
    """Per-sample forward state; reset to zero at the start of every sample."""

    layers: tuple             # (L,) LayerState
    z: np.ndarray             # (sum N, B) spikes of the last step, layer after layer (0/1)
    y: np.ndarray             # (n_out, B) readout
    t: np.ndarray             # (1,) int64, steps taken since reset

    # layer 0 under the single-layer names
    v = property(lambda self: self.layers[0].v)
    current = property(lambda self: self.layers[0].current)
    hist_in = property(lambda self: self.layers[0].hist_ff)
    hist_rec = property(lambda self: self.layers[0].hist_rec)
    pulled_in = property(lambda self: self.layers[0].pulled_ff)


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


class LayerLearnerState(NamedTuple):
    """Per-sample learning state of one layer."""

    psi_lag: np.ndarray       # (n_lag, N, B) hard reset: pseudo-derivative of the last n_lag steps
    signal_lag: np.ndarray    # (n_lag, N, B) hard reset: learning signal L of the last n_lag steps
    decay_lag: np.ndarray     # (n_lag, N, B) hard reset: effective membrane decay of the last n_lag steps
    psi_buf: np.ndarray       # (n_buf, N, B) soft reset: psi of the steps not yet processed (from step ``cursor[1]``)
    signal_buf: np.ndarray    # (n_buf, N, B) soft reset: L of the same steps
    factors: np.ndarray       # (2, N, n_buf, B) soft reset scratch: P and Q of a chunk
    factors_b: np.ndarray     # (3, N, B) soft reset scratch: A, Pa, Qa of a chunk
    scratch: np.ndarray       # (N, SCRATCH_ROWS, B) soft reset: per-neuron vectors of the chunk kernels
    early: np.ndarray         # (n_buf,) float64 soft reset scratch: alpha^(step + 1) of a chunk's steps
    feedforward: ProjectionTraces
    recurrent: ProjectionTraces
    cursor: np.ndarray        # (3,) int64 soft reset: first step whose weight / delay traces are pending, first unfiltered step


class LearnerState(NamedTuple):
    """Per-sample learning state; memory is fixed, whatever the sequence length."""

    probs: np.ndarray         # (n_out, B) softmax of the readout
    delta: np.ndarray         # (n_out, B) weighted error dE/dy
    zbar: np.ndarray          # (n_readout_inputs, B) readout-filtered spikes
    zbar_t: np.ndarray        # (B, n_readout_inputs) scratch: zbar transposed (readout gradient)
    bbar: np.ndarray          # (B,) readout-filtered constant (bias trace)
    layers: tuple             # (L,) LayerLearnerState
    t: np.ndarray             # (1,) int64, steps seen since reset
    flushed: np.ndarray       # (1,) int64, 1 once the delay pipeline has been flushed


class ProjectionGradients(NamedTuple):
    weight: np.ndarray        # (n_syn,), or (k,) for a conv projection's taps (shadow weights when quantized)
    delay: np.ndarray         # (n_delays,) (shadow delays when quantized)
    weight_scale: np.ndarray  # (2,) d(alpha, beta) of quantized weights (0 for fixed scales); (0,) for float
    delay_offset: np.ndarray  # (1,) of quantized delays (0 for a fixed offset); (0,) otherwise


class LayerGradients(NamedTuple):
    feedforward: ProjectionGradients
    recurrent: ProjectionGradients


class Gradients(NamedTuple):
    """dE/d(parameter), accumulated (summed over steps and batch) until applied."""

    layers: tuple             # (L,) LayerGradients
    w_out: np.ndarray         # (n_out, n_readout_inputs)
    b_out: np.ndarray         # (n_out,)

    # layer 0 under the single-layer names
    w_in = property(lambda self: self.layers[0].feedforward.weight)
    d_in = property(lambda self: self.layers[0].feedforward.delay)
    w_rec = property(lambda self: self.layers[0].recurrent.weight)
    d_rec = property(lambda self: self.layers[0].recurrent.delay)

    def learned(self):
        """Yield (name, array) in the order of :meth:`Parameters.learned`."""
        for l, layer in enumerate(self.layers):
            for kind, g in zip(PROJECTION_KINDS, layer):
                yield f"layers/{l}/{kind}/weight", g.weight
                yield f"layers/{l}/{kind}/delay", g.delay
                if g.weight_scale.size:
                    yield f"layers/{l}/{kind}/weight_scale", g.weight_scale
                if g.delay_offset.size:
                    yield f"layers/{l}/{kind}/delay_offset", g.delay_offset
        yield "w_out", self.w_out
        yield "b_out", self.b_out


CACHE_LINE_BYTES = 64


def aligned_zeros(shape, dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` starting on a cache line.  Kernels that split the batch (the last axis)
    between threads then give each thread whole lines of every row when a part is a multiple of 64 bytes
    (B = 32 float32 in two parts), where numpy's 16-byte alignment made the threads share a line at every
    row (false sharing: 700 -> 256 at B = 32 on 2 threads, backward filter 3.6 -> 1.6 ms, forward segment
    6.2 -> 4.4 ms)."""
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(n_bytes + CACHE_LINE_BYTES, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE_BYTES
    return raw[start:start + n_bytes].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` starting on a cache line (:func:`aligned_zeros`)."""
    out = aligned_zeros(a.shape, a.dtype)
    out[...] = a
    return out


def _rebuild(tup, items):
    return tuple(items) if type(tup) is tuple else type(tup)(*items)


def zeros_like_tuple(tup):
    """A tuple (NamedTuple or plain) of the same structure with every array replaced by zeros."""
    return _rebuild(tup, (zeros_like_tuple(a) if isinstance(a, tuple) else aligned_zeros(a.shape, a.dtype)
                          for a in tup))


def copy_tuple(tup):
    """Deep copy of a (nested) tuple of arrays (each on a cache line, :func:`aligned_zeros`)."""
    return _rebuild(tup, (copy_tuple(a) if isinstance(a, tuple) else aligned_copy(a) for a in tup))


def fill_tuple(tup, value=0) -> None:
    """Set every array of a (nested) tuple to ``value`` in place."""
    for a in tup:
        if isinstance(a, tuple):
            fill_tuple(a, value)
        else:
            a[...] = value


def assign_tuple(dst, src) -> None:
    """Copy every array of ``src`` into the same-shaped array of ``dst`` in place."""
    if len(dst) != len(src):
        raise ValueError(f"cannot restore {len(src)} entries into {len(dst)}")
    for a, b in zip(dst, src):
        if isinstance(a, tuple):
            assign_tuple(a, b)
        else:
            if a.shape != b.shape:
                raise ValueError(f"cannot restore an array of shape {b.shape} into shape {a.shape}")
            a[...] = b
