"""Slow, obviously-correct float64 NumPy references, written independently of the kernels.

* Kernel references: one function per kernel, plain loops over dense or explicit data.
* Model reference: a full-history forward pass of the network (dense matrices, no rings) and a
  hand-derived backpropagation through time of the same relaxed model:
  - spikes z = H(v - theta) with pseudo-derivative psi;
  - delays act on the forward pass as integer shifts round(D); for the gradient the delayed train
    is the Gaussian relaxation G(D)^t = sum_m x^(t-m) g(m - D) over the taps m = c-K..c+K,
    c = floor(D + 1/2) (straight-through: dI/dD = W dG/dD);
  - the reset (and the recurrent spikes) can be detached (treated as constants) or not.
Nothing here imports onlinedelay.kernels.
"""

from __future__ import annotations

import math

import numpy as np


# ------------------------------------------------------------------------------------------------
# kernel references
# ------------------------------------------------------------------------------------------------
def gauss_deriv(u, sigma):
    """(u / sigma^2) g_sigma(u), g the unit-area Gaussian."""
    return u / sigma**2 * np.exp(-u**2 / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)


def gauss(u, sigma):
    return np.exp(-u**2 / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)


def centre(delay):
    return int(math.floor(delay + 0.5))


def smoothed_train(x_seq, tau, delay, half_width, sigma):
    """G(D)^tau for one presynaptic train x_seq (T,), zero outside [0, T)."""
    c = centre(delay)
    total = 0.0
    for m in range(c - half_width, c + half_width + 1):
        s = tau - m
        if 0 <= s < len(x_seq):
            total += x_seq[s] * gauss(m - delay, sigma)
    return total


def xi_train(x_seq, tau, delay, half_width, sigma):
    """dG/dD at tau for one presynaptic train (the Gaussian delay derivative)."""
    c = centre(delay)
    total = 0.0
    for m in range(c - half_width, c + half_width + 1):
        s = tau - m
        if 0 <= s < len(x_seq):
            total += x_seq[s] * gauss_deriv(m - delay, sigma)
    return total


def ref_delayed_current(x_hist, t, synapses, n_post):
    """x_hist: (B, t+1, n_pre) full history; synapses: list of (j, i, w, d)."""
    n_batch = x_hist.shape[0]
    out = np.zeros((n_batch, n_post))
    for b in range(n_batch):
        for j, i, w, d in synapses:
            if t - d >= 0:
                out[b, j] += w * x_hist[b, t - d, i]
    return out


def ref_push_events(x_t, t, synapses, n_slots, n_post):
    """Future-current increments of pushing step t: (n_slots, B, n_post), slot (t + d) % n_slots.

    x_t: (B, n_pre) activity of step t; synapses: list of (j, i, w, d)."""
    n_batch = x_t.shape[0]
    out = np.zeros((n_slots, n_batch, n_post))
    for b in range(n_batch):
        for j, i, w, d in synapses:
            out[(t + d) % n_slots, b, j] += w * x_t[b, i]
    return out


def ref_pulled_current(x_hist, t, synapses, pulled_steps, n_post):
    """Like ref_delayed_current, counting only source steps t - d in ``pulled_steps`` (a set)."""
    n_batch = x_hist.shape[0]
    out = np.zeros((n_batch, n_post))
    for b in range(n_batch):
        for j, i, w, d in synapses:
            if t - d >= 0 and t - d in pulled_steps:
                out[b, j] += w * x_hist[b, t - d, i]
    return out


def ref_lif(current, v, z_prev, alpha, zeta, theta, hard):
    if hard:
        a = alpha * (1.0 - z_prev)
        v_new = a * v + zeta * current
    else:
        a = np.full_like(v, alpha)
        v_new = alpha * v + zeta * current - theta * z_prev
    return v_new, (v_new >= theta).astype(float), a


def ref_psi(v, gamma, theta):
    return gamma / theta * np.maximum(0.0, 1.0 - np.abs(v - theta) / theta)


def ref_softmax(y):
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_adam(param, grad, m, v, lr, b1, b2, eps, step):
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    return param - lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps), m, v


