"""Leaky-integrator readout, per-step cross-entropy error, and the exact readout gradients.

y_k^t = kappa y_k^(t-1) + zeta_o sum_j Wo_kj z_j^t + b_k
delta_k^t = w^t (softmax(y^t)_k - onehot_k)                 (w^t: loss weight of the step)
zbar^t = kappa zbar^(t-1) + zeta_o z^t;   g_Wo += delta^t zbar^t
bbar^t = kappa bbar^(t-1) + 1;            g_b  += delta^t bbar^t
Arrays are (units, B): the batch is the innermost axis.  A learner's segment (kernels/sample.py)
records its spikes; its readout and readout gradients are then matrix products (the end of this file).
"""

import math

import numpy as np

from ._jit import jit
from .surrogate import exp_inline as _exp


@jit
def readout_step(z, w_out, bias, decay, gain, y):
    """y[:, b] = decay * y[:, b] + gain * w_out @ z[:, b] + bias, event-driven over spiking z.

    z : (n_hidden, B) float; w_out : (n_out, n_hidden); bias : (n_out,); y : (n_out, B) in place.
    """
    readout_columns(z, w_out, bias, decay, gain, y, 0, z.shape[1])


@jit
def readout_columns(z, w_out, bias, decay, gain, y, b0, b1):
    """:func:`readout_step` on the batch columns b0 .. b1 - 1 only (the others untouched).

    Per y[k, b]: the decay and bias, then the spiking units' terms in ascending j (the segment
    kernels call this too, so both paths sum in one order).  Silent units (most, at a few per cent
    hidden rate) are skipped by one vectorised test over the columns, not one branch per column."""
    n_hidden = z.shape[0]
    n_out = w_out.shape[0]
    if b1 - b0 == 1:                      # one column: no inner loops of length 1 (~4 ns per unit each)
        for k in range(n_out):
            y[k, b0] = decay * y[k, b0] + bias[k]
        for j in range(n_hidden):
            zj = z[j, b0]
            if zj != 0.0:
                for k in range(n_out):
                    y[k, b0] += gain * w_out[k, j] * zj
        return
    for k in range(n_out):
        for b in range(b0, b1):
            y[k, b] = decay * y[k, b] + bias[k]
    for j in range(n_hidden):
        active = False
        for b in range(b0, b1):                   # branch-free: does unit j spike in any column?
            active |= z[j, b] != 0.0
        if not active:
            continue
        for b in range(b0, b1):
            zj = z[j, b]
            if zj != 0.0:
                for k in range(n_out):
                    y[k, b] += gain * w_out[k, j] * zj


@jit
def readout_listed(z, w_t, bias, decay, gain, y, b0, b1, listed, acc):
    """:func:`readout_columns` with the weights transposed, ``w_t`` (n_hidden, n_out) = w_out.T: per
    column the spiking units are listed branch-free, then each adds its contiguous row of ``w_t``
    (vectorised over the outputs) into ``acc`` (n_out,), y's float type.  The same terms in the same
    order, so the same floats; at a hidden rate of ~30 % the branch per unit of readout_columns was
    mispredicted often (700 -> 256, B = 1, 100 steps: 0.33-0.50 -> 0.09 ms).  listed : (n_hidden,) int64."""
    n_hidden, n_out = w_t.shape
    for b in range(b0, b1):
        m = 0
        for j in range(n_hidden):
            listed[m] = j
            m += z[j, b] != 0.0
        for k in range(n_out):
            acc[k] = decay * y[k, b] + bias[k]
        for s in range(m):
            j = listed[s]
            zj = z[j, b]
            for k in range(n_out):
                acc[k] += gain * w_t[j, k] * zj
        for k in range(n_out):
            y[k, b] = acc[k]


@jit
def readout_error(y, labels, loss_weight, probs, delta):
    """Softmax probabilities and the weighted error; returns the weighted cross-entropy sum.

    y : (n_out, B); labels : (B,) int64, a label < 0 means no target (delta = 0)
    loss_weight : float, w^t; probs, delta : (n_out, B) out
    """
    return readout_error_columns(y, labels, loss_weight, probs, delta, 0, y.shape[1])


