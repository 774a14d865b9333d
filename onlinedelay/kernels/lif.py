"""Hidden LIF layer, one step.

soft reset:  v^t = a v^(t-1) + zeta I^t - theta z^(t-1)
hard reset:  v^t = a (1 - z^(t-1)) v^(t-1) + zeta I^t
z^t = H(v^t - theta)  (spike when v^t >= theta); ``v`` keeps the pre-reset potential.
"""

from ._jit import jit


@jit
def lif_step(current, decay, gain, threshold, hard_reset, v, z, decay_eff):
    """Advance membranes one step in place.

    Parameters
    ----------
    current : (B, n) float, input current I^t
    decay : float, alpha; gain : float, zeta; threshold : float, theta
    hard_reset : bool
    v : (B, n) float, membrane potential, in: v^(t-1), out: v^t
    z : (B, n) float, spikes, in: z^(t-1), out: z^t (0 or 1)
    decay_eff : (B, n) float, out: the decay applied to v^(t-1) this step
        (alpha, or alpha (1 - z^(t-1)) with hard reset) -- the trace recursion needs it
    """
    n_batch, n = v.shape
    for b in range(n_batch):
        for j in range(n):
            z_prev = z[b, j]
            if hard_reset:
                a = decay * (1.0 - z_prev)
                v_new = a * v[b, j] + gain * current[b, j]
            else:
                a = decay
                v_new = a * v[b, j] + gain * current[b, j] - threshold * z_prev
            decay_eff[b, j] = a
            v[b, j] = v_new
            z[b, j] = 1.0 if v_new >= threshold else 0.0