# ------------------------------------------------------------------------------------------------
# model reference
# ------------------------------------------------------------------------------------------------
class DenseLayer:
    """Dense float64 copy of one hidden layer: W, D, M (N, n_pre) weights, real delays per synapse,
    mask; R, DR, MR the same for the recurrent projection (R None without recurrence); tap (N, n_pre)
    the conv tap of each recurrent synapse (-1 where none); dynamics scalars."""

    def __init__(self, net, l):
        spec, lp = net.layer_specs[l], net.params.layers[l]
        self.alpha, self.zeta, self.theta, self.hard = spec.decay_mem, spec.input_gain, spec.threshold, spec.reset == "hard"
        self.W, self.D, self.M, self.mode = _dense(lp.feedforward, spec.n_neurons, spec.n_pre, spec.feedforward.delays)
        self.R = self.tap = None
        if spec.recurrent is not None:
            self.R, self.DR, self.MR, self.mode_rec = _dense(lp.recurrent, spec.n_neurons, spec.n_neurons,
                                                             spec.recurrent.delays)
            if lp.recurrent.weight_of_syn.size:
                self.tap = -np.ones((spec.n_neurons, spec.n_neurons), int)
                for j in range(spec.n_neurons):
                    for s in range(lp.recurrent.indptr[j], lp.recurrent.indptr[j + 1]):
                        self.tap[j, lp.recurrent.pre[s]] = lp.recurrent.weight_of_syn[s]
                self.n_taps = lp.recurrent.shared_weight.size


def _dense(proj, n_post, n_pre, mode):
    W = np.zeros((n_post, n_pre))
    D = np.zeros((n_post, n_pre))
    M = np.zeros((n_post, n_pre), bool)
    for j in range(n_post):
        for s in range(proj.indptr[j], proj.indptr[j + 1]):
            i = proj.pre[s]
            W[j, i] = proj.weight[s]
            M[j, i] = True
            if mode == "synaptic":
                D[j, i] = proj.delay[s]
            elif mode == "axonal":
                D[j, i] = proj.delay[i]
    return W, D, M, mode


class DenseModel:
    """Dense float64 copy of a network's parameters (0 where a synapse is absent).

    Attributes: layers (DenseLayer each); Wo (n_out, n_read), b (n_out,); cols: the readout
    columns of each layer (None where the readout does not read it); kappa, zeta_o, gamma.
    Single-layer short names: W, D, M, mode_in, R, DR, MR, mode_rec (layer 0).
    """

    def __init__(self, net):
        c = net.config
        self.cfg = c
        self.kappa, self.zeta_o, self.gamma = c.decay_out, c.readout_gain, c.surrogate_gamma
        self.layers = [DenseLayer(net, l) for l in range(len(net.layer_specs))]
        sizes = [spec.n_neurons for spec in net.layer_specs]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        if c.readout == "all":
            self.cols = [slice(offsets[l], offsets[l + 1]) for l in range(len(sizes))]
        else:
            self.cols = [None] * (len(sizes) - 1) + [slice(0, sizes[-1])]
        self.Wo = net.params.w_out.astype(float).copy()
        self.b = net.params.b_out.astype(float).copy()
        first = self.layers[0]
        self.W, self.D, self.M, self.mode_in, self.R = first.W, first.D, first.M, first.mode, first.R
        if first.R is not None:
            self.DR, self.MR, self.mode_rec = first.DR, first.MR, first.mode_rec


