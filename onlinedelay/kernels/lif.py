"""Hidden LIF layer, one step.

soft reset:  v^t = a v^(t-1) + zeta I^t - theta z^(t-1)
hard reset:  v^t = a (1 - z^(t-1)) v^(t-1) + zeta I^t
z^t = H(v^t - theta)  (spike when v^t >= theta); ``v`` keeps the pre-reset potential.
"""

from functools import partial

from ._jit import jit


@jit
def lif_step(current, decay, gain, threshold, hard_reset, v, z, decay_eff):
    """Advance membranes one step in place.

    Parameters
    ----------
    All arrays are (n, B) (any 2-D layout works: the update is elementwise).
    current : (n, B) float, input current I^t
    decay : float, alpha; gain : float, zeta; threshold : float, theta
    hard_reset : bool
    v : (n, B) float, membrane potential, in: v^(t-1), out: v^t
    z : (n, B) float, spikes, in: z^(t-1), out: z^t (0 or 1)
    decay_eff : (n, B) float, out: the decay applied to v^(t-1) this step
        (alpha, or alpha (1 - z^(t-1)) with hard reset) -- the trace recursion needs it
    """
    lif_columns(current, decay, gain, threshold, hard_reset, v, z, decay_eff, 0, v.shape[1])


@jit
def lif_columns(current, decay, gain, threshold, hard_reset, v, z, decay_eff, b0, b1):
    """:func:`lif_step` on the batch columns b0 .. b1 - 1 only (the others untouched).  One column (batch 1)
    has a loop of its own over the neurons: an inner loop of length 1 cost ~4 ns per neuron (256
    neurons: 1.0 -> 0.1 us per step, a tenth of a streaming step)."""
    if b1 - b0 == 1:
        for j in range(v.shape[0]):
            lif_neuron(current, decay, gain, threshold, hard_reset, v, z, decay_eff, j, b0)
        return
    for j in range(v.shape[0]):
        for b in range(b0, b1):
            lif_neuron(current, decay, gain, threshold, hard_reset, v, z, decay_eff, j, b)


@partial(jit, inline=True)
def lif_neuron(current, decay, gain, threshold, hard_reset, v, z, decay_eff, j, b):
    """One neuron of one column, in place (:func:`lif_step`)."""
    z_prev = z[j, b]
    if hard_reset:
        a = decay * (1.0 - z_prev)
        v_new = a * v[j, b] + gain * current[j, b]
    else:
        a = decay
        v_new = a * v[j, b] + gain * current[j, b] - threshold * z_prev
    decay_eff[j, b] = a
    v[j, b] = v_new
    z[j, b] = 1.0 if v_new >= threshold else 0.0