@jit
def readout_error_columns(y, labels, loss_weight, probs, delta, b0, b1):
    """:func:`readout_error` on the batch columns b0 .. b1 - 1 only (the others untouched); their loss.

    The exponentials are surrogate.exp (plain arithmetic, to about one ulp; NaN stays NaN) in loops
    over the columns, which vectorise (a libm exp per output and column: a learner's per-step work
    1.43 against 1.02 ms, 700 -> 256 -> 20, B = 32, 100 steps).  Each column's sums run over k
    in order, as one column alone (``b1 - b0 == 1``) computes them.
    """
    n_out = y.shape[0]
    if b1 - b0 == 1:
        return _error_column(y, labels, loss_weight, probs, delta, b0)
    top = np.empty(b1 - b0, y.dtype)
    total = np.zeros(b1 - b0)
    for b in range(b0, b1):
        top[b - b0] = y[0, b]
    for k in range(1, n_out):
        for b in range(b0, b1):
            v = y[k, b]
            top[b - b0] = v if v > top[b - b0] else top[b - b0]
    for k in range(n_out):
        for b in range(b0, b1):
            d = y[k, b] - top[b - b0]
            probs[k, b] = _exp(d) if d == d else d
            total[b - b0] += probs[k, b]
    for k in range(n_out):
        for b in range(b0, b1):
            probs[k, b] /= total[b - b0]
    for k in range(n_out):
        for b in range(b0, b1):
            label = labels[b]
            target = 1.0 if k == label else 0.0
            delta[k, b] = loss_weight * (probs[k, b] - target) if label >= 0 else 0.0
    loss = 0.0
    for b in range(b0, b1):
        label = labels[b]
        if label >= 0:
            loss -= loss_weight * (y[label, b] - top[b - b0] - math.log(total[b - b0]))
    return loss


@jit
def _error_column(y, labels, loss_weight, probs, delta, b):
    """:func:`readout_error_columns` of the one column b; its loss."""
    n_out = y.shape[0]
    top = y[0, b]
    for k in range(1, n_out):
        top = y[k, b] if y[k, b] > top else top
    total = 0.0
    for k in range(n_out):
        d = y[k, b] - top
        probs[k, b] = _exp(d) if d == d else d
        total += probs[k, b]
    for k in range(n_out):
        probs[k, b] /= total
    label = labels[b]
    for k in range(n_out):
        target = 1.0 if k == label else 0.0
        delta[k, b] = loss_weight * (probs[k, b] - target) if label >= 0 else 0.0
    if label < 0:
        return 0.0
    return -loss_weight * (y[label, b] - top - math.log(total))


@jit
def readout_traces(z, delta, decay, gain, zbar, bbar, grad_w_out, grad_bias, zbar_t):
    """Filtered presynaptic traces of the readout and its gradient accumulation.

    z : (n_hidden, B); delta : (n_out, B); zbar : (n_hidden, B) and bbar : (B,) in place;
    grad_w_out : (n_out, n_hidden) and grad_bias : (n_out,) accumulated (summed over b);
    zbar_t : (B, n_hidden) scratch, overwritten with zbar transposed (the hidden axis innermost in
    the gradient loop, which vectorises over hidden units).
    """
    n_hidden, n_batch = z.shape
    n_out = delta.shape[0]
    for b in range(n_batch):
        bbar[b] = decay * bbar[b] + 1.0
    for j in range(n_hidden):
        for b in range(n_batch):
            value = decay * zbar[j, b] + gain * z[j, b]
            zbar[j, b] = value
            zbar_t[b, j] = value
    for k in range(n_out):
        acc_b = 0.0
        for b in range(n_batch):
            acc_b += delta[k, b] * bbar[b]
        grad_bias[k] += acc_b
        for b in range(n_batch):
            d = delta[k, b]
            for j in range(n_hidden):
                grad_w_out[k, j] += d * zbar_t[b, j]


# -- a segment's readout (kernels/sample.py records its spikes) --------------------------------------

def readout_segment(w_out, bias, decay, gain, z_rec, y, y_rec):
    """The readout over a segment of n steps from its recorded spikes::

        y^u = kappa y^(u-1) + b + g Wo z^u,      u = 0 .. n - 1, from y (the readout before the segment)

    w_out : (n_out, N); bias : (n_out,); decay : kappa; gain : g; z_rec : (n, N, B) spikes;
    y : (n_out, B) in place; y_rec : (n, n_out, B) out, y after each step.  The products ``Wo z^u`` of
    all the steps are one batched matrix product (BLAS: the caller sets its threads), written into
    y_rec and filtered there: 700 -> 256 -> 20, B = 32, 100 steps, 29 % hidden rate, 1 thread, the
    training forward alone in a slow phase of the VM 7.9 -> 2.5 + 0.54 ms against summing per hidden
    spike (each spike's terms a chain of dependent adds).  Its floats
    differ from stepping's by the order of the sum over j, so the learner uses it; inference sums as
    stepping does (kernels/sample.forward_segment, :func:`readout_listed`).
    """
    n, n_post, n_batch = z_rec.shape
    n_out = w_out.shape[0]
    with np.errstate(all="ignore"):           # diverged weights: the trainer tells, stepping would not warn
        if n_batch == 1:                      # (n, N) @ (N, n_out): one product, not n products with a column
            np.matmul(z_rec.reshape(n, n_post), w_out.T, out=y_rec.reshape(n, n_out))
        else:
            np.matmul(w_out, z_rec, out=y_rec)
    _filter_readout(y_rec, bias, decay, gain, y)