def ref_forward(model: DenseModel, x):
    """Full-history forward pass.  x: (T, B, n_in).  Returns dict of (T, B, .) arrays; per-layer
    records in "layers" (v, z, a each), the last layer's under "v", "z", "a"."""
    T, B, _ = x.shape
    n_out = model.Wo.shape[0]
    records = []
    below = x                                  # the feedforward input train of the layer, (T, B, n_pre)
    for L in model.layers:
        N = L.W.shape[0]
        dint = np.floor(L.D + 0.5).astype(int)
        drint = np.floor(L.DR + 0.5).astype(int) if L.R is not None else None
        v = np.zeros((T, B, N)); z = np.zeros((T, B, N)); a = np.zeros((T, B, N))
        v_prev = np.zeros((B, N)); z_prev = np.zeros((B, N))
        for t in range(T):
            cur = np.zeros((B, N))
            for j in range(N):
                for i in np.nonzero(L.M[j])[0]:
                    s = t - dint[j, i]
                    if s >= 0:
                        cur[:, j] += L.W[j, i] * below[s, :, i]
                if L.R is not None:
                    for m in np.nonzero(L.MR[j])[0]:
                        s = t - 1 - drint[j, m]
                        if s >= 0:
                            cur[:, j] += L.R[j, m] * z[s, :, m]
            v[t], z[t], a[t] = ref_lif(cur, v_prev, z_prev, L.alpha, L.zeta, L.theta, L.hard)
            v_prev, z_prev = v[t], z[t]
        records.append({"v": v, "z": z, "a": a})
        below = z
    y = np.zeros((T, B, n_out))
    y_prev = np.zeros((B, n_out))
    for t in range(T):
        drive = sum(records[l]["z"][t] @ model.Wo[:, cols].T for l, cols in enumerate(model.cols) if cols is not None)
        y[t] = model.kappa * y_prev + model.zeta_o * drive + model.b
        y_prev = y[t]
    last = records[-1]
    return {"v": last["v"], "z": last["z"], "a": last["a"], "y": y, "layers": records}


def ref_loss_and_delta(y, labels, weights):
    """Per-step CE weighted by weights (T,); delta = dE/dy^t (T, B, n_out)."""
    p = ref_softmax(y)
    onehot = np.zeros_like(p)
    onehot[:, np.arange(len(labels)), labels] = 1.0
    delta = weights[:, None, None] * (p - onehot)
    loss = -(weights[:, None] * np.log(p[:, np.arange(len(labels)), labels])).sum()
    return loss, delta


def ref_bptt(model: DenseModel, x, labels, weights, half_width, sigma, detach_reset=True, recurrent_end_step=True):
    """Gradients of E = sum_t w^t CE(softmax(y^t), label) by backpropagation through time.

    Recurrent spikes and the spikes a layer receives from the layer below are treated as
    constants (e-prop's approximation); the reset is a constant when ``detach_reset``.  The
    recurrent train of a sample of T steps has T + 1 steps: z^(t-1) for t = 0..T (its step T,
    z^(T-1), is read by the Gaussian relaxation of delays below its half-width; without
    ``recurrent_end_step`` it is left out, the old boundary).  Returns dict
    with "layers" (per layer: w_in, d_in, w_rec, d_rec -- dense, per synapse or per presynaptic
    unit for axonal, per tap for conv), w_out, b_out, the forward record; layer 0's gradients are
    also at the top level.
    """
    T, B, n_in = x.shape
    fw = ref_forward(model, x)
    y = fw["y"]
    _, delta = ref_loss_and_delta(y, labels, weights)

    # adjoint of the readout: dE/dy^t including its effect through later steps
    dy = np.zeros_like(y)
    acc = np.zeros_like(y[0])
    for t in range(T - 1, -1, -1):
        acc = delta[t] + model.kappa * acc
        dy[t] = acc

    out = {"forward": fw, "delta": delta, "layers": []}
    z_read = np.concatenate([fw["layers"][l]["z"] for l, cols in enumerate(model.cols) if cols is not None], axis=2)
    out["w_out"] = model.zeta_o * np.einsum("tbk,tbj->kj", dy, z_read)
    out["b_out"] = dy.sum(axis=(0, 1))
    below = x
    for L, cols, rec in zip(model.layers, model.cols, fw["layers"]):
        v, z, a = rec["v"], rec["z"], rec["a"]
        N = L.W.shape[0]
        psi = ref_psi(v, model.gamma, L.theta)
        dv = np.zeros_like(v)
        dv_next = np.zeros((B, N))
        for t in range(T - 1, -1, -1):
            dz = model.zeta_o * dy[t] @ model.Wo[:, cols] if cols is not None else np.zeros((B, N))
            if t + 1 < T:
                if not detach_reset:
                    if L.hard:
                        dz = dz + dv_next * (-L.alpha * v[t])
                    else:
                        dz = dz + dv_next * (-L.theta)
                carry = dv_next * a[t + 1]
            else:
                carry = 0.0
            dv[t] = psi[t] * dz + carry
            dv_next = dv[t]
        g = {}
        g["w_in"], g["d_in"] = _projection_grads(L.W, L.D, L.M, L.mode, below, dv, L.zeta, half_width, sigma)
        if L.R is not None:
            z_in = np.concatenate([np.zeros((1, B, N)), z], axis=0)   # recurrent train: z^(t-1), t = 0..T
            if not recurrent_end_step:
                z_in = z_in[:T]
            g["w_rec"], g["d_rec"] = _projection_grads(L.R, L.DR, L.MR, L.mode_rec, z_in, dv, L.zeta,
                                                       half_width, sigma)
            if L.tap is not None:
                g["w_rec"] = np.array([g["w_rec"][L.tap == m].sum() for m in range(L.n_taps)])
        out["layers"].append(g)
        below = z
    out.update(out["layers"][0])
    return out


