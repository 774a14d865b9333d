"""Low-bit networks: weight and delay quantizers, their straight-through gradients, the bit budget.

A quantized projection learns real-valued *shadow* arrays (``Projection.weight_shadow``, and
``delay_shadow`` / ``delay_offset`` for quantized delays); the arrays the kernels read
(``weight``, a conv's ``shared_weight``, ``delay``) are derived from them by
:func:`quantize_projection` at initialisation, after every optimizer step and on load.  Gradients
pass straight through the quantizers (STE): dE/dW_shadow = dE/dWq, dE/dd_shadow = dE/dd_hat.

Weights (per projection, over its learned weights: the synapses, or a conv's k taps):

* k-bit (``weight_bits`` 8, 4, 2; DoReFa-style uniform grid): ``s = max|W|`` of the projection's
  shadow weights, recomputed at every update; ``W01 = (W/s + 1)/2``;
  ``q = round((2^m - 1) W01) / (2^m - 1)``; ``Wq = s (2q - 1)``.  Integer code ``round((2^m - 1) W01)``
  in 0 .. 2^m - 1; ``weight_scale = (s, s)``.
* ternary: ``delta = 0.7 mean|W|`` (recomputed at every update, so the threshold follows the shadow
  weights during online learning); ``Wq = +alpha`` where ``W > delta``, ``-beta`` where
  ``W < -delta``, else 0; code 1, -1, 0.  Fixed scales: ``alpha = beta = mean|W|`` over
  ``|W| > delta`` (TWN), recomputed at every update.  Learned scales start there and follow
  dE/dalpha = sum_{W > delta} dE/dWq, dE/dbeta = -sum_{W < -delta} dE/dWq.

Delays (per projection, step ``Delta`` and offset ``delta_d`` in steps)::

    d_hat = floor((d - delta_d) / Delta) Delta + delta_d

with the grid index clipped so that ``d_hat`` is the nearest grid value inside [0, max_delay_steps]
(the same as clipping d_hat to [0, max] when 0 and max lie on the grid; this way every delay is a
grid value and the delay bits are exact).  A learned offset gets dE/ddelta_d = sum dE/dd_hat: the
floor's output is held constant (with a full straight-through floor, d_hat = d and the offset
would have no gradient at all).

Delay L2 (``delay_l2`` = lambda per layer): ``2 lambda d`` (the shadow delays when quantized) is added
to the delay gradient at every optimizer step (the gradient of lambda sum d^2); not part of the
per-sample gradients.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ProjectionSpec

TERNARY_THRESHOLD = 0.7
TERNARY_BITS = math.log2(3)       # 1.58 bits per ternary weight
FLOAT_BITS = 32


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------
def kbit_codes(w: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """DoReFa codes of ``w`` (any shape, float): (codes in 0 .. 2^bits - 1 as uint8, scale s = max|w|)."""
    levels = (1 << bits) - 1
    s = float(np.abs(w).max()) if w.size else 0.0
    w01 = (w / w.dtype.type(s) + 1) / 2 if s > 0 else np.full_like(w, 0.5)
    return np.rint(levels * w01).astype(np.uint8), s


def kbit_weights(codes: np.ndarray, s: float, bits: int, dtype) -> np.ndarray:
    """Wq = s (2 q - 1), q = code / (2^bits - 1)."""
    levels = (1 << bits) - 1
    q = codes.astype(dtype) / dtype.type(levels)
    return dtype.type(s) * (2 * q - 1)


def ternary_threshold(w: np.ndarray) -> float:
    """delta = 0.7 mean|w|."""
    return TERNARY_THRESHOLD * float(np.abs(w).mean()) if w.size else 0.0


def ternary_codes(w: np.ndarray) -> np.ndarray:
    """int8 codes: 1 where w > delta, -1 where w < -delta, else 0."""
    delta = w.dtype.type(ternary_threshold(w))
    return ((w > delta).astype(np.int8) - (w < -delta).astype(np.int8))


def ternary_fixed_scale(w: np.ndarray) -> float:
    """TWN scale: mean|w| over |w| > delta (0 when no weight passes the threshold)."""
    big = np.abs(w)[ternary_codes(w) != 0]
    return float(big.mean()) if big.size else 0.0


def ternary_weights(codes: np.ndarray, alpha: float, beta: float, dtype) -> np.ndarray:
    """Wq = +alpha (code 1), -beta (code -1), 0."""
    out = np.zeros(codes.shape, dtype)
    out[codes > 0] = alpha
    out[codes < 0] = -beta
    return out


def weight_codes(spec: ProjectionSpec, shadow: np.ndarray) -> np.ndarray:
    """The integer code of every learned weight (int8 ternary -1/0/1, uint8 k-bit 0 .. 2^m - 1)."""
    if spec.weight_bits == "ternary":
        return ternary_codes(shadow)
    return kbit_codes(shadow, int(spec.weight_bits))[0]


def quantized_weights(spec: ProjectionSpec, shadow: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Wq of the shadow weights; ``scale`` (2,) is written for fixed scales and read for learned ones."""
    dtype = shadow.dtype
    if spec.weight_bits == "ternary":
        if spec.ternary_scales == "fixed":
            scale[:] = ternary_fixed_scale(shadow)
        return ternary_weights(ternary_codes(shadow), scale[0], scale[1], dtype)
    codes, s = kbit_codes(shadow, int(spec.weight_bits))
    scale[:] = s
    return kbit_weights(codes, s, int(spec.weight_bits), dtype)