@jit
def _filter_readout(y_rec, bias, decay, gain, y):
    """y_rec[u] <- y = decay y + bias + gain y_rec[u] for u = 0 .. n - 1 (y_rec holds the products Wo z^u)."""
    n, n_out, n_batch = y_rec.shape
    for u in range(n):
        for k in range(n_out):
            for b in range(n_batch):
                y[k, b] = decay * y[k, b] + bias[k] + gain * y_rec[u, k, b]
                y_rec[u, k, b] = y[k, b]


def readout_gradients(delta_rec, z_rec, zbar0, bbar0, decay_out, gain_out, carry, prod, grad_w, grad_b):
    """The readout gradients of a segment of n steps::

        grad_w += sum_u delta^u zbar^u^T = kappa D^0 zbar0^T + g sum_v D^v z^v^T
        grad_b += sum_u delta^u bbar^u   = kappa D^0 bbar0 + sum_v D^v,        D^v = sum_(v <= u < n) kappa^(u - v) delta^u

    with zbar^u = kappa zbar^(u-1) + g z^u, bbar^u = kappa bbar^(u-1) + 1 from zbar0, bbar0 (the traces
    before the segment), kappa = decay_out, g = gain_out: the filter moved onto delta (n_out per step),
    so no (n, N, B) trace record is written, and ``sum_v D^v z^v^T`` is a matrix product over the
    steps and the batch (BLAS: the caller sets its threads; 700 -> 256 -> 20, B = 32, 100 steps, 1
    thread: 1.1 against 3.6-4.3 ms summed per hidden spike).
    delta_rec : (n, n_out, B); z_rec : (n, N, B) spikes; zbar0 : (N, B) (or (0, B): zero, as at a sample's
    first segment); bbar0 : (B,);
    carry : (n, B, n_out) scratch (g D^v); prod : (n, N, n_out) scratch (B > 1 only);
    grad_w : (n_out, N), grad_b : (n_out,) accumulated.
    """
    n, n_post, n_batch = z_rec.shape
    n_out = delta_rec.shape[1]
    _readout_carries(delta_rec, zbar0, bbar0, decay_out, gain_out, carry, grad_w, grad_b)
    with np.errstate(all="ignore"):           # as readout_segment
        if n_batch == 1:                      # (N, n) @ (n, n_out): one product
            grad_w += (z_rec.reshape(n, n_post).T @ carry.reshape(n, n_out)).T
            return
        np.matmul(z_rec, carry, out=prod)
        grad_w += prod.sum(axis=0).T


@jit
def _readout_carries(delta_rec, zbar0, bbar0, decay_out, gain_out, carry, grad_w, grad_b):
    """carry[v, b] = g D^v[:, b] (:func:`readout_gradients`), backward over the n steps; grad_b += the sum
    of D^v and kappa D^0 bbar0; grad_w += kappa D^0 zbar0^T (the traces before the segment)."""
    n, n_out, n_batch = delta_rec.shape
    n_post = zbar0.shape[0]
    d, total = np.zeros((n_out, n_batch)), np.zeros((n_out, n_batch))      # D^v and its sum, float64
    for u in range(n - 1, -1, -1):
        for k in range(n_out):
            for b in range(n_batch):
                d[k, b] = delta_rec[u, k, b] + decay_out * d[k, b]
                total[k, b] += d[k, b]
        for b in range(n_batch):
            for k in range(n_out):
                carry[u, b, k] = gain_out * d[k, b]
    for b in range(n_batch):
        for k in range(n_out):
            grad_b[k] += total[k, b] + decay_out * d[k, b] * bbar0[b]
            for j in range(n_post):           # none when zbar0 is (0, B)
                grad_w[k, j] += decay_out * d[k, b] * zbar0[j, b]
