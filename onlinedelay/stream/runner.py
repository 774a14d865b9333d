"""The network side of a stream: queued steps -> readouts, votes, and online adaptation.

Per step (``x`` the pooled counts, ``y`` the readout; spec sections 2-4)::

    y = net.step(x);   p = softmax(y) (float64);   prediction = argmax p
    vote = argmax sum_{segment steps s >= loss_start_step} p^s     (the offline prediction rule)

Online adaptation (``adapt=True``): the model's rule (its ``learning_config``, else
:class:`LearningConfig` defaults; the optimizer state of a checkpoint is restored) runs after
every step with the label in effect, loss weight ``1 / (n_steps - loss_start_step)`` on segment
steps ``>= loss_start_step`` (``n_steps`` of the training run) and 0 without a label.  Parameters
are updated every ``update_every_steps`` steps (default: the learning config's
``update_every_steps`` for ``update="online"``, else ``n_steps``) and at every reset -- only when
a labelled step contributed, so an unlabelled feed leaves the model untouched.  An update that
makes a parameter NaN or inf is undone whole (network and learner snapshots, optimizer state
included).  Memory is fixed (traces and rings do not grow with the stream).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..config import LearningConfig, RunConfig
from ..errors import check_int
from ..io import LoadedModel, load_model, restore_optimizer, save_model
from ..learning import ThreeFactorLearner
from .binning import Binner
from .protocol import check_option
from .results import LatencyHistogram, SegmentResult, StepResult, softmax

__all__ = ["StreamRunner"]

_SCALARS = ("_steps_run", "_segment", "_vote_steps", "_segment_label", "_since_apply", "_labelled_since_apply",
            "updates", "updates_reverted", "labelled_steps", "segments_closed", "segments_labelled",
            "segments_correct")


def _float_arrays(tup):
    """Every floating array of a (nested) tuple of arrays, such as a network's parameters."""
    for a in tup:
        if isinstance(a, tuple):
            yield from _float_arrays(a)
        elif isinstance(a, np.ndarray) and a.dtype.kind == "f":
            yield a