def scale_gradients(shadow: np.ndarray, grad: np.ndarray, out: np.ndarray) -> None:
    """Learned ternary scales: out = (sum_{W > delta} g, -sum_{W < -delta} g) with g = dE/dWq."""
    codes = ternary_codes(shadow)
    out[0] = grad[codes > 0].sum()
    out[1] = -grad[codes < 0].sum()


# ------------------------------------------------------------------------------------------------
# delays
# ------------------------------------------------------------------------------------------------
def delay_grid(offset: float, step: float, max_delay_steps: int) -> tuple[int, int]:
    """(k_min, k_max): the grid values k step + offset inside [0, max_delay_steps]."""
    return math.ceil(-offset / step), math.floor((max_delay_steps - offset) / step)


def delay_levels(offset: float, step: float, max_delay_steps: int) -> int:
    """Number of grid values in [0, max_delay_steps]."""
    k_min, k_max = delay_grid(offset, step, max_delay_steps)
    return max(1, k_max - k_min + 1)


def quantized_delays(shadow: np.ndarray, offset: float, step: float, max_delay_steps: int) -> np.ndarray:
    """d_hat = floor((d - offset)/step) step + offset, on the grid inside [0, max_delay_steps]."""
    k_min, k_max = delay_grid(offset, step, max_delay_steps)
    k = np.clip(np.floor((shadow.astype(np.float64) - offset) / step), k_min, k_max)
    return np.clip(k * step + offset, 0.0, max_delay_steps).astype(shadow.dtype)


# ------------------------------------------------------------------------------------------------
# projections
# ------------------------------------------------------------------------------------------------
def init_quantizers(proj, spec: ProjectionSpec):
    """A copy of the float projection ``proj`` with shadow arrays as ``spec`` asks (not yet quantized)."""
    dtype = proj.weight.dtype
    changes = {}
    if spec.quantized_weights:
        changes["weight_shadow"] = proj.learned_weight.copy()
        scale = ternary_fixed_scale(changes["weight_shadow"]) if spec.weight_bits == "ternary" else 0.0
        changes["weight_scale"] = np.full(2, scale, dtype)
    if spec.quantized_delays:
        changes["delay_shadow"] = proj.delay.copy()
        changes["delay_offset"] = np.full(1, spec.delay_offset, dtype)
    return proj._replace(**changes)


def quantize_projection(proj, spec: ProjectionSpec | None, max_delay_steps: int) -> int:
    """Recompute the effective arrays of ``proj`` from its shadows (in place); a conv's per-synapse
    weights are re-expanded from its taps.  Shadow delays are clipped to [0, max_delay_steps]
    first; returns how many were clipped.  A float projection is only re-expanded."""
    clipped = 0
    if spec is not None and proj.weight_scale.size:
        target = proj.shared_weight if proj.weight_of_syn.size else proj.weight
        target[:] = quantized_weights(spec, proj.weight_shadow, proj.weight_scale)
    if spec is not None and proj.delay_offset.size:
        d = proj.delay_shadow
        clipped = int(np.count_nonzero((d < 0) | (d > max_delay_steps)))
        np.clip(d, 0, max_delay_steps, out=d)
        proj.delay[:] = quantized_delays(d, float(proj.delay_offset[0]), spec.delay_step, max_delay_steps)
    proj.expand_shared()
    return clipped


