"""The forward network: parameters built from a config and a seed, and one-step simulation.

A :class:`Network` owns :class:`~onlinedelay.state.Parameters` (shared by the batch) and a
:class:`~onlinedelay.state.NetworkState` (one independent copy per batch element).  ``step``
consumes one step of input spike counts and returns the readout; memory does not depend on the
number of steps.  It is the only caller of the forward kernels.

Per step t (spec sections 2-4)::

    hist_in[t % n_slots] = x^t;   hist_rec[t % n_slots] = z^(t-1)
    I^t = sum_i W_ji x_i^(t - d_ji) + sum_l R_jl z_l^(t - 1 - d_jl)
    LIF (soft or hard reset) -> v^t, z^t;   readout y^t = kappa y^(t-1) + zeta_o Wo z^t + b

Delays are real numbers in ``[0, max_delay_steps]``; the forward pass uses
``floor(D + 0.5)``.  The ring holds ``n_slots >= max_delay_steps + 1`` past steps (a learner
reserves more for its Gaussian window).

The current is event-driven (push): every active presynaptic unit adds ``w x`` through its
outgoing synapses to the future-current ring ``future[(t + d) % n_slots]`` and step t takes
``future[t % n_slots]``; silent units cost nothing.  A step whose push would cost more than a pull
(dense activity over a large batch) is flagged and pulled instead (``K.pulled_current``).  The sums
equal the pull over every synapse (``K.delayed_current``) up to the order of the additions
(bit-identical without delays).  The push reads copies of the weights and integer delays in
presynaptic (CSC) order, refreshed at :meth:`Network.reset` and at the first step after
:meth:`Network.parameters_changed`; after a parameter change mid-sample the ring is discarded at
the next step and the spikes still in flight are pulled from the history rings with the new
parameters until they have arrived (at most ``max_delay_steps`` steps): exactly the pull model's
semantics.  A step that pulls nothing runs as one kernel call (``K.forward_step``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernels as K
from .config import NetworkConfig
from .state import NetworkState, Parameters, Projection, assign_tuple, copy_tuple, fill_tuple

_INT = np.int32
PULLING_BUDGET = 0.5      # fraction of a pull's cost a push may cost while earlier steps are pulled anyway


def _build_projection(rng, rng_delay, n_pre, n_post, density, delay_mode, exclude_self, config, dtype):
    """Random fixed-fan-in CSR projection: each row gets round(density * n_available) inputs.

    Connectivity and weights come from ``rng``, delays from ``rng_delay``: the same seed gives the
    same weights whatever the delay mode (fair ablations).
    """
    available = n_pre - 1 if exclude_self else n_pre
    fan_in = 0 if available <= 0 else max(1, int(round(density * available)))
    rows = []
    for j in range(n_post):
        if fan_in == available:
            chosen = np.arange(available)
        else:
            chosen = np.sort(rng.choice(available, size=fan_in, replace=False))
        if exclude_self:
            chosen = chosen + (chosen >= j)       # skip the autapse j -> j
        rows.append(chosen)
    pre = np.concatenate(rows).astype(_INT) if rows and fan_in else np.zeros(0, _INT)
    indptr = (np.arange(n_post + 1) * fan_in).astype(_INT)
    std = config.weight_init_scale * config.threshold / np.sqrt(max(fan_in, 1))
    weight = rng.normal(0.0, std, size=pre.size).astype(dtype)
    if delay_mode == "synaptic":
        pre_of_delay = pre.copy()
        delay_of_syn = np.arange(pre.size, dtype=_INT)
    elif delay_mode == "axonal":
        pre_of_delay = np.arange(n_pre, dtype=_INT)
        delay_of_syn = pre.copy()
    else:
        pre_of_delay = np.zeros(0, _INT)
        delay_of_syn = np.zeros(pre.size, _INT)
    if config.delay_init == "uniform":
        delay = rng_delay.uniform(0.0, config.max_delay_steps, size=pre_of_delay.size).astype(dtype)
    else:
        delay = np.zeros(pre_of_delay.size, dtype)
    proj = Projection(indptr, pre, weight, delay, np.zeros(pre.size, _INT), delay_of_syn, pre_of_delay)
    refresh_delay_steps(proj, config.max_delay_steps)
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
    so switching delays or recurrence on or off leaves every other parameter unchanged."""
    dtype = np.dtype(dtype)
    rng_in, rng_in_d, rng_rec, rng_rec_d, rng_out = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    n_h = config.n_hidden
    inp = _build_projection(rng_in, rng_in_d, config.n_inputs, n_h, config.density, config.input_delays,
                            False, config, dtype)
    if config.recurrent:
        rec = _build_projection(rng_rec, rng_rec_d, n_h, n_h, config.recurrent_density,
                                config.recurrent_delays, True, config, dtype)
    else:
        rec = _build_projection(rng_rec, rng_rec_d, 0, n_h, 1.0, "none", False, config, dtype)
    w_out = rng_out.normal(0.0, 1.0 / np.sqrt(n_h), size=(config.n_outputs, n_h)).astype(dtype)
    b_out = np.zeros(config.n_outputs, dtype)
    return Parameters(inp, rec, w_out, b_out)


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
        raise ValueError(f"{n_post} neurons x {max_delay_steps + 1} delay steps overflow the int32 push targets")
    target_dtype = np.uint16 if n_targets <= 2**16 else _INT
    index = EventIndex(out_indptr, out_syn, post[out_syn].astype(_INT), np.empty(out_syn.size, target_dtype),
                       np.empty(out_syn.size, proj.weight.dtype))
    refresh_event_copies(index, proj)
    return index