class StreamRunner:
    """A trained network run one step at a time on a stream of raw spike events.

    Parameters
    ----------
    model : path of a model file, or a :class:`~onlinedelay.io.LoadedModel` (its network is used
        and changed in place)
    adapt : bool, keep learning online from labels (see the module docstring)
    learning_config : LearningConfig or None, the rule for ``adapt`` (default: the model's, else defaults)
    update_every_steps : int or None, steps between parameter updates when adapting
    on_backwards : "drop" (count and skip) or "fail" (raise :class:`StreamError`)
    reset_on_gap_ms : float or None, reset the state after this much silence (ms)
    max_jump_s : float or None, reject events more than this far ahead of the clock (s); None: no limit
    origin : "zero" (times are measured from 0) or "first" (the first event of a sample is its time 0)
    pool : int or None, channels summed per input (default: the model's training ``pool``, else 5)
    threads : int, threads for the synapse kernels
    pad_to_steps : int or None, an ended sample is padded with silent steps to this many steps
        (default: the model's training ``n_steps``, as offline evaluation runs it; 0: no padding)
    max_silent_steps : int or None, steps run of a stretch without events; the rest are skipped
        (default: the model's ``n_steps``; 0: run every silent step)

    Examples
    --------
    >>> runner = StreamRunner("best.h5")                         # doctest: +SKIP
    >>> runner.push([0.001, 0.012], [350, 351])                  # doctest: +SKIP
    >>> [r.prediction for r in runner.poll()]                    # doctest: +SKIP
    [7]
    """

    def __init__(self, model, *, adapt: bool = False, learning_config: LearningConfig | None = None,
                 update_every_steps: int | None = None, on_backwards: str = "drop",
                 reset_on_gap_ms: float | None = None, max_jump_s: float | None = 3600.0, origin: str = "zero",
                 pool: int | None = None, threads: int = 1, pad_to_steps: int | None = None,
                 max_silent_steps: int | None = None):
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self.model = loaded
        self.net = net = loaded.net
        self.class_names = list(loaded.class_names)
        training = loaded.training or {}
        self.run_config = RunConfig.from_dict(training["run"]) if isinstance(training.get("run"), dict) else RunConfig()
        self.pool = check_option(check_int, "pool", self.run_config.pool if pool is None else pool, 1)
        if learning_config is not None and not isinstance(learning_config, LearningConfig):
            raise TypeError(f"learning_config must be a LearningConfig, got {type(learning_config).__name__}")
        c = net.config
        self.n_inputs, self.n_outputs = c.n_inputs, c.n_outputs
        self.dt_ms = c.dt_ms
        n_steps = self.run_config.n_steps
        self.binner = Binner(c.n_inputs, self.pool, c.dt_ms, origin=origin, on_backwards=on_backwards,
                             reset_on_gap_ms=reset_on_gap_ms, max_jump_s=max_jump_s,
                             pad_to_steps=n_steps if pad_to_steps is None else pad_to_steps,
                             max_silent_steps=n_steps if max_silent_steps is None else max_silent_steps)
        self.n_channels = self.binner.n_channels
        lc = learning_config or loaded.learning_config or LearningConfig()
        self.learning_config = lc
        self.loss_start_step = lc.loss_start_step
        self.learner = None
        net.set_threads(threads)
        if adapt:
            self.learner = ThreeFactorLearner(net, lc, seed=self.run_config.seed)    # before reset: may grow rings
            restore_optimizer(self.learner, loaded.optimizer)
            default_every = lc.update_every_steps if lc.update == "online" else n_steps
            self.update_every_steps = check_option(check_int, "update_every_steps",
                                                   update_every_steps or default_every, 1)
            self._loss_weight = 1.0 / max(1, n_steps - lc.loss_start_step)
        else:
            self.update_every_steps = None
            self._loss_weight = 0.0
        net.reset(batch_size=1)
        if self.learner is not None:
            self.learner.reset()
        self._silence = np.zeros(c.n_inputs, np.int64)
        self._labels = np.full(1, -1, np.int64)
        self._steps_run = 0
        self._segment = 0
        self._votes = np.zeros(c.n_outputs)
        self._vote_steps = 0
        self._segment_label = -1
        self._since_apply = 0
        self._labelled_since_apply = False
        self.latency = LatencyHistogram()
        self.updates = 0
        self.updates_reverted = 0
        self.labelled_steps = 0
        self.segments_closed = 0
        self.segments_labelled = 0
        self.segments_correct = 0
        self._warm_up()

    def _warm_up(self) -> None:
        """Load every kernel of the per-step path (step, learning, update, flush) before the first timed
        step, then put the state back exactly (a compiled-and-cached kernel still loads on first call)."""
        snap = self.snapshot()
        self._run_step(0, None, 0, -1, 0.0)
        if self.learner is not None:
            self._labelled_since_apply = True
            self._apply()
            self.learner.flush()
        self.restore(snap)

    # -- the feed side (see binning.py) ---------------------------------------------------------------
    @property
    def open_step(self) -> int | None:
        """Clock index of the step being filled (None before a segment's first event)."""
        return self.binner.open

    @property
    def clock_s(self) -> float | None:
        """The feed time reached in this sample, seconds (None before its first event or tick)."""
        return self.binner.clock_s

    @property
    def origin_s(self) -> float | None:
        """Feed time of this sample's step 0, seconds (None with origin "first" before its first event)."""
        return self.binner.origin_s

    @property
    def queued_steps(self) -> int:
        """Completed steps waiting for :meth:`step` / :meth:`poll`."""
        return self.binner.queued_steps

    @property
    def steps_run(self) -> int:
        """Steps this runner has run."""
        return self._steps_run

    @property
    def adapting(self) -> bool:
        """Whether the runner learns online (``adapt=True``)."""
        return self.learner is not None

    @property
    def events_accepted(self) -> int:
        return self.binner.events_accepted

    @property
    def rejected(self) -> dict:
        """Input rejected so far, by reason (:data:`~onlinedelay.stream.REJECT_REASONS`)."""
        return self.binner.rejected

    @property
    def gap_resets(self) -> int:
        return self.binner.gap_resets

    def step_of(self, times_s) -> np.ndarray:
        """Clock step index of each time (seconds); the binning rule of :mod:`onlinedelay.stream.binning`."""
        return self.binner.step_of(times_s)

    def count_rejected(self, reason: str, n: int = 1) -> None:
        """Count ``n`` pieces of input rejected by a reader for ``reason`` (one of :data:`REJECT_REASONS`)."""
        self.binner.count_rejected(reason, n)

    def push(self, times_s, units) -> int:
        """Bin raw events; completed steps are queued for :meth:`step` / :meth:`poll`.

        Parameters
        ----------
        times_s : array, shape (n,), float, seconds on the feed clock, non-decreasing
        units : array, shape (n,), int, raw channels 0 .. n_channels-1 (before pooling)

        Returns
        -------
        int, events accepted; the others are counted in ``rejected`` by reason

        Raises
        ------
        StreamError with ``on_backwards="fail"`` at the first event going backwards (the events
        before it are kept); ValueError for arrays of different lengths or non-numeric dtype
        """
        return self.binner.push(times_s, units)

    def advance(self, time_s: float) -> None:
        """The feed's clock reached ``time_s`` (seconds) with no event: completes the steps that end by then.

        Bad times are counted like events' (``nan_time``, ``negative_time``, ``backwards``, ``time_jump``).
        """
        self.binner.advance(time_s)

    def close_steps_before(self, index: int) -> None:
        """Complete every step with clock index < ``index`` without moving the clock (real-time pacing)."""
        self.binner.close_steps_before(index)

    def set_label(self, label) -> bool:
        """Set the target class: an index, a class name, or -1 / None / "-" / "none" for no target.

        Takes effect from the step being filled if it holds no event yet, else from the next step.
        Returns False (and counts ``bad_label``) for an unknown label.
        """
        value = self._resolve_label(label)
        if value is None:
            self.binner.count_rejected("bad_label")
            return False
        self.binner.set_label(value)
        return True

    def _resolve_label(self, label):
        if label is None:
            return -1
        if isinstance(label, (bytes, bytearray)):
            label = label.decode("utf-8", "replace")
        if isinstance(label, str):
            text = label.strip()
            if text in ("-", "none", "-1"):
                return -1
            if text in self.class_names:
                return self.class_names.index(text)
            lowered = [n.lower() for n in self.class_names]
            if text.lower() in lowered:
                return lowered.index(text.lower())
            try:
                label = int(text)
            except ValueError:
                return None
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            return None
        label = int(label)
        return label if -1 <= label < self.n_outputs else None

    def end_sample(self, reason: str = "end") -> None:
        """End of a sample: complete the partial step, pad it to ``pad_to_steps``, queue a reset,
        restart the clock at the origin."""
        self.binner.end_sample(reason)

    def finish(self) -> None:
        """End of the stream: like :meth:`end_sample` (reason ``"eof"``); then :meth:`poll` the rest."""
        self.binner.end_sample("eof")

    # -- network side ------------------------------------------------------------------------------
    def step(self):
        """Run the next queued step; returns its :class:`StepResult`, a :class:`SegmentResult` when a
        reset closes a segment, or None when nothing is queued."""
        while True:
            entry = self.binner.take()
            if entry is None:
                return None
            if entry[0] == "step":
                return self._run_step(*entry[1:])
            result = self._reset(entry[1])
            if result is not None:
                return result

    def poll(self) -> list:
        """Run every queued step; returns their results in order (see :meth:`step`)."""
        out = []
        while (result := self.step()) is not None:
            out.append(result)
        return out

    def _run_step(self, index, frame, n_events, label, origin_s):
        start = time.perf_counter_ns()
        y = self.net.step(self._silence if frame is None else frame)[0]
        segment_step = self.net.t - 1
        if self.learner is not None:
            self._learn(label, segment_step)
        probs = softmax(y)
        if segment_step >= self.loss_start_step:
            self._votes += probs
            self._vote_steps += 1
        if label >= 0:
            self._segment_label = label
        prediction = int(np.argmax(probs))
        vote = int(np.argmax(self._votes)) if self._vote_steps else None
        latency = time.perf_counter_ns() - start
        self.latency.add(latency)
        result = StepResult(self._steps_run, self._segment, index, segment_step,
                            origin_s + (index + 1) * self.dt_ms / 1000.0, n_events, label, y, probs, prediction,
                            vote, latency)
        self._steps_run += 1
        return result

    def _learn(self, label: int, segment_step: int) -> None:
        weight = self._loss_weight if (label >= 0 and segment_step >= self.loss_start_step) else 0.0
        self._labels[0] = label
        self.learner.step(self._labels, weight)
        if weight > 0:
            self._labelled_since_apply = True
            self.labelled_steps += 1
        self._since_apply += 1
        if self._since_apply >= self.update_every_steps:
            self._apply()

    def _apply(self) -> None:
        """One optimizer step if a labelled step contributed; undone if it makes anything non-finite."""
        self._since_apply = 0
        if not self._labelled_since_apply:
            self.learner.zero_grad()
            return
        self._labelled_since_apply = False
        net_snap, learner_snap = self.net.snapshot(), self.learner.snapshot()
        self.learner.apply()
        if all(np.isfinite(a).all() for a in _float_arrays(self.net.params)):
            self.updates += 1
            return
        self.net.restore(net_snap)
        self.learner.restore(learner_snap)
        self.learner.zero_grad()              # the gradients of the undone update are spent, as after apply()
        self.updates_reverted += 1
        if self.updates_reverted == 1:
            warnings.warn("an online update produced NaN or inf and was reverted (warned once); "
                          "lower the learning rates", RuntimeWarning, stacklevel=3)

    def _reset(self, reason: str):
        net = self.net
        if net.t == 0:
            return None
        if self.learner is not None:
            self.learner.flush()
            self._apply()
        steps = net.t
        prediction = int(np.argmax(self._votes)) if self._vote_steps else None
        result = SegmentResult(self._segment, steps, prediction, self._segment_label, reason)
        self.segments_closed += 1
        if self._segment_label >= 0 and prediction is not None:
            self.segments_labelled += 1
            self.segments_correct += int(prediction == self._segment_label)
        net.reset()
        if self.learner is not None:
            self.learner.reset()
        self._votes[:] = 0.0
        self._vote_steps = 0
        self._segment_label = -1
        self._segment += 1
        return result

    # -- state ------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Deep copy of the whole stream state: network (parameters, state, rings), learner (traces,
        gradients, optimizer), binning position, queued steps, counters.  See :meth:`restore`."""
        learner = None if self.learner is None else self.learner.snapshot()
        return {"format": "onlinedelay-stream", "version": 2, "net": self.net.snapshot(), "learner": learner,
                "binner": self.binner.snapshot(), "votes": self._votes.copy(), "latency": self.latency.copy(),
                "scalars": {name: getattr(self, name) for name in _SCALARS}}

    def restore(self, snap: dict) -> None:
        """Put a :meth:`snapshot` back (into this runner or a fresh one built from the same model and
        options): the stream then continues bit-identically."""
        if not isinstance(snap, dict) or snap.get("format") != "onlinedelay-stream" or snap.get("version") != 2:
            raise ValueError("snap is not a StreamRunner.snapshot()")
        if (snap["learner"] is None) != (self.learner is None):
            raise ValueError(f"snap was taken with adapt={snap['learner'] is not None}; this runner has "
                             f"adapt={self.learner is not None}")
        self.binner.restore(snap["binner"])
        self.net.restore(snap["net"])
        if self.learner is not None:
            self.learner.restore(snap["learner"])
        self._votes[...] = snap["votes"]
        self.latency = snap["latency"].copy()
        for name, value in snap["scalars"].items():
            setattr(self, name, value)

    def summary(self) -> dict:
        """Counters: steps, segments, events accepted / rejected by reason, latency, adaptation."""
        b = self.binner
        out = {"steps": self._steps_run, "segments": self.segments_closed, "events_accepted": b.events_accepted,
               "events_rejected": dict(b.rejected), "rejected_total": int(sum(b.rejected.values())),
               "latency_us": self.latency.summary(), "gap_resets": b.gap_resets, "skipped_steps": b.skipped_steps,
               "segment_accuracy": (self.segments_correct / self.segments_labelled
                                    if self.segments_labelled else None),
               "labelled_segments": self.segments_labelled}
        out["adapt"] = None if self.learner is None else {
            "updates": self.updates, "reverted": self.updates_reverted, "labelled_steps": self.labelled_steps,
            "update_every_steps": self.update_every_steps}
        return out

    def save(self, path) -> None:
        """Write the (adapted) model atomically, with its optimizer state when adapting."""
        training = dict(self.model.training or {})
        training.setdefault("run", self.run_config.to_dict())
        training["stream"] = {"steps": self._steps_run, "updates": self.updates,
                              "labelled_steps": self.labelled_steps, "source_model": str(self.model.path)}
        save_model(path, self.net, self.class_names, self.learner, training)
