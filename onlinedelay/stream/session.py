"""Glue: a source's items fed to a runner, results written, the adapted model saved, a replay paced."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import check_choice, check_int
from .output import OutputWriter
from .protocol import MAX_RECORD_EVENTS, TIME_UNITS, StreamError, StreamOptionError, check_option
from .runner import StreamRunner
from .sources import TcpSource, merge_labels, open_source, read_label_file, source_items

__all__ = ["run_stream"]


class _Session:
    """Feeds items to a runner, writes results, saves, paces a replay."""

    def __init__(self, runner, writer, save_path, save_every, realtime, clock, sleep):
        self.runner, self.writer = runner, writer
        self.save_path, self.save_every = save_path, save_every
        self.realtime, self.clock, self.sleep = realtime, clock, sleep
        self.saves = 0
        self._last_save_step = 0
        self._wall0 = self._feed0 = None

    def handle(self, item) -> None:
        runner, kind = self.runner, item[0]
        if kind == "events":
            if self.realtime:
                self._paced_push(item[1], item[2])
            else:
                runner.push(item[1], item[2])
        elif kind == "label":
            runner.set_label(item[1])
        elif kind == "tick":
            if self.realtime:
                self._wait_until(item[1])
            runner.advance(item[1])
        elif kind == "end":
            runner.end_sample(item[1])
            self._wall0 = self._feed0 = None
        elif kind == "reject":
            runner.count_rejected(item[1], item[2])
        self.drain()

    def _wait_until(self, feed_time: float) -> None:
        if self._wall0 is None:
            self._wall0 = self.clock()
            self._feed0 = self.runner.origin_s if self.runner.origin_s is not None else feed_time
        delay = self._wall0 + (feed_time - self._feed0) - self.clock()
        if delay > 0:
            self.sleep(delay)

    def _paced_push(self, t, u) -> None:
        runner = self.runner
        if not t.size:
            return
        if runner.origin_s is None:            # origin "first": this chunk's first event is time 0
            runner.push(t[:1], u[:1])
            t, u = t[1:], u[1:]
            self._wait_until(runner.origin_s)
            if not t.size:
                return
        steps = runner.step_of(t)
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(steps)) + 1, [t.size]))
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            k = int(steps[a])
            while runner.open_step is not None and runner.open_step < k:     # steps end on the wall clock
                end = runner.open_step + 1
                self._wait_until(runner.origin_s + end * runner.dt_ms / 1000.0)
                runner.close_steps_before(end)
                self.drain()
            self._wait_until(float(t[b - 1]))          # a step's events go in once the last has arrived
            runner.push(t[a:b], u[a:b])
            self.drain()

    def drain(self) -> None:
        results = self.runner.poll()
        for result in results:
            self.writer.write(result)
        if results and hasattr(self.writer.out, "flush"):
            self.writer.out.flush()          # a live consumer sees each step when it is ready
        if self.save_every and self.runner.steps_run - self._last_save_step >= self.save_every:
            self.save()

    def save(self) -> None:
        if self.save_path is not None and self.runner.adapting:
            self.runner.save(self.save_path)
            self.saves += 1
            self._last_save_step = self.runner.steps_run


def run_stream(model, source, out, *, input_format: str = "auto", time_unit: str = "s", sample: int | None = None,
               output: str = "json", every: int = 1, top_k: int | None = None, adapt: bool = False,
               labels=None, save_path=None, save_every: int | None = None, reset_on_gap_ms: float | None = None,
               realtime: bool = False, on_backwards: str = "drop", host: str = "127.0.0.1",
               max_clients: int | None = None, accept_timeout_s: float | None = None, origin: str = "zero",
               max_jump_s: float | None = 3600.0, update_every_steps: int | None = None, threads: int = 1,
               max_line_bytes: int = 1024, max_record_events: int = MAX_RECORD_EVENTS,
               recv_timeout_s: float | None = 60.0,
               pad_to_steps: int | None = None, max_silent_steps: int | None = None, log=None,
               clock=time.monotonic, sleep=time.sleep) -> dict:
    """Stream a source through a model until it ends; returns the summary (also written by ``out``).

    Parameters
    ----------
    model : model path or LoadedModel
    source : ``"-"``, ``"tcp:PORT"``, a file path, or a source object (:class:`FileSource`,
        :class:`StdinSource`, :class:`TcpSource`, :class:`Hdf5Source`)
    out : text file object for the per-step lines (JSON lines or a table)
    input_format : "auto" (HDF5 by signature, binary by its magic, else text), "text", "binary", "hdf5"
    time_unit : "s" or "ms", times of text lines and of the label file
    sample : int or None, the one HDF5 sample to replay (None: all, in order)
    output, every, top_k : see :class:`OutputWriter`
    adapt : keep learning from labels; labels : path of a label file (lines ``TIME LABEL``)
    save_path : where the adapted model is written (atomically) every ``save_every`` steps and at the end
    reset_on_gap_ms, on_backwards, origin, max_jump_s, update_every_steps, threads, pad_to_steps,
        max_silent_steps : see :class:`StreamRunner`
    realtime : pace a file replay at wall-clock speed
    host, max_clients, accept_timeout_s, recv_timeout_s : the TCP listener (``source="tcp:PORT"``)
    max_line_bytes, max_record_events : limits of the text and binary readers
    log : callable receiving informational lines (e.g. the listening address), or None

    Returns
    -------
    dict: :meth:`StreamRunner.summary` plus ``wall_s``, ``events_per_s``, ``steps_per_s``, ``saves``,
    ``clients`` (TCP), ``error`` (why the stream stopped early, or None), ``interrupted``
    """
    log = log or (lambda line: None)
    check_option(check_choice, "time_unit", time_unit, tuple(TIME_UNITS))
    check_option(check_int, "save_every", save_every, 1, allow_none=True)
    if (save_every or save_path is not None) and not adapt:
        raise StreamOptionError("save_every" if save_every else "save", "saving needs adapt (nothing changes "
                                                                        "the model otherwise)")
    if isinstance(source, str):
        source = open_source(source, input_format=input_format, host=host, sample=sample, max_clients=max_clients,
                             accept_timeout_s=accept_timeout_s, recv_timeout_s=recv_timeout_s)
    if realtime and not getattr(source, "replayable", False):
        raise StreamOptionError("realtime", "realtime paces a file replay; live sources already arrive in real time")
    label_changes = read_label_file(labels, time_unit) if labels is not None else None
    runner = StreamRunner(model, adapt=adapt, update_every_steps=update_every_steps, on_backwards=on_backwards,
                          reset_on_gap_ms=reset_on_gap_ms, max_jump_s=max_jump_s, origin=origin, threads=threads,
                          pad_to_steps=pad_to_steps, max_silent_steps=max_silent_steps)
    if adapt and save_path is None and save_every:
        save_path = Path(runner.model.path).with_suffix(".adapted.h5")
    if adapt and save_path is None:
        log("note: the adapted model is not written (give --save PATH or --save-every N)")
    writer = OutputWriter(out, runner.class_names, output, every, top_k)
    session = _Session(runner, writer, save_path, save_every, realtime, clock, sleep)
    if isinstance(source, TcpSource):
        log(f"listening on {source.address[0]}:{source.address[1]}")
    error, interrupted = None, False
    start = time.perf_counter()
    try:
        for item in merge_labels(source_items(source, runner, input_format, time_unit, max_line_bytes,
                                              max_record_events, log), *(label_changes or ((), ()))):
            session.handle(item)
    except StreamError as err:
        error = str(err)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if isinstance(source, TcpSource):
            source.close()
    runner.finish()
    session.drain()
    writer.flush()
    if adapt and save_path is not None:
        session.save()
    wall = time.perf_counter() - start
    summary = runner.summary()
    summary.update({"wall_s": wall, "events_per_s": summary["events_accepted"] / max(wall, 1e-9),
                    "steps_per_s": summary["steps"] / max(wall, 1e-9), "saves": session.saves,
                    "save_path": None if save_path is None else str(save_path), "error": error,
                    "interrupted": interrupted})
    if isinstance(source, TcpSource):
        summary["clients"] = source.clients
    writer.summary(summary)
    return summary