def _projection_grads(W, D, M, mode, x, dv, zeta, half_width, sigma):
    """g_W[j,i] = sum_t dv_j^t zeta x_i^(t-d);  g_D[j,i] = sum_t dv_j^t zeta W_ji xi_ji^t.

    x: (T', B, n_pre) presynaptic train with T' >= T steps (steps past T are read by the
    Gaussian relaxation only); dv: (T, B, N)."""
    T, B, _ = dv.shape
    n_pre = x.shape[2]
    N = W.shape[0]
    dint = np.floor(D + 0.5).astype(int)
    g_w = np.zeros((N, n_pre))
    g_d = np.zeros((N, n_pre))
    for j in range(N):
        for i in np.nonzero(M[j])[0]:
            for b in range(B):
                xs = x[:, b, i]
                for t in range(T):
                    s = t - dint[j, i]
                    if s >= 0:
                        g_w[j, i] += dv[t, b, j] * zeta * xs[s]
                    if mode != "none":
                        g_d[j, i] += dv[t, b, j] * zeta * W[j, i] * xi_train(xs, t, D[j, i], half_width, sigma)
    if mode == "axonal":
        return g_w, g_d.sum(axis=0)
    return g_w, g_d


def sparse_to_dense_grad(proj, grad, n_post, n_pre):
    """Scatter a per-synapse gradient (CSR order) into an (n_post, n_pre) matrix."""
    out = np.zeros((n_post, n_pre))
    for j in range(n_post):
        for s in range(proj.indptr[j], proj.indptr[j + 1]):
            out[j, proj.pre[s]] = grad[s]
    return out


# ------------------------------------------------------------------------------------------------
# further kernel references (used by test_kernels.py); plain loops / dense formulas, float64
# ------------------------------------------------------------------------------------------------
def csr_rows(indptr):
    """Postsynaptic row j of every synapse of a CSR projection, (n_syn,)."""
    indptr = np.asarray(indptr)
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def ring_from_history(x, t, n_slots):
    """Ring hist[slot, i, b] (n_slots, n_pre, B) holding steps max(0, t-n_slots+1)..t of x (T, B, n_pre)
    at slot = step % n_slots, every other slot 0 (the kernels' layout: batch innermost)."""
    x = np.asarray(x, float)
    n_batch, n_pre = x.shape[1], x.shape[2]
    hist = np.zeros((n_slots, n_pre, n_batch))
    for s in range(max(0, t - n_slots + 1), t + 1):
        for i in range(n_pre):
            for b in range(n_batch):
                hist[s % n_slots, i, b] = x[s, b, i]
    return hist


def ref_readout_step(z, w_out, bias, decay, gain, y):
    """y^t = kappa y^(t-1) + zeta_o Wo z^t + b (dense)."""
    return decay * np.asarray(y, float) + gain * np.asarray(z, float) @ np.asarray(w_out, float).T + bias


