"""The forward network: a stack of LIF layers stepped one timestep at a time.

A :class:`Network` owns :class:`~onlinedelay.state.Parameters` (shared by the batch; built by
projections.py) and a :class:`~onlinedelay.state.NetworkState` (one copy per batch element);
memory does not depend on the number of steps.  It is the only caller of the forward kernels.

A network is a stack of hidden LIF layers.  Per step t, layer after layer (l = 0 .. L-1)::

    hist_ff[t % n_slots] = x^t (layer 0) or z_(l-1)^t (the layer below, this step)
    hist_rec[t % n_slots] = z_l^(t-1)
    I^t = sum_i W_ji hist_ff_i^(t - d_ji) + sum_m R_jm z_m^(t - 1 - d_jm)
    LIF (soft or hard reset) -> v_l^t, z_l^t
    readout y^t = kappa y^(t-1) + zeta_o Wo z^t + b        (z: the last layer, or every layer)

Delays are real numbers in ``[0, max_delay_steps]`` used as ``floor(D + 0.5)``; the rings hold
``n_slots >= max_delay_steps + 1`` past steps (a learner reserves more).  The current is pushed
event by event: an active unit adds ``w x`` through its synapses to ``future[(t + d) % n_slots]``,
read at step t; a step whose push costs more than a pull is pulled instead (``K.pulled_current``).
The push reads CSC copies of weights and delays (refreshed at :meth:`Network.reset`, its delay
targets at the step after it, and after :meth:`Network.parameters_changed`; mid-sample the ring is
then discarded and the spikes in flight pulled with the new parameters).  A one-layer step at batch 1 is one kernel call
(``K.forward_step``); a known sequence of a one-layer network without recurrence runs segment by
segment (segments.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernels as K
from . import quantize as Q
from .kernels._jit import configure_threading
from .config import LayerSpec, NetworkConfig
from .errors import OnlineDelayError, check_batch, check_counts, check_sequence_counts, check_step_counts
from .projections import (checked_delays, event_index, fan_out, init_parameters, parameter_counts, refresh_delay_steps,
                          refresh_event_copies)
from .segments import SegmentRunner, supports_segments
from .state import (PROJECTION_KINDS, LayerState, NetworkState, Parameters, Projection,
                    aligned_zeros, assign_tuple, copy_tuple)

_INT = np.int32
PULLING_BUDGET = 0.5      # fraction of a pull's cost a push may cost while earlier steps are pulled anyway


class _LayerEvents(NamedTuple):
    """The push machinery of one layer (derived from its parameters and the batch size)."""

    events: tuple             # (2,) EventIndex: feedforward, recurrent
    windows: tuple            # (2,) steps a pushed spike may take to arrive (max delay + 1, or 1)
    budgets: tuple            # (2,) push budget per step (inf at batch 1)


class Network:
    """A stack of LIF layers with delays and a leaky-integrator readout, stepped one timestep at a time.

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
                 threads: int = 1, params: Parameters | None = None):
        if not isinstance(config, NetworkConfig):
            raise TypeError(f"config must be a NetworkConfig, got {type(config).__name__}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise OnlineDelayError(f"dtype={dtype!r} is not allowed; choose 'float32' or 'float64'")
        self.config = config
        self.layer_specs: tuple[LayerSpec, ...] = config.layer_specs
        self.seed = int(seed)
        self.params = init_parameters(config, self.seed, self.dtype) if params is None else params
        self.n_slots = config.max_delay_steps + 1
        self._offsets = np.concatenate([[0], np.cumsum(config.layer_sizes)]).astype(int)
        self.state = self._allocate(check_batch(batch_size))
        self.delay_version = 0        # bumped whenever parameters change (learners cache derived tables)
        self._future_version = 0      # the delay_version the future-current rings were built with
        self._event_params = None
        self._bound_state = None      # the state the arguments of K.forward_step were taken from
        self._targets_stale = False   # the push's targets lag the delays (reset leaves them to the first step)
        self.segments = SegmentRunner(self)   # advances known sequences segment by segment (segments.py)
        self._set_constants()
        self.set_threads(threads)
        self._build_event_index()

    @classmethod
    def from_parameters(cls, config: NetworkConfig, params: Parameters, seed: int = 0, batch_size: int = 1,
                        dtype="float32", threads: int = 1) -> "Network":
        """A network with the given parameters (shapes already checked against ``config``: io does)."""
        return cls(config, seed=seed, batch_size=batch_size, dtype=dtype, threads=threads, params=params)

    # -- allocation and reset -------------------------------------------------------------
    def _allocate(self, batch_size: int) -> NetworkState:
        c, dt = self.config, self.dtype
        layers = []
        for spec in self.layer_specs:
            n, rec_slots = spec.n_neurons, (self.n_slots if spec.recurrent is not None else 0)
            layers.append(LayerState(
                v=aligned_zeros((n, batch_size), dt), decay_eff=aligned_zeros((n, batch_size), dt),
                current=aligned_zeros((n, batch_size), dt),
                hist_ff=aligned_zeros((self.n_slots, spec.n_pre, batch_size), dt),
                hist_rec=aligned_zeros((rec_slots, n, batch_size), dt),
                future=aligned_zeros((self.n_slots, n, batch_size), dt),
                pulled_ff=aligned_zeros(self.n_slots, np.uint8), pulled_rec=aligned_zeros(rec_slots, np.uint8),
                pull_until=aligned_zeros(2, np.int64)))
        return NetworkState(tuple(layers), aligned_zeros((int(self._offsets[-1]), batch_size), dt),
                            aligned_zeros((c.n_outputs, batch_size), dt), aligned_zeros(1, np.int64))

    def layer_spikes(self, layer: int, state: NetworkState | None = None) -> np.ndarray:
        """(N_l, B) view of layer ``layer``'s spikes of the last step."""
        s = self.state if state is None else state
        return s.z[self._offsets[layer]:self._offsets[layer + 1]]

    def readout_spikes(self, state: NetworkState | None = None) -> np.ndarray:
        """(n_readout_inputs, B) view of the spikes the readout reads (last layer, or every layer)."""
        s = self.state if state is None else state
        return s.z if self.config.readout == "all" else self.layer_spikes(len(self.layer_specs) - 1, s)

    @property
    def readout_offsets(self) -> tuple:
        """Column offset of each layer in the readout weights (None where the readout does not read it)."""
        last = len(self.layer_specs) - 1
        if self.config.readout == "all":
            return tuple(int(o) for o in self._offsets[:-1])
        return tuple(0 if l == last else None for l in range(last + 1))

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` threads for the per-synapse kernels (1 = serial kernels)."""
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise OnlineDelayError(f"threads={threads!r} is not allowed; expected an integer >= 1")
        self.threads = int(threads)
        if self.threads > 1:
            import numba

            configure_threading()
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        self.synapse_kernels = K.synapse_kernels(self.threads > 1)
        if self._event_params is not None:
            self._set_budgets()

    batch_size = property(lambda self: self.state.z.shape[1], doc="Samples run side by side.")

    t = property(lambda self: int(self.state.t[0]), doc="Steps taken since the last reset.")

    def reserve_history(self, n_slots: int) -> None:
        """Make the presynaptic rings hold at least ``n_slots`` steps (clears the state)."""
        if n_slots > self.n_slots:
            self.n_slots = int(n_slots)
            self.state = self._allocate(self.batch_size)

    def reset(self, batch_size: int | None = None) -> None:
        """Zero the state (start of a sample); optionally change the batch size."""
        if batch_size is not None and check_batch(batch_size) != self.batch_size:
            self.state = self._allocate(batch_size)
            self._set_budgets()
        self.segments.reset_state()             # only the ring slots written, where it knows them
        if self.params is self._event_params:     # weights written in place since the last sample
            self._refresh_event_copies(targets=False)     # the push's targets wait for a step: segments skip them
            self._targets_stale = True
            self._future_version = self.delay_version     # and the rings are empty: nothing to discard

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
        if arr.ndim == 1 and s.z.shape[1] == 1:
            arr = arr[None, :]
        if arr.shape == self._x_shape and arr.dtype.char in _FAST_COUNTS:   # validate + write in a kernel
            done = _forward_step(arr, *self._fused_args) if self._fused else 2
            if done == 0:                           # no pull this step: the whole step in one call
                return s.y.T.copy()
            if done == 2:                           # a pull is due (or batch > 1): step by step
                done = K.write_counts(arr, s.layers[0].hist_ff, int(s.t[0]) % self.n_slots)
            if done:
                check_counts(arr, "input x")              # raises, naming the first bad count
                raise OnlineDelayError("input x holds invalid spike counts")
            self._forward()
        else:
            self.advance(self._check_input(x).T)
        return self.state.y.T.copy()

    def advance(self, x: np.ndarray) -> None:
        """One step on input counts ``x`` of shape (n_inputs, B) already validated (as by
        :meth:`check_sequence`); they are cast into the ring.  The readout is in ``state.y``."""
        s = self.state
        if s.z.shape[1] == 1 and x.dtype.char in _FAST_COUNTS:       # batch 1: one kernel call if no pull
            if self._unbound():
                self._bind()
            if self._fused and x.shape == self._x_shape[::-1] and _forward_step(x.T, *self._fused_args) == 0:
                return
        s.layers[0].hist_ff[int(s.t[0]) % self.n_slots] = x
        self._forward()

    def _forward(self) -> None:
        """The step whose input is already in layer 0's ``hist_ff[t % n_slots]``."""
        p, s = self.params, self.state
        t = int(s.t[0])
        if self._future_version != self.delay_version or p is not self._event_params or self._targets_stale:
            self._sync_events(t)
        slot = t % self.n_slots
        for l, (lp, ls, lev) in enumerate(zip(p.layers, s.layers, self._layer_events)):
            if l > 0:
                ls.hist_ff[slot] = self.layer_spikes(l - 1)
            z = self.layer_spikes(l)
            ev = lev.events[0]
            # while earlier steps are being pulled anyway, a push must be much cheaper than the pull (hysteresis)
            budget = lev.budgets[0] if t >= ls.pull_until[0] else PULLING_BUDGET * lev.budgets[0]
            pushed = K.push_events(ls.hist_ff, slot, ev.out_indptr, ev.target, ev.weight_csc, ls.future, budget,
                                   ls.pulled_ff)
            if not pushed:
                ls.pull_until[0] = max(int(ls.pull_until[0]), t + lev.windows[0])
            recurrent = ls.hist_rec.shape[0] > 0
            if recurrent:
                ls.hist_rec[slot] = z
                ev = lev.events[1]
                # a pulled feedforward step pulls the recurrent one too: feedforward first, as in the pull model
                budget = lev.budgets[1] if t >= ls.pull_until[1] else PULLING_BUDGET * lev.budgets[1]
                if not K.push_events(ls.hist_rec, slot, ev.out_indptr, ev.target, ev.weight_csc, ls.future,
                                     budget if pushed else -1.0, ls.pulled_rec):
                    ls.pull_until[1] = max(int(ls.pull_until[1]), t + lev.windows[1])
            K.take_current(ls.future, slot, ls.current)
            if t < ls.pull_until[0]:
                ff = lp.feedforward
                self._pull(ff)(ls.hist_ff, t, ls.pulled_ff, ff.indptr, ff.pre, ff.delay_steps, ff.weight, ls.current)
            if recurrent and t < ls.pull_until[1]:
                rec = lp.recurrent
                self._pull(rec)(ls.hist_rec, t, ls.pulled_rec, rec.indptr, rec.pre, rec.delay_steps, rec.weight,
                                ls.current)
            K.lif_step(ls.current, *self._lif_constants[l], ls.v, z, ls.decay_eff)
        K.readout_step(self.readout_spikes(), p.w_out, p.b_out, *self._readout_constants, s.y)
        s.t[0] = t + 1

    def _set_constants(self) -> None:
        """The config's derived scalars the kernels take (the config is frozen)."""
        c = self.config
        self._lif_constants = tuple((float(spec.decay_mem), float(spec.input_gain), float(spec.threshold),
                                     spec.reset == "hard") for spec in self.layer_specs)
        self._readout_constants = (float(c.decay_out), float(c.readout_gain))

    def _unbound(self) -> bool:
        """True when the state or parameters were replaced or changed since :meth:`_bind`."""
        return (self.state is not self._bound_state or self.params is not self._event_params
                or self._future_version != self.delay_version or self._targets_stale)

    def _bind(self) -> None:
        """Bring the event copies up to date, then take the arguments of ``K.forward_step`` from the
        current state and parameters (:meth:`step` calls this whenever either was replaced)."""
        self._sync_events(int(self.state.t[0]))
        s, p = self.state, self.params
        ls, lev = s.layers[0], self._layer_events[0]
        ei, er = lev.events
        self._x_shape = ls.hist_ff.shape[2:0:-1]
        # one layer at batch 1 (always pushed): the whole step in one kernel call
        self._fused = len(self.layer_specs) == 1 and all(b == np.inf for b in lev.budgets)
        self._fused_args = (s.t, ls.pull_until, ls.hist_ff, ei.out_indptr, ei.target, ei.weight_csc, ls.pulled_ff,
                            ls.hist_rec, er.out_indptr, er.target, er.weight_csc, ls.pulled_rec, ls.future,
                            ls.current, *self._lif_constants[0], ls.v, s.z, ls.decay_eff, p.w_out, p.b_out,
                            *self._readout_constants, s.y)
        self._bound_state = s

    def _pull(self, proj: Projection):
        """The pull kernel for one step of ``proj``: the parallel build only where a call has enough work
        to pay for waking the threads (PARALLEL_PULL_WORK; docs/benchmarks.md, tuning constants)."""
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
        if supports_segments(self):               # one layer without recurrence: segment by segment
            self.segments.run(x, out)
            return out
        for t in range(x.shape[0]):
            self.advance(x[t].T)
            out[t] = self.state.y.T
        return out

    # -- input validation -----------------------------------------------------------------
    def _check_input(self, x) -> np.ndarray:
        return check_step_counts(x, self.config.n_inputs, self.batch_size).astype(self.dtype, copy=False)

    def check_sequence(self, inputs) -> np.ndarray:
        """Validate a (T, n_in) or (T, B, n_in) count array; returns a (T, B, n_in) view, not copied
        (memory stays independent of T beyond the input itself); steps are cast as they are used."""
        return check_sequence_counts(inputs, self.config.n_inputs)

    # -- parameters -------------------------------------------------------------------------
    def parameters_changed(self, delays: bool = False) -> None:
        """Declare that weights or delays were changed in place (needed mid-sample; :meth:`reset` picks up
        writes between samples).  Bumps ``delay_version``: at the next step the push's copies are
        refreshed, the future-current rings discarded and the spikes in flight pulled with the new
        parameters, as the pull model delivers them.  With ``delays`` the integer delays are re-derived
        from the real ones (clipped to [0, max_delay_steps]); returns the number clipped."""
        clipped = 0
        if delays:
            for proj in (p for _, _, p in self.params.projections() if p.delay.size):   # else they stay 0
                clipped += refresh_delay_steps(proj, self.config.max_delay_steps)
        self.delay_version += 1
        return clipped

    def projection_specs(self):
        """Yield (layer, kind, Projection, ProjectionSpec or None) of every projection."""
        for (l, kind, proj), spec in zip(self.params.projections(),
                                         (getattr(s, kind) for s in self.layer_specs for kind in PROJECTION_KINDS)):
            yield l, kind, proj, spec

    def requantize(self) -> int:
        """Recompute the effective weights and delays from the shadow arrays (quantized projections;
        conv taps are re-expanded everywhere) after the learned arrays changed; returns the number of
        shadow delays clipped to [0, max_delay_steps].  Follow with :meth:`parameters_changed`."""
        return sum(Q.quantize_projection(proj, spec, self.config.max_delay_steps)
                   for _, _, proj, spec in self.projection_specs())

    def _build_event_index(self) -> None:
        """CSC views of every projection (connectivity is fixed; rebuilt when ``params`` is replaced)."""
        p, c = self.params, self.config
        self._events = tuple(
            (event_index(lp.feedforward, spec.n_pre, c.max_delay_steps),
             event_index(lp.recurrent, spec.n_neurons if spec.recurrent is not None else 0, c.max_delay_steps))
            for lp, spec in zip(p.layers, self.layer_specs))
        self._event_params = p
        self._bound_state = None
        self._targets_stale = False
        self._set_budgets()

    def _set_budgets(self) -> None:
        """Push a step only while it is estimated to cost less than pulling it (always at batch 1).

        The serial pull's cost is the yardstick even with threads (docs/benchmarks.md, tuning constants)."""
        B, c = self.batch_size, self.config
        layer_events = []
        for lp, events in zip(self.params.layers, self._events):
            # a spike pushed at step q arrives by q + window - 1 (delays are clipped to max_delay_steps)
            windows = tuple((c.max_delay_steps if proj.delay.size else 0) + 1 for proj in lp)
            budgets = tuple(np.inf if B == 1 else K.events.pull_cost(proj.pre.size, B) for proj in lp)
            layer_events.append(_LayerEvents(events, windows, budgets))
        self._layer_events = tuple(layer_events)
        self._bound_state = None

    def _sync_events(self, t: int) -> None:
        """Before step ``t``: after a change, :meth:`_discard_future`; after a reset, the push's targets."""
        if self._future_version != self.delay_version or self.params is not self._event_params:
            self._discard_future(t)
        elif self._targets_stale:
            self._refresh_event_copies(weights=False)

    def _discard_future(self, t: int) -> None:
        """Parameters changed before step ``t``: drop the future rings, pull the spikes still in flight."""
        if self.params is not self._event_params:
            self._build_event_index()
        self._future_version = self.delay_version
        self._refresh_event_copies()
        if t == 0:
            return                        # nothing pushed since the reset: the rings are empty
        for ls in self.state.layers:
            ls.future[...] = 0.0
        self._pull_in_flight(t)

    def _pull_in_flight(self, t: int) -> None:
        """Flag the steps before ``t`` whose spikes may still be in flight: later steps pull them."""
        n = self.n_slots
        for ls, lev in zip(self.state.layers, self._layer_events):
            for k, (flags, window) in enumerate(zip((ls.pulled_ff, ls.pulled_rec), lev.windows)):
                if window > 1 and flags.size:
                    for q in range(max(0, t - window + 1), t):
                        flags[q % n] = 1
                    ls.pull_until[k] = max(int(ls.pull_until[k]), t - 1 + window)

    def _refresh_event_copies(self, weights: bool = True, targets: bool = True) -> None:
        """Copy the current weights and/or delays into the event indices (CSC order)."""
        for lp, events in zip(self.params.layers, self._events):
            for proj, index in zip(lp, events):
                refresh_event_copies(index, proj, weights, targets)
        self._targets_stale = self._targets_stale and not targets

    def projection(self, which: str, layer: int = 0) -> Projection:
        """The ``"feedforward"`` (alias ``"input"`` for layer 0) or ``"recurrent"`` projection of ``layer``."""
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < len(self.layer_specs):
            raise OnlineDelayError(f"layer={layer!r} is unknown; the network has layers 0..{len(self.layer_specs) - 1}")
        if which == "input" and layer == 0:
            which = "feedforward"
        if which not in PROJECTION_KINDS:
            raise OnlineDelayError(f"projection {which!r} is unknown; choose 'input', 'feedforward' or 'recurrent'")
        return self.params.layers[layer][PROJECTION_KINDS.index(which)]

    def set_delays(self, which: str, delays, layer: int = 0) -> None:
        """Set the real delays of a projection (steps): ``which`` is ``"input"`` / ``"feedforward"`` or
        ``"recurrent"``, of hidden layer ``layer``.

        ``delays`` has shape (n_delays,): one per synapse (synaptic) or per presynaptic unit
        (axonal).  Values must lie in [0, max_delay_steps].  With quantized delays they set the
        shadow delays; the forward pass uses their grid values.
        """
        proj = self.projection(which, layer)
        arr = checked_delays(delays, proj.delay.shape, self.config.max_delay_steps, which)
        if proj.delay_offset.size:             # quantized: the shadow delays, then their grid values
            proj.delay_shadow[:] = arr
            self.requantize()
        else:
            proj.delay[:] = arr
        self.parameters_changed(delays=True)

    # -- segments (segments.py) -------------------------------------------------------------
    def segment_index(self):
        """Layer 0's feedforward :class:`EventIndex` with up-to-date copies, for a segment from step
        ``t``: the future rings are emptied (a segment recomputes every spike arriving in it)."""
        if self._future_version != self.delay_version or self.params is not self._event_params:
            self._discard_future(self.t)
        for ls in self.state.layers if self.t > 0 else ():      # at step 0 nothing was pushed since the reset
            ls.future[...] = 0.0
        return self._layer_events[0].events[0]

    def event_index(self, layer: int, kind: int):
        """The push's CSC view of projection ``kind`` (0 ff, 1 recurrent) of ``layer`` (targets: at a step)."""
        if self.params is not self._event_params:
            self._build_event_index()
        return self._events[layer][kind]

    def segment_done(self, t_end: int) -> None:
        """Steps before ``t_end`` were advanced by a segment (nothing pushed): later steps pull what is in flight."""
        self.state.t[0] = t_end
        self._pull_in_flight(t_end)

    def parameter_counts(self) -> dict:
        """Learnable weights and delays per projection and readout (:func:`projections.parameter_counts`)."""
        return parameter_counts(self.params)

    def fan_out(self) -> tuple:
        """Outgoing synapses per input and per hidden neuron (:func:`projections.fan_out`)."""
        return fan_out(self.params, self.config.n_inputs, self.config.n_outputs, self.readout_offsets)

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Deep copy of parameters and state (rings, future-current rings and step counter included)."""
        in_sync = self._future_version == self.delay_version and self.params is self._event_params
        return {"params": copy_tuple(self.params), "state": copy_tuple(self.state), "future_in_sync": in_sync}

    def restore(self, snap: dict) -> None:
        """Restore a :meth:`snapshot` in place (shapes must match)."""
        if snap["state"].layers[0].hist_ff.shape != self.state.layers[0].hist_ff.shape:
            self.state = copy_tuple(snap["state"])
            self.n_slots = self.state.layers[0].hist_ff.shape[0]
        else:
            assign_tuple(self.state, snap["state"])
        self.segments.forget()
        rebuild = any(not np.array_equal(a, b) for (name, a), (_, b) in zip(self.params.arrays(),
                                                                           snap["params"].arrays())
                      if name.endswith(("/indptr", "/pre")))
        assign_tuple(self.params, snap["params"])
        if rebuild:
            self._build_event_index()
        else:
            self._refresh_event_copies()
        self._set_budgets()
        self.parameters_changed()
        if snap.get("future_in_sync", False):     # the restored rings were built with the restored parameters
            self._future_version = self.delay_version


PARALLEL_PULL_WORK = 1 << 20      # synapses x batch of one pull below which the serial build runs
_FAST_COUNTS = "bBhHiIlLqQfd"     # dtype.char of the counts :meth:`Network.step` checks in a kernel
_forward_step = K.forward_step