def sync_quantizer_grads(proj, spec: ProjectionSpec | None, grads) -> None:
    """Gradients of the learned scales and offset from dE/dWq, dE/dd_hat (``grads`` a ProjectionGradients);
    zero for fixed ones.  The shadow arrays' gradients are dE/dWq and dE/dd_hat themselves (STE)."""
    if grads.weight_scale.size:
        if spec.ternary_scales == "learned" and spec.weight_bits == "ternary":
            scale_gradients(proj.weight_shadow, grads.weight, grads.weight_scale)
        else:
            grads.weight_scale[:] = 0
    if grads.delay_offset.size:
        grads.delay_offset[0] = grads.delay.sum() if spec.delay_offset_mode == "learned" else 0.0


def add_delay_l2(proj, spec: ProjectionSpec | None, grads) -> None:
    """grad_d += 2 lambda d (the shadow delays when quantized): the delay penalty lambda sum d^2."""
    if spec is not None and spec.delay_l2 > 0 and grads.delay.size:
        grads.delay[:] += 2 * spec.delay_l2 * proj.learned_delay


# ------------------------------------------------------------------------------------------------
# the bit budget
# ------------------------------------------------------------------------------------------------
def projection_bits(proj, spec: ProjectionSpec | None, max_delay_steps: int) -> dict:
    """Bits of one projection's weights and delays at its precision, and at 32-bit float."""
    n_w = int(proj.learned_weight.size)
    n_d = int(proj.delay.size)
    bits = "32" if spec is None else spec.weight_bits
    if bits == "ternary":
        weight_bits = TERNARY_BITS * n_w + 2 * FLOAT_BITS
    elif bits == "32":
        weight_bits = FLOAT_BITS * n_w
    else:
        weight_bits = int(bits) * n_w + FLOAT_BITS
    if n_d and proj.delay_offset.size:
        per_delay = math.ceil(math.log2(delay_levels(float(proj.delay_offset[0]), spec.delay_step,
                                                      max_delay_steps)))
        delay_bits = per_delay * n_d + FLOAT_BITS      # plus the offset
    else:
        per_delay, delay_bits = (FLOAT_BITS if n_d else 0), FLOAT_BITS * n_d
    return {"weight_precision": bits, "weights": n_w, "weight_bits": weight_bits, "delays": n_d,
            "bits_per_delay": per_delay, "delay_bits": delay_bits,
            "float_bits": FLOAT_BITS * (n_w + n_d)}


def footprint_bits(net) -> dict:
    """The memory of ``net`` in bits: per projection ("layer<l>.<kind>"), the readout (32-bit float)
    and the totals at the quantized precision and at 32-bit float."""
    out = {"projections": {}}
    total = float_total = 0.0
    for l, kind, proj in net.params.projections():
        if proj.weight.size == 0:
            continue
        spec = getattr(net.layer_specs[l], kind)
        entry = projection_bits(proj, spec, net.config.max_delay_steps)
        out["projections"][f"layer{l + 1}.{kind}"] = entry
        total += entry["weight_bits"] + entry["delay_bits"]
        float_total += entry["float_bits"]
    readout = FLOAT_BITS * (net.params.w_out.size + net.params.b_out.size)
    out["readout_bits"] = readout
    out["weight_bits"] = sum(e["weight_bits"] for e in out["projections"].values())
    out["delay_bits"] = sum(e["delay_bits"] for e in out["projections"].values())
    out["total_bits"] = total + readout
    out["float_total_bits"] = float_total + readout
    return out


def format_footprint(fp: dict) -> str:
    """One line per projection and a total line (bits and kbit), for ``info`` and the training summary."""
    lines = []
    for name, e in fp["projections"].items():
        lines.append(f"  {name}: {e['weights']} weights x {e['weight_precision']} -> {e['weight_bits']:.0f} bits; "
                     f"{e['delays']} delays x {e['bits_per_delay']} bits -> {e['delay_bits']:.0f} bits")
    lines.append(f"  readout: {fp['readout_bits']} bits (float32)")
    lines.append(f"footprint: {fp['total_bits']:.0f} bits ({fp['total_bits'] / 1e6:.4f} Mbit) at the quantized "
                 f"precision; {fp['float_total_bits']:.0f} bits ({fp['float_total_bits'] / 1e6:.4f} Mbit) at 32-bit float")
    return "\n".join(lines)
