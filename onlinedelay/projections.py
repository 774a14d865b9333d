"""Projections: building them from a spec and a seed (dense, sparse, conv), their integer delays,
the presynaptic (CSC) index of the push, and dense views.

A projection is CSR rows onto a layer (``state.Projection``); a conv projection's synapses share
the k taps of one kernel along the neuron axis (``shared_weight``, ``weight_of_syn``: zero padding,
cross-correlation, the centre tap is the neuron itself).  ``init_parameters`` draws every
projection of a network from one seed, each part from its own random stream.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernels as K
from . import quantize as Q
from .config import NetworkConfig, ProjectionSpec
from .errors import OnlineDelayError
from .kernels.csc import transpose_add, transpose_copy
from .kernels.events import event_targets
from .state import LayerParameters, Parameters, Projection

_INT = np.int32


def _connectivity(rng, n_pre: int, n_post: int, spec: ProjectionSpec):
    """CSR rows (indptr, pre) and, for conv, the tap of each synapse."""
    if spec.connectivity == "conv":
        half = spec.kernel_size // 2
        pre, taps, counts = [], [], []
        for j in range(n_post):
            lo, hi = max(0, j - half), min(n_pre, j + half + 1)     # zero padding: taps off the edge are absent
            pre.append(np.arange(lo, hi))
            taps.append(np.arange(lo, hi) - j + half)               # cross-correlation: tap m reads j + m - half
            counts.append(hi - lo)
        indptr = np.zeros(n_post + 1, _INT)
        np.cumsum(counts, out=indptr[1:])
        return indptr, np.concatenate(pre).astype(_INT), np.concatenate(taps).astype(_INT)
    available = n_pre - 1 if spec.exclude_self else n_pre
    fan_in = 0 if available <= 0 else max(1, int(round(spec.density * available)))
    rows = []
    for j in range(n_post):
        if fan_in == available:
            chosen = np.arange(available)
        else:
            chosen = np.sort(rng.choice(available, size=fan_in, replace=False))
        if spec.exclude_self:
            chosen = chosen + (chosen >= j)       # skip the autapse j -> j
        rows.append(chosen)
    pre = np.concatenate(rows).astype(_INT) if rows and fan_in else np.zeros(0, _INT)
    return (np.arange(n_post + 1) * fan_in).astype(_INT), pre, None


def build_projection(rng, rng_delay, n_pre: int, n_post: int, spec: ProjectionSpec | None, threshold: float,
                     max_delay_steps: int, dtype) -> Projection:
    """A random projection (``spec`` None: no synapses).

    Connectivity and weights come from ``rng``, delays from ``rng_delay``: the same seed gives the
    same weights whatever the delay mode (fair ablations).  Weights ~ N(0, (scale theta)^2 / fan_in).
    A quantized projection (``spec.weight_bits``, ``spec.delay_step``) learns shadow copies of
    these draws; its effective weights and delays are their quantized values (quantize.py).
    """
    quantized = spec is not None and (spec.quantized_weights or spec.quantized_delays)
    if spec is None:
        spec = ProjectionSpec("dense", 1.0, 1, "none", "zero", (0.0, 0.0), 1.0, False)
        n_pre = 0
    indptr, pre, taps = _connectivity(rng, n_pre, n_post, spec)
    fan_in = spec.kernel_size if taps is not None else (pre.size // n_post if n_post else 0)
    std = spec.weight_init_scale * threshold / np.sqrt(max(fan_in, 1))
    if taps is not None:
        shared = rng.normal(0.0, std, size=spec.kernel_size).astype(dtype)
        weight, weight_of_syn = shared[taps], taps
    else:
        weight = rng.normal(0.0, std, size=pre.size).astype(dtype)
        shared, weight_of_syn = np.zeros(0, dtype), np.zeros(0, _INT)
    if spec.delays == "synaptic":
        pre_of_delay = pre.copy()
        delay_of_syn = np.arange(pre.size, dtype=_INT)
    elif spec.delays == "axonal":
        pre_of_delay = np.arange(n_pre, dtype=_INT)
        delay_of_syn = pre.copy()
    else:
        pre_of_delay = np.zeros(0, _INT)
        delay_of_syn = np.zeros(pre.size, _INT)
    if spec.delay_init == "zero":
        delay = np.zeros(pre_of_delay.size, dtype)
    else:
        low, high = spec.delay_init_range if spec.delay_init == "range" else (0.0, max_delay_steps)
        delay = rng_delay.uniform(low, high, size=pre_of_delay.size).astype(dtype)
    empty = np.zeros(0, dtype)
    proj = Projection(indptr, pre, weight, delay, np.zeros(pre.size, _INT), delay_of_syn, pre_of_delay,
                      shared, weight_of_syn, empty, empty.copy(), empty.copy(), empty.copy())
    if quantized:
        proj = Q.init_quantizers(proj, spec)
        Q.quantize_projection(proj, spec, max_delay_steps)
    refresh_delay_steps(proj, max_delay_steps)
    return proj


def refresh_delay_steps(proj: Projection, max_delay_steps: int) -> int:
    """Clip ``proj.delay`` to [0, max] and recompute the integer delay of every synapse.

    Returns the number of clipped delays.  A projection without delays keeps all-zero delays.
    """
    if proj.delay.size == 0:
        proj.delay_steps[:] = 0
        return 0
    return int(K.round_delays(proj.delay, float(max_delay_steps), proj.delay_of_syn, proj.delay_steps))


def init_parameters(config: NetworkConfig, seed: int, dtype="float32") -> Parameters:
    """Draw all parameters from ``seed``: one independent stream per projection part and the readout,
    so switching delays or recurrence on or off leaves every other parameter unchanged (layer 0
    and the readout draw from the streams of the single-layer model, whatever the depth)."""
    dtype = np.dtype(dtype)
    specs = config.layer_specs
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5 + 4 * (len(specs) - 1))]
    rng_out = streams[4]
    layer_streams = [streams[0:4]] + [streams[5 + 4 * k: 9 + 4 * k] for k in range(len(specs) - 1)]
    layers = []
    for spec, (rng_ff, rng_ff_d, rng_rec, rng_rec_d) in zip(specs, layer_streams):
        ff = build_projection(rng_ff, rng_ff_d, spec.n_pre, spec.n_neurons, spec.feedforward, spec.threshold,
                              config.max_delay_steps, dtype)
        rec = build_projection(rng_rec, rng_rec_d, spec.n_neurons, spec.n_neurons, spec.recurrent, spec.threshold,
                               config.max_delay_steps, dtype)
        layers.append(LayerParameters(ff, rec))
    n_read = config.n_readout_inputs
    w_out = rng_out.normal(0.0, 1.0 / np.sqrt(n_read), size=(config.n_outputs, n_read)).astype(dtype)
    return Parameters(tuple(layers), w_out, np.zeros(config.n_outputs, dtype))


class EventIndex(NamedTuple):
    """Synapses of a CSR projection grouped by presynaptic unit (CSC view), for the push kernels.

    ``target``/``weight_csc`` are copies of the projection's ``delay_steps``/``weight`` in this
    order (``target[k] = delay_steps[s] * n_post + out_post[k]``, ``weight_csc[k] = weight[s]``,
    ``s = out_syn[k]``), refreshed by :func:`refresh_event_copies`.
    """

    out_indptr: np.ndarray    # (n_pre + 1,) int32: unit i's outgoing synapses are out_syn[out_indptr[i]:out_indptr[i + 1]]
    out_syn: np.ndarray       # (n_syn,) int32, CSR index of each outgoing synapse (ascending within a unit)
    out_post: np.ndarray      # (n_syn,) int32, postsynaptic neuron of each outgoing synapse
    target: np.ndarray        # (n_syn,) delay_steps[out_syn] * n_post + out_post (K.push_events): uint16 where
                              # (max_delay_steps + 1) * n_post <= 2^16 (fewer bytes per pushed synapse), else int32
    weight_csc: np.ndarray    # (n_syn,) float, copy of weight[out_syn]
    delays_seen: np.ndarray   # (n_syn,) int32, the delay_steps ``target`` was made from (CSR order; -1: none yet)
    transposed: bool          # dense: the CSC order is the transpose of the CSR rows (copies are transposes)


def event_index(proj: Projection, n_pre: int, max_delay_steps: int) -> EventIndex:
    """The CSC view of ``proj`` (``n_pre`` presynaptic units) with fresh copies of its delays and weights
    (integer delays at most ``max_delay_steps``: they are clipped to it)."""
    n_post = proj.indptr.size - 1
    out_syn = np.argsort(proj.pre, kind="stable").astype(_INT)
    out_indptr = np.zeros(n_pre + 1, _INT)
    np.cumsum(np.bincount(proj.pre, minlength=n_pre), out=out_indptr[1:])
    post = np.repeat(np.arange(n_post, dtype=_INT), np.diff(proj.indptr))
    n_targets = (max_delay_steps + 1) * max(n_post, 1)
    if n_targets > 2**31:
        raise OnlineDelayError(f"{n_post} neurons x {max_delay_steps + 1} delay steps overflow the int32 push targets")
    target_dtype = np.uint16 if n_targets <= 2**16 else _INT
    index = EventIndex(out_indptr, out_syn, post[out_syn].astype(_INT), np.empty(out_syn.size, target_dtype),
                       np.empty(out_syn.size, proj.weight.dtype), np.full(out_syn.size, -1, np.int32),
                       bool(n_pre and out_syn.size == n_pre * n_post
                            and np.array_equal(out_syn, np.arange(out_syn.size).reshape(n_post, n_pre).T.ravel())))
    refresh_event_copies(index, proj)
    return index


def refresh_event_copies(index: EventIndex, proj: Projection, weights: bool = True,
                         targets: bool = True) -> None:
    """Copy ``proj``'s weights into ``index`` (CSC order) and its current integer delays as the push's
    targets (where they changed; once without real delays, whose integer delays stay 0), either or both."""
    if targets and (proj.delay.size or index.delays_seen[:1].tolist() == [-1]):
        event_targets(proj.delay_steps, index.out_syn, index.out_post, proj.indptr.size - 1, index.delays_seen,
                      index.target)
    if weights:
        to_csc(index, proj.weight, index.weight_csc)


def to_csc(index: EventIndex, csr: np.ndarray, out: np.ndarray) -> None:
    """out = csr[index.out_syn]: a per-synapse array in CSC order (a transposed copy when dense)."""
    if index.transposed:
        n_pre = index.out_indptr.size - 1
        transpose_copy(np.ascontiguousarray(csr).reshape(-1, n_pre), out.reshape(n_pre, -1))
    else:
        np.take(csr, index.out_syn, out=out)


def add_from_csc(index: EventIndex, csc: np.ndarray, csr: np.ndarray) -> None:
    """csr += csc in CSR order (the inverse of :func:`to_csc`; ``csr`` contiguous)."""
    if index.transposed:
        n_pre = index.out_indptr.size - 1
        transpose_add(np.ascontiguousarray(csc).reshape(n_pre, -1), csr.reshape(-1, n_pre))
    else:
        csr[index.out_syn] += csc


def dense_weights(proj: Projection, n_pre: int) -> np.ndarray:
    """(n_post, n_pre) weight matrix of a projection, 0 where no synapse exists."""
    n_post = proj.indptr.size - 1
    out = np.zeros((n_post, n_pre), proj.weight.dtype)
    rows = np.repeat(np.arange(n_post), np.diff(proj.indptr))
    out[rows, proj.pre] = proj.weight
    return out


def dense_mask(proj: Projection, n_pre: int) -> np.ndarray:
    """(n_post, n_pre) bool: True where a synapse exists."""
    n_post = proj.indptr.size - 1
    out = np.zeros((n_post, n_pre), bool)
    rows = np.repeat(np.arange(n_post), np.diff(proj.indptr))
    out[rows, proj.pre] = True
    return out


def checked_delays(delays, shape: tuple, max_delay_steps: int, which: str) -> np.ndarray:
    """``delays`` as float64 of ``shape`` with values in [0, max_delay_steps], or one clear error."""
    arr = np.asarray(delays, dtype=np.float64)
    if arr.shape != shape:
        raise OnlineDelayError(f"{which} delays have shape {arr.shape}; expected {shape}")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > max_delay_steps)
    if bad.any():
        i = int(np.argmax(bad))
        raise OnlineDelayError(f"{which} delay [{i}] = {float(arr[i])!r} is outside [0, {max_delay_steps}]")
    return arr


def synapse_delays(proj: Projection) -> np.ndarray:
    """(n_syn,) real delay seen by each synapse (0 without delays)."""
    if proj.delay.size == 0:
        return np.zeros(proj.pre.size, proj.weight.dtype)
    return proj.delay[proj.delay_of_syn]


def parameter_counts(params: Parameters) -> dict:
    """Number of learnable weights and delays per projection ("layer<l>.<kind>_weights" ...) and readout.

    A single-layer network keeps the short names (``input_weights``, ``recurrent_delays`` ...)."""
    out = {}
    for l, kind, proj in params.projections():
        if len(params.layers) == 1:
            name = "input" if kind == "feedforward" else "recurrent"
        else:
            name = f"layer{l + 1}.{kind}"
        out[f"{name}_weights"] = int(proj.learned_weight.size)
        out[f"{name}_delays"] = int(proj.delay.size)
    out["readout_weights"] = int(params.w_out.size)
    out["readout_bias"] = int(params.b_out.size)
    return out


def fan_out(params: Parameters, n_inputs: int, n_outputs: int, readout_offsets) -> tuple:
    """Outgoing synapses per presynaptic unit: (n_inputs,) for the input and (sum N,) for the hidden
    neurons, layer after layer (recurrent, to the layer above, and n_outputs where the readout reads
    the layer: ``readout_offsets[l]`` not None)."""
    fan_in = np.bincount(params.layers[0].feedforward.pre, minlength=n_inputs).astype(np.int64)
    hidden = []
    for l, (lp, offset) in enumerate(zip(params.layers, readout_offsets)):
        n = lp.feedforward.indptr.size - 1
        out = np.bincount(lp.recurrent.pre, minlength=n).astype(np.int64)
        if l + 1 < len(params.layers):
            out += np.bincount(params.layers[l + 1].feedforward.pre, minlength=n)
        if offset is not None:
            out += n_outputs
        hidden.append(out)
    return fan_in, np.concatenate(hidden)