def ref_readout_error(y, labels, loss_weight):
    """(loss, probs, delta): loss = -sum_{b: label >= 0} w log softmax(y_b)[label]."""
    y = np.asarray(y, float)
    probs = ref_softmax(y)
    delta = np.zeros_like(y)
    loss = 0.0
    for b, label in enumerate(labels):
        if label < 0:
            continue
        onehot = np.zeros(y.shape[1])
        onehot[label] = 1.0
        delta[b] = loss_weight * (probs[b] - onehot)
        top = y[b].max()
        log_norm = top + math.log(np.exp(y[b] - top).sum())
        loss -= loss_weight * (y[b, label] - log_norm)
    return loss, probs, delta


def ref_readout_traces(z, delta, decay, gain, zbar, bbar, grad_w_out, grad_bias):
    """One step of the readout traces; returns new (zbar, bbar, grad_w_out, grad_bias)."""
    zbar = decay * np.asarray(zbar, float) + gain * np.asarray(z, float)
    bbar = decay * np.asarray(bbar, float) + 1.0
    grad_w_out = grad_w_out + np.einsum("bk,bj->kj", delta, zbar)
    grad_bias = grad_bias + np.einsum("bk,b->k", delta, bbar)
    return zbar, bbar, grad_w_out, grad_bias


def ref_learning_signal(delta, feedback):
    """L[b, j] = sum_k B_kj delta[b, k]."""
    return np.asarray(delta, float) @ np.asarray(feedback, float)


def ref_weight_traces(x, t, post, pre, delay_steps, psi, signal, decay_eff, gain, decay_out, gain_out,
                      eps_w, ebar_w, grad_w):
    """One step of the weight traces from the full history x (T, B, n_pre), x before step 0 is 0.

    post, pre, delay_steps: per synapse.  Returns new (eps_w, ebar_w, grad_w).
    """
    eps_w = np.array(eps_w, float)
    ebar_w = np.array(ebar_w, float)
    grad_w = np.array(grad_w, float)
    n_batch = eps_w.shape[0]
    for s in range(len(pre)):
        j, i, d = post[s], pre[s], delay_steps[s]
        for b in range(n_batch):
            x_del = x[t - d, b, i] if t - d >= 0 else 0.0
            eps_w[b, s] = decay_eff[b, j] * eps_w[b, s] + gain * x_del
            ebar_w[b, s] = decay_out * ebar_w[b, s] + gain_out * psi[b, j] * eps_w[b, s]
            grad_w[s] += signal[b, j] * ebar_w[b, s]
    return eps_w, ebar_w, grad_w


def ref_delay_traces(xi, post, delay_of_syn, weight, psi, signal, decay_eff, gain, decay_out, gain_out,
                     eps_d, ebar_d, grad_d):
    """One step of the delay traces; xi (B, n_delays), synapse s reads xi[:, delay_of_syn[s]].

    Arrays are batch-first: psi, signal, decay_eff (B, n_post); eps_d, ebar_d (B, n_syn).
    The gradient is per synapse, grad_d (n_syn,): grad_d[s] += sum_b L ebar_d (callers with
    shared delays sum it by delay parameter).  Returns new (eps_d, ebar_d, grad_d).
    """
    eps_d = np.array(eps_d, float)
    ebar_d = np.array(ebar_d, float)
    grad_d = np.array(grad_d, float)
    for s in range(len(delay_of_syn)):
        j, p = post[s], delay_of_syn[s]
        for b in range(eps_d.shape[0]):
            eps_d[b, s] = decay_eff[b, j] * eps_d[b, s] + gain * weight[s] * xi[b, p]
            ebar_d[b, s] = decay_out * ebar_d[b, s] + gain_out * psi[b, j] * eps_d[b, s]
            grad_d[s] += signal[b, j] * ebar_d[b, s]
    return eps_d, ebar_d, grad_d


