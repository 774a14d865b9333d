"""Streaming inference on a live spike feed, with optional online adaptation.

A :class:`StreamRunner` holds a trained :class:`~onlinedelay.network.Network` (and, with
``adapt=True``, a :class:`~onlinedelay.learning.ThreeFactorLearner`) and turns raw events into
per-step predictions::

    runner = StreamRunner("runs/syn/best.h5")
    runner.push(times_s, units)       # raw events: seconds, channels 0 .. n_channels-1
    for result in runner.poll():      # StepResult per completed step (SegmentResult at resets)
        ...
    runner.finish()                   # end of stream: the partial last step, then poll() again

The package, one job per module, data flowing down the list:

* :mod:`~onlinedelay.stream.protocol` -- errors, reasons for rejecting input, the binary records;
* :mod:`~onlinedelay.stream.parsers` -- bytes -> items (text lines, binary records);
* :mod:`~onlinedelay.stream.sources` -- file, stdin, TCP listener, HDF5 replay, label files;
* :mod:`~onlinedelay.stream.binning` -- items -> per-step input counts (the datasets' binning rule,
  padding of an ended sample, the bound on silent stretches);
* :mod:`~onlinedelay.stream.runner` -- steps -> readouts, votes, online adaptation;
* :mod:`~onlinedelay.stream.results`, :mod:`~onlinedelay.stream.output` -- results and their text;
* :mod:`~onlinedelay.stream.session` -- :func:`run_stream`, the loop the ``stream`` command runs.

Stream and evaluation agree: raw channels are pooled as the model was trained (``unit // pool``),
binned at its ``dt`` by the datasets' rule, and an ended sample is padded to the model's
``n_steps``, so a sample of at most ``n_steps`` steps streamed from ``origin = 0`` gives exactly
the readouts and the vote of ``infer`` on ``EventDataset.frames(i, dt_ms, n_steps, pool)`` (tested
bit for bit).  Longer samples differ on purpose: evaluation clips them at ``n_steps`` steps, the
stream runs them whole.

Bad input is never raised but counted by reason (:data:`REJECT_REASONS`): ``malformed``
(unparsable text line, unknown binary record kind, bytes between records), ``oversized_record``
(text line longer than ``max_line_bytes``, binary record of more than ``max_record_events``
events), ``truncated_record`` (a binary record cut short by the end of the feed or by the next
record's header; its complete events are kept), ``nan_time`` (NaN or infinite time),
``negative_time``, ``unknown_unit`` (unit < 0 or >= n_channels, or not a whole number),
``backwards`` (time before the feed's clock, or in a step already completed; with
``on_backwards="fail"`` the events before it are kept and :class:`StreamError` is raised),
``time_jump`` (more than ``max_jump_s`` ahead of the clock), ``bad_label``.  Rejected input never
reaches the network, and a parameter update that would produce NaN or inf is undone, so bad input
cannot corrupt a model.
"""

from .binning import Binner
from .output import OutputWriter, format_summary
from .parsers import BinaryParser, TextParser, make_parser
from .protocol import (MAGIC, REJECT_REASONS, StreamError, StreamOptionError, encode_end, encode_events,
                       encode_label, encode_tick)
from .results import SegmentResult, StepResult, softmax
from .runner import StreamRunner
from .session import run_stream
from .sources import FileSource, Hdf5Source, StdinSource, TcpSource, open_source

__all__ = ["StreamRunner", "StepResult", "SegmentResult", "StreamError", "StreamOptionError", "REJECT_REASONS",
           "TextParser", "BinaryParser", "make_parser", "FileSource", "StdinSource", "TcpSource", "Hdf5Source",
           "open_source", "run_stream", "OutputWriter", "format_summary", "softmax", "encode_events", "encode_label",
           "encode_tick", "encode_end", "MAGIC", "Binner"]
