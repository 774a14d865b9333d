"""Leaky-integrator readout, per-step cross-entropy error, and the exact readout gradients.

y_k^t = kappa y_k^(t-1) + zeta_o sum_j Wo_kj z_j^t + b_k
delta_k^t = w^t (softmax(y^t)_k - onehot_k)                 (w^t: loss weight of the step)
zbar^t = kappa zbar^(t-1) + zeta_o z^t;   g_Wo += delta^t zbar^t
bbar^t = kappa bbar^(t-1) + 1;            g_b  += delta^t bbar^t
Arrays are (units, B): the batch is the innermost axis.
"""

import math

from ._jit import jit


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
    """:func:`readout_error` on the batch columns b0 .. b1 - 1 only (the others untouched); their loss."""
    n_out = y.shape[0]
    loss = 0.0
    for b in range(b0, b1):
        top = y[0, b]
        for k in range(1, n_out):
            if y[k, b] > top:
                top = y[k, b]
        total = 0.0
        for k in range(n_out):
            e = math.exp(y[k, b] - top)
            probs[k, b] = e
            total += e
        for k in range(n_out):
            probs[k, b] /= total
        label = labels[b]
        for k in range(n_out):
            target = 1.0 if k == label else 0.0
            delta[k, b] = loss_weight * (probs[k, b] - target) if label >= 0 else 0.0
        if label >= 0:
            loss -= loss_weight * (y[label, b] - top - math.log(total))
    return loss


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