def ref_xi_history(x, tau, t_last, pre_of_delay, delay, half_width, sigma):
    """xi (B, n_delays) at the lagged step tau from the full history x (T, B, n_pre).

    Only steps 0..t_last exist (earlier and later steps count as zero): xi_train on the history
    truncated after t_last.
    """
    x = np.asarray(x, float)[:t_last + 1]
    out = np.zeros((x.shape[1], len(delay)))
    for b in range(x.shape[1]):
        for p in range(len(delay)):
            out[b, p] = xi_train(x[:, b, pre_of_delay[p]], tau, float(delay[p]), half_width, sigma)
    return out


def ref_synaptic_delay_traces(x, tau, t_last, post, pre, delay, half_width, sigma, weight, psi, signal,
                              decay_eff, gain, decay_out, gain_out, eps_d, ebar_d, grad_d):
    """Per-synapse delays: xi of every synapse from the history (ref_xi_history with the synapse's
    presynaptic unit and its own real delay), then one step of ref_delay_traces."""
    xi = ref_xi_history(x, tau, t_last, pre, delay, half_width, sigma)
    return ref_delay_traces(xi, post, np.arange(len(pre)), weight, psi, signal, decay_eff, gain, decay_out,
                            gain_out, eps_d, ebar_d, grad_d)


def ref_round_delays(delay, max_delay, delay_of_syn):
    """(clipped delays, integer delay of each synapse = floor(D + 1/2), number clipped)."""
    delay = np.asarray(delay, float)
    n_clipped = int(np.count_nonzero((delay < 0.0) | (delay > max_delay)))
    clipped = np.clip(delay, 0.0, max_delay)
    steps = np.array([math.floor(clipped[p] + 0.5) for p in delay_of_syn], dtype=np.int64)
    return clipped, steps, n_clipped


def ref_sgd(param, grad, lr):
    return np.asarray(param, float) - lr * np.asarray(grad, float)


# ------------------------------------------------------------------------------------------------
# low-bit references (quantize.py), float64, from the definitions
# ------------------------------------------------------------------------------------------------
def ref_ternary(w, alpha=None, beta=None):
    """(Wq, threshold): +alpha where w > 0.7 mean|w|, -beta below minus it, 0 between; alpha = beta =
    mean|w| over |w| > threshold (TWN) when not given."""
    w = np.asarray(w, float)
    delta = 0.7 * np.mean(np.abs(w))
    if alpha is None:
        big = np.abs(w)[np.abs(w) > delta]
        alpha = beta = big.mean() if big.size else 0.0
    return np.where(w > delta, alpha, np.where(w < -delta, -beta, 0.0)), delta


def ref_kbit(w, bits):
    """DoReFa: s = max|w|, q = round((2^m - 1) (w/s + 1)/2) / (2^m - 1), Wq = s (2q - 1)."""
    w = np.asarray(w, float)
    s = np.abs(w).max()
    n = 2**bits - 1
    q = np.array([round(n * (v / s + 1) / 2) for v in w]) / n
    return s * (2 * q - 1)


def ref_delay_grid(d, offset, step, max_delay):
    """floor((d - offset)/step) step + offset, moved to the nearest grid value in [0, max_delay]."""
    grid = [k * step + offset for k in range(-1000, 1000) if 0 <= k * step + offset <= max_delay]
    out = []
    for v in np.asarray(d, float):
        q = math.floor((v - offset) / step) * step + offset
        out.append(min(max(q, grid[0]), grid[-1]))
    return np.array(out)


def ref_scale_grads(shadow, grad_eff):
    """Straight-through gradients of ternary scales from dE/dWq (same order as ``shadow``):
    (sum over w > delta, -sum over w < -delta)."""
    shadow = np.asarray(shadow, float)
    delta = 0.7 * np.mean(np.abs(shadow))
    return np.array([grad_eff[shadow > delta].sum(), -grad_eff[shadow < -delta].sum()])


def csr_grad(proj, dense_grad):
    """A dense (n_post, n_pre) gradient in the CSR order of ``proj``'s synapses."""
    return np.asarray(dense_grad)[csr_rows(proj.indptr), proj.pre]