def refresh_event_copies(index: EventIndex, proj: Projection) -> None:
    """Copy ``proj``'s current integer delays and weights into ``index`` (CSC order), in place."""
    target = proj.delay_steps.take(index.out_syn)
    target *= proj.indptr.size - 1
    target += index.out_post
    index.target[:] = target
    np.take(proj.weight, index.out_syn, out=index.weight_csc)


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


def synapse_delays(proj: Projection) -> np.ndarray:
    """(n_syn,) real delay seen by each synapse (0 without delays)."""
    if proj.delay.size == 0:
        return np.zeros(proj.pre.size, proj.weight.dtype)
    return proj.delay[proj.delay_of_syn]


class Network:
    """A single-hidden-layer LIF network with delays, stepped one timestep at a time.

    Parameters
    ----------
    config : NetworkConfig
    seed : int, seeds every random draw of the parameters
    batch_size : int, number of independent state copies (samples run side by side)
    dtype : "float32" (default) or "float64"
    threads : int, threads for the per-synapse kernels (1: serial; >1: rows spread over threads)

    Notes
    -----
    The forward pass reads copies of the weights and delays (presynaptic order, see
    :class:`EventIndex`), refreshed by :meth:`reset` and at the next step after
    :meth:`parameters_changed`.  Parameters written in place in the middle of a sample (after a
    step since the last reset) must be followed by :meth:`parameters_changed` before the next
    step, as they must for the spikes already in flight; :meth:`set_delays`, the learners'
    ``apply`` and :meth:`restore` call it.  Between samples nothing is needed: :meth:`reset`
    (and :meth:`run`, which resets) picks up whatever was written.

    Examples
    --------
    >>> net = Network(NetworkConfig(n_inputs=4, n_hidden=8, n_outputs=2), seed=0)
    >>> y = net.step(np.array([0, 1, 0, 2]))      # one step, readout of shape (1, 2)
    """

    def __init__(self, config: NetworkConfig, seed: int = 0, batch_size: int = 1, dtype="float32",
                 threads: int = 1):
        if not isinstance(config, NetworkConfig):
            raise TypeError(f"config must be a NetworkConfig, got {type(config).__name__}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype={dtype!r} is not allowed; choose 'float32' or 'float64'")
        self.config = config
        self.seed = int(seed)
        self.params = init_parameters(config, self.seed, self.dtype)
        self.n_slots = config.max_delay_steps + 1
        self.state = self._allocate(_check_batch(batch_size))
        self.delay_version = 0        # bumped whenever parameters change (learners cache derived tables)
        self._future_version = 0      # the delay_version the future-current ring was built with
        self._event_params = None
        self._bound_state = None      # the state the arguments of K.forward_step were taken from
        self._set_constants()
        self.set_threads(threads)
        self._build_event_index()

    # -- allocation and reset -------------------------------------------------------------
    def _allocate(self, batch_size: int) -> NetworkState:
        c, dt = self.config, self.dtype
        n_h = c.n_hidden
        rec_slots = self.n_slots if c.recurrent else 0
        return NetworkState(
            v=np.zeros((n_h, batch_size), dt),
            z=np.zeros((n_h, batch_size), dt),
            decay_eff=np.zeros((n_h, batch_size), dt),
            current=np.zeros((n_h, batch_size), dt),
            y=np.zeros((c.n_outputs, batch_size), dt),
            hist_in=np.zeros((self.n_slots, c.n_inputs, batch_size), dt),
            hist_rec=np.zeros((rec_slots, n_h, batch_size), dt),
            future=np.zeros((self.n_slots, n_h, batch_size), dt),
            pulled_in=np.zeros(self.n_slots, np.uint8),
            pulled_rec=np.zeros(rec_slots, np.uint8),
            pull_until=np.zeros(2, np.int64),
            t=np.zeros(1, np.int64),
        )

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` threads for the per-synapse kernels (1 = serial kernels)."""
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads={threads!r} is not allowed; expected an integer >= 1")
        self.threads = int(threads)
        if self.threads > 1:
            import numba

            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
            self.synapse_kernels = SynapseKernels(
                K.weight_traces_parallel, K.xi_from_taps_parallel, K.delay_traces_parallel,
                K.synaptic_delay_traces_parallel, K.pulled_current_parallel)
        else:
            self.synapse_kernels = SynapseKernels(
                K.weight_traces, K.xi_from_taps, K.delay_traces, K.synaptic_delay_traces, K.pulled_current)
        if self._event_params is not None:
            self._set_budgets()

    @property
    def batch_size(self) -> int:
        return self.state.v.shape[1]

    @property
    def t(self) -> int:
        """Steps taken since the last reset."""
        return int(self.state.t[0])

    def reserve_history(self, n_slots: int) -> None:
        """Make the presynaptic rings hold at least ``n_slots`` steps (clears the state)."""
        if n_slots > self.n_slots:
            self.n_slots = int(n_slots)
            self.state = self._allocate(self.batch_size)

    def reset(self, batch_size: int | None = None) -> None:
        """Zero the state (start of a sample); optionally change the batch size."""
        if batch_size is not None and _check_batch(batch_size) != self.batch_size:
            self.state = self._allocate(batch_size)
            self._set_budgets()
        else:
            fill_tuple(self.state, 0)
        if self.params is self._event_params:     # weights written in place since the last sample
            self._refresh_event_copies()

    # -- stepping -------------------------------------------------------------------------
    def step(self, x) -> np.ndarray:
        """Advance one step with input spike counts ``x``.

        Parameters
        ----------
        x : array of ints >= 0, shape (n_inputs,) (batch size 1) or (B, n_inputs)

        Returns
        -------
        y : (B, n_outputs) readout after this step (a copy)
        """
        arr = x if type(x) is np.ndarray else np.asarray(x)
        s = self.state
        if self._unbound():
            self._bind()
        if arr.ndim == 1 and s.v.shape[1] == 1:
            arr = arr[None, :]
        if arr.shape == self._x_shape and arr.dtype.char in _FAST_COUNTS:   # validate + write in a kernel
            done = _forward_step(arr, *self._fused_args) if self._fused else 2
            if done == 0:                           # no pull this step: the whole step in one call
                return s.y.T.copy()
            if done == 2:                           # a pull is due (or batch > 1): step by step
                done = K.write_counts(arr, s.hist_in, int(s.t[0]) % self.n_slots)
            if done:
                _check_counts(arr, "input x")              # raises, naming the first bad count
                raise ValueError("input x holds invalid spike counts")
            self._forward()
        else:
            self._step(self._check_input(x).T)
        return self.state.y.T.copy()

    def _step(self, x: np.ndarray) -> None:
        """One step on validated input counts ``x`` of shape (n_inputs, B) (cast into the ring)."""
        s = self.state
        if s.v.shape[1] == 1 and x.dtype.char in _FAST_COUNTS:       # batch 1: one kernel call if no pull
            if self._unbound():
                self._bind()
            if self._fused and x.shape == self._x_shape[::-1] and _forward_step(x.T, *self._fused_args) == 0:
                return
        s.hist_in[int(s.t[0]) % self.n_slots] = x
        self._forward()

    def _forward(self) -> None:
        """The step whose input is already in ``hist_in[t % n_slots]``."""
        c, p, s = self.config, self.params, self.state
        t = int(s.t[0])
        if self._future_version != self.delay_version or p is not self._event_params:
            self._discard_future(t)
        slot = t % self.n_slots
        ev = self._events_in
        # while earlier steps are being pulled anyway, a push must be much cheaper than the pull (hysteresis)
        budget = self._budget_in if t >= s.pull_until[0] else PULLING_BUDGET * self._budget_in
        pushed = K.push_events(s.hist_in, slot, ev.out_indptr, ev.target, ev.weight_csc, s.future, budget,
                               s.pulled_in)
        if not pushed:
            s.pull_until[0] = max(int(s.pull_until[0]), t + self._window_in)
        if c.recurrent:
            s.hist_rec[slot] = s.z
            ev = self._events_rec
            # a pulled input step pulls the recurrent one too: input before recurrent, as in the pull model
            budget = self._budget_rec if t >= s.pull_until[1] else PULLING_BUDGET * self._budget_rec
            if not K.push_events(s.hist_rec, slot, ev.out_indptr, ev.target, ev.weight_csc, s.future,
                                 budget if pushed else -1.0, s.pulled_rec):
                s.pull_until[1] = max(int(s.pull_until[1]), t + self._window_rec)
        K.take_current(s.future, slot, s.current)
        if t < s.pull_until[0]:
            self._pull(p.input)(s.hist_in, t, s.pulled_in, p.input.indptr, p.input.pre,
                                p.input.delay_steps, p.input.weight, s.current)
        if c.recurrent and t < s.pull_until[1]:
            self._pull(p.recurrent)(s.hist_rec, t, s.pulled_rec, p.recurrent.indptr, p.recurrent.pre,
                                    p.recurrent.delay_steps, p.recurrent.weight, s.current)
        K.lif_step(s.current, *self._lif_constants, s.v, s.z, s.decay_eff)
        K.readout_step(s.z, p.w_out, p.b_out, *self._readout_constants, s.y)
        s.t[0] = t + 1

    def _set_constants(self) -> None:
        """The config's derived scalars the kernels take (the config is frozen)."""
        c = self.config
        self._lif_constants = (float(c.decay_mem), float(c.input_gain), float(c.threshold), c.reset == "hard")
        self._readout_constants = (float(c.decay_out), float(c.readout_gain))

    def _unbound(self) -> bool:
        """True when the state or parameters were replaced or changed since :meth:`_bind`."""
        return (self.state is not self._bound_state or self.params is not self._event_params
                or self._future_version != self.delay_version)

    def _bind(self) -> None:
        """Bring the event copies up to date, then take the arguments of ``K.forward_step`` from the
        current state and parameters (:meth:`step` calls this whenever either was replaced)."""
        if self._future_version != self.delay_version or self.params is not self._event_params:
            self._discard_future(int(self.state.t[0]))
        s, p, ei, er = self.state, self.params, self._events_in, self._events_rec
        self._x_shape = s.hist_in.shape[2:0:-1]
        self._fused = self._budget_in == np.inf and self._budget_rec == np.inf    # batch 1: always pushed
        self._fused_args = (s.t, s.pull_until, s.hist_in, ei.out_indptr, ei.target, ei.weight_csc, s.pulled_in,
                            s.hist_rec, er.out_indptr, er.target, er.weight_csc, s.pulled_rec, s.future, s.current,
                            *self._lif_constants, s.v, s.z, s.decay_eff, p.w_out, p.b_out, *self._readout_constants,
                            s.y)
        self._bound_state = s

    def _pull(self, proj: Projection):
        """The pull kernel for one step of ``proj``: the parallel build only where a call has enough work
        to pay for waking the threads (about 2^20 synapse-samples; measured, 2 cores)."""
        if proj.pre.size * self.batch_size >= PARALLEL_PULL_WORK:
            return self.synapse_kernels.pulled_current
        return K.pulled_current

    def run(self, inputs) -> np.ndarray:
        """Reset, then run a whole sample; returns the readout of every step.

        inputs : (T, n_inputs) or (T, B, n_inputs) spike counts.  Returns (T, B, n_outputs).
        """
        x = self.check_sequence(inputs)
        self.reset(x.shape[1])
        out = np.empty((x.shape[0], x.shape[1], self.config.n_outputs), self.dtype)
        for t in range(x.shape[0]):
            self._step(x[t].T)
            out[t] = self.state.y.T
        return out

    # -- input validation -----------------------------------------------------------------
    def _check_input(self, x) -> np.ndarray:
        arr = np.asarray(x)
        n_in = self.config.n_inputs
        if arr.ndim == 1 and self.batch_size == 1:
            arr = arr[None, :]
        if arr.shape != (self.batch_size, n_in):
            raise ValueError(f"input x has shape {np.shape(x)}; expected ({self.batch_size}, {n_in})"
                             + (f" or ({n_in},)" if self.batch_size == 1 else ""))
        return _check_counts(arr, "input x").astype(self.dtype, copy=False)

    def check_sequence(self, inputs) -> np.ndarray:
        """Validate a (T, n_in) or (T, B, n_in) count array; returns a (T, B, n_in) view.

        The values are not copied (memory stays independent of T beyond the input itself); each
        step is cast to the network dtype when it is written into the ring.
        """
        arr = np.asarray(inputs)
        if arr.ndim == 2:
            arr = arr[:, None, :]
        if arr.ndim != 3 or arr.shape[2] != self.config.n_inputs or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"inputs have shape {np.shape(inputs)}; expected (T, {self.config.n_inputs}) "
                             f"or (T, B, {self.config.n_inputs}) with T, B >= 1")
        return _check_counts(arr, "inputs")

    # -- parameters -------------------------------------------------------------------------
    def parameters_changed(self) -> None:
        """Declare that weights or delays were changed in place (mid-sample too).

        Bumps ``delay_version``.  At the next step the push's copies of the weights and delays are
        refreshed, the future-current ring (built with the old parameters) is discarded and the
        spikes still in flight are pulled from the history rings with the new parameters, exactly
        as the pull model delivers them.  Needed after every in-place write in the middle of a
        sample; writes between samples are picked up by :meth:`reset`.
        """
        self.delay_version += 1

    def _build_event_index(self) -> None:
        """CSC views of both projections (connectivity is fixed; rebuilt when ``params`` is replaced)."""
        p, c = self.params, self.config
        self._events_in = event_index(p.input, c.n_inputs, c.max_delay_steps)
        self._events_rec = event_index(p.recurrent, c.n_hidden if c.recurrent else 0, c.max_delay_steps)
        self._event_params = p
        self._bound_state = None
        # a spike pushed at step q arrives by q + window - 1 (delays are clipped to max_delay_steps)
        self._window_in = (c.max_delay_steps if p.input.delay.size else 0) + 1
        self._window_rec = (c.max_delay_steps if p.recurrent.delay.size else 0) + 1
        self._set_budgets()

    def _set_budgets(self) -> None:
        """Push a step only while it is estimated to cost less than pulling it (always at batch 1).

        The serial pull's cost is the yardstick even with threads: the parallel pull of 700-256-20 at
        batch 32 took 108 ms per batch on 2 threads against 60 ms for the serial push (measured)."""
        B, p = self.batch_size, self.params
        self._budget_in, self._budget_rec = (
            np.inf if B == 1 else K.events.pull_cost(proj.pre.size, B) for proj in (p.input, p.recurrent))
        self._bound_state = None

    def _discard_future(self, t: int) -> None:
        """Parameters changed before step ``t``: drop the future ring, pull the spikes still in flight."""
        if self.params is not self._event_params:
            self._build_event_index()
        self._future_version = self.delay_version
        self._refresh_event_copies()
        s, n = self.state, self.n_slots
        if t == 0:
            return                        # nothing pushed since the reset: the ring is empty
        s.future[...] = 0.0
        for k, (flags, window) in enumerate(((s.pulled_in, self._window_in), (s.pulled_rec, self._window_rec))):
            if window > 1 and flags.size:
                for q in range(max(0, t - window + 1), t):
                    flags[q % n] = 1
                s.pull_until[k] = max(int(s.pull_until[k]), t - 1 + window)

    def _refresh_event_copies(self) -> None:
        """Copy the current weights and delays into the event indices (CSC order)."""
        refresh_event_copies(self._events_in, self.params.input)
        refresh_event_copies(self._events_rec, self.params.recurrent)

    def set_delays(self, which: str, delays) -> None:
        """Set the real delays of the ``"input"`` or ``"recurrent"`` projection (steps).

        ``delays`` has shape (n_delays,): one per synapse (synaptic) or per presynaptic unit
        (axonal).  Values must lie in [0, max_delay_steps].
        """
        proj = self._projection(which)
        arr = np.asarray(delays, dtype=np.float64)
        if arr.shape != proj.delay.shape:
            raise ValueError(f"{which} delays have shape {arr.shape}; expected {proj.delay.shape}")
        bad = ~np.isfinite(arr) | (arr < 0) | (arr > self.config.max_delay_steps)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{which} delay [{i}] = {float(arr[i])!r} is outside [0, {self.config.max_delay_steps}]")
        proj.delay[:] = arr
        refresh_delay_steps(proj, self.config.max_delay_steps)
        self.parameters_changed()

    def _projection(self, which: str) -> Projection:
        if which == "input":
            return self.params.input
        if which == "recurrent":
            return self.params.recurrent
        raise ValueError(f"projection {which!r} is unknown; choose 'input' or 'recurrent'")

    def parameter_counts(self) -> dict:
        """Number of learnable weights and delays per projection."""
        p = self.params
        return {"input_weights": int(p.input.weight.size), "input_delays": int(p.input.delay.size),
                "recurrent_weights": int(p.recurrent.weight.size),
                "recurrent_delays": int(p.recurrent.delay.size),
                "readout_weights": int(p.w_out.size), "readout_bias": int(p.b_out.size)}

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Deep copy of parameters and state (rings, future-current ring and step counter included)."""
        in_sync = self._future_version == self.delay_version and self.params is self._event_params
        return {"params": copy_tuple(self.params), "state": copy_tuple(self.state), "future_in_sync": in_sync}

    def restore(self, snap: dict) -> None:
        """Restore a :meth:`snapshot` in place (shapes must match)."""
        if snap["state"].hist_in.shape != self.state.hist_in.shape:
            self.state = copy_tuple(snap["state"])
            self.n_slots = self.state.hist_in.shape[0]
        else:
            assign_tuple(self.state, snap["state"])
        rebuild = any(not np.array_equal(a, b) for a, b in (
            (self.params.input.indptr, snap["params"].input.indptr), (self.params.input.pre, snap["params"].input.pre),
            (self.params.recurrent.indptr, snap["params"].recurrent.indptr),
            (self.params.recurrent.pre, snap["params"].recurrent.pre)))
        assign_tuple(self.params, snap["params"])
        if rebuild:
            self._build_event_index()
        else:
            self._refresh_event_copies()
        self._set_budgets()
        self.parameters_changed()
        if snap.get("future_in_sync", False):     # the restored ring was built with the restored parameters
            self._future_version = self.delay_version


class SynapseKernels(NamedTuple):
    """The per-synapse kernels in use (serial or parallel builds); the chunk kernels of the soft
    reset are picked by the learner (``ThreeFactorLearner._kernel``)."""

    weight_traces: object
    xi_from_taps: object
    delay_traces: object
    synaptic_delay_traces: object
    pulled_current: object    # the pull of the steps that were not pushed (forward current)


PARALLEL_PULL_WORK = 1 << 20      # synapses x batch of one pull below which the serial build runs
_FAST_COUNTS = "bBhHiIlLqQfd"     # dtype.char of the counts :meth:`Network.step` checks in a kernel
_forward_step = K.forward_step


def _check_batch(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed; expected an integer >= 1")
    return int(batch_size)


def _check_counts(arr: np.ndarray, what: str) -> np.ndarray:
    """Spike counts must be finite, non-negative whole numbers."""
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {arr.dtype}; expected integer spike counts")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr < 0) | (arr != np.floor(arr))
    elif arr.dtype.kind == "i":
        bad = arr < 0
    else:
        return arr
    if bad.any():
        idx = np.unravel_index(int(np.argmax(bad)), arr.shape)
        raise ValueError(f"{what}{[int(i) for i in idx]} = {arr[idx].item()!r}; spike counts must be whole numbers >= 0")
    return arr
