"""Sources: where the bytes (or items) of a stream come from -- a file, stdin, a TCP listener,
an SHD-layout HDF5 file -- and label files merged into the items by time.

A TCP client is one session (a sample); clients are served one at a time.  A client that sends
nothing for ``recv_timeout_s`` seconds (default 60) is disconnected, so an idle client cannot
block the next one: its session ends with reason ``"timeout"`` (a client that hangs up:
``"disconnect"``).  Live feeds that may be silent longer send ``tick`` records meanwhile.
"""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path

import numpy as np

from ..datasets import load_dataset
from ..errors import check_choice, check_int, check_positive
from ..evaluate import map_labels
from .parsers import make_parser
from .protocol import TIME_UNITS, StreamError, StreamOptionError, check_option

__all__ = ["FileSource", "StdinSource", "TcpSource", "Hdf5Source", "open_source", "source_items",
           "read_label_file", "merge_labels"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class FileSource:
    """A text or binary file read in chunks (one session)."""

    replayable = True

    def __init__(self, path, chunk_bytes: int = 1 << 16):
        self.path = Path(path)
        if not self.path.is_file():
            raise StreamOptionError("input", f"input file {self.path} does not exist")
        self.chunk_bytes = chunk_bytes

    def sessions(self):
        """Yields one (name, iterator of byte chunks)."""
        def chunks():
            with open(self.path, "rb") as f:
                while True:
                    data = f.read(self.chunk_bytes)
                    if not data:
                        return
                    yield data
        yield str(self.path), chunks()


class StdinSource:
    """Standard input (or another binary stream), read as bytes arrive (one session)."""

    replayable = False

    def __init__(self, stream=None, chunk_bytes: int = 1 << 16):
        self.stream, self.chunk_bytes = stream, chunk_bytes

    def sessions(self):
        stream = self.stream if self.stream is not None else sys.stdin.buffer
        read = getattr(stream, "read1", stream.read)      # read1: what has arrived, without waiting for a full chunk

        def chunks():
            while True:
                data = read(self.chunk_bytes)
                if not data:
                    return
                yield data
        yield "stdin", chunks()


class TcpSource:
    """A TCP listener; clients are served one at a time, each one a session (a sample).

    Parameters
    ----------
    host : str, address to bind (default loopback ``127.0.0.1``; anything else must be asked for)
    port : int, 0 picks a free port (see ``address``)
    max_clients : int or None, stop after this many clients
    accept_timeout_s : float or None, stop when no client connects for this long
    recv_timeout_s : float or None, disconnect a client that sends nothing for this long (None: wait)

    Attributes
    ----------
    end_reason : str, why the last session ended: "disconnect" or "timeout"
    """

    replayable = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_clients: int | None = None,
                 accept_timeout_s: float | None = None, recv_timeout_s: float | None = 60.0,
                 chunk_bytes: int = 1 << 16):
        check_option(check_int, "port", port, 0, 65535)
        self.max_clients = check_option(check_int, "max_clients", max_clients, 1, allow_none=True)
        self.accept_timeout_s = check_option(check_positive, "accept_timeout_s", accept_timeout_s, allow_none=True)
        self.recv_timeout_s = check_option(check_positive, "recv_timeout_s", recv_timeout_s, allow_none=True)
        self.end_reason = "disconnect"
        self.chunk_bytes = chunk_bytes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(1)
        except OSError as err:
            self._sock.close()
            raise StreamOptionError("input", f"cannot listen on {host}:{port} ({err})") from None
        self.address = self._sock.getsockname()[:2]
        self.clients = 0

    def sessions(self):
        """Yields (peer, iterator of byte chunks) per client until max_clients or the accept timeout."""
        try:
            while self.max_clients is None or self.clients < self.max_clients:
                self._sock.settimeout(self.accept_timeout_s)
                try:
                    conn, peer = self._sock.accept()
                except TimeoutError:
                    return
                self.clients += 1
                yield f"{peer[0]}:{peer[1]}", self._chunks(conn)
        finally:
            self.close()

    def _chunks(self, conn):
        self.end_reason = "disconnect"
        with conn:
            conn.settimeout(self.recv_timeout_s)
            while True:
                try:
                    data = conn.recv(self.chunk_bytes)
                except TimeoutError:
                    self.end_reason = "timeout"
                    return
                except OSError:                # ConnectionError included
                    return
                if not data:
                    return
                yield data

    def close(self) -> None:
        self._sock.close()


class Hdf5Source:
    """An SHD-layout file replayed sample by sample in time order (label, events, end)."""

    replayable = True

    def __init__(self, path, sample: int | None = None):
        self.path = Path(path)
        self.sample = sample

    def items(self, runner):
        """Yields the items of the chosen sample(s) for a :class:`StreamRunner`; labels mapped to the
        model's classes by name."""
        ds = load_dataset(self.path)
        if ds.n_channels != runner.n_channels:
            raise StreamError(f"{self.path}: {ds.n_channels} channels; the model takes {runner.n_inputs} inputs "
                              f"x pool {runner.pool} = {runner.n_channels} channels")
        if self.sample is not None:
            if isinstance(self.sample, bool) or not isinstance(self.sample, (int, np.integer)) \
                    or not 0 <= self.sample < len(ds):
                raise StreamOptionError("sample", f"sample={self.sample!r} is not allowed; {self.path} has "
                                                  f"samples 0 .. {len(ds) - 1}")
            indices = [int(self.sample)]
        else:
            indices = range(len(ds))
        try:
            labels = map_labels(ds.labels, ds.class_names, runner.class_names, str(self.path))
        except ValueError:
            labels = None
        for i in indices:
            yield ("label", None if labels is None else int(labels[i]))
            t, u = ds.events(i)
            if t.size:
                yield ("events", t, u)
            yield ("end", "end")


def open_source(spec: str, *, input_format: str = "auto", host: str = "127.0.0.1", sample: int | None = None,
                max_clients: int | None = None, accept_timeout_s: float | None = None,
                recv_timeout_s: float | None = 60.0):
    """A source from ``--input``: ``-`` (stdin), ``tcp:PORT`` (listener on ``host``), or a file path."""
    check_option(check_choice, "input_format", input_format, ("auto", "text", "binary", "hdf5"))
    if spec == "-":
        if input_format == "hdf5":
            raise StreamOptionError("format", "an HDF5 file cannot be read from stdin; give its path")
        return StdinSource()
    if spec.startswith("tcp:"):
        port = spec[4:]
        if not port.isdigit() or not port.isascii():
            raise StreamOptionError("input", f"input={spec!r}: expected tcp:PORT (the host is --host, "
                                             f"default 127.0.0.1)")
        if input_format == "hdf5":
            raise StreamOptionError("format", "an HDF5 file cannot be read from a socket; give its path")
        if int(port) > 65535:
            raise StreamOptionError("input", f"input={spec!r}: port {port} is not in 0 .. 65535")
        return TcpSource(host, int(port), max_clients=max_clients, accept_timeout_s=accept_timeout_s,
                         recv_timeout_s=recv_timeout_s)
    path = Path(spec)
    if not path.is_file():
        raise StreamOptionError("input", f"input {spec!r} is not '-', tcp:PORT or an existing file")
    if input_format == "auto":
        with open(path, "rb") as f:
            head = f.read(8)
        input_format = "hdf5" if head == _HDF5_SIGNATURE else "auto"
    if input_format == "hdf5":
        return Hdf5Source(path, sample)
    if sample is not None:
        raise StreamOptionError("sample", "sample is only for HDF5 input")
    return FileSource(path)


def read_label_file(path, time_unit: str):
    """(times_s (n,) float64 sorted, labels list) from lines ``TIME LABEL``."""
    divisor = TIME_UNITS[time_unit]
    times, labels = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        try:
            t = float(parts[0]) / divisor
            if len(parts) != 2 or not math.isfinite(t) or t < 0:
                raise ValueError
        except ValueError:
            raise StreamOptionError("labels", f"{path}:{number}: expected 'TIME LABEL', got {line!r}") from None
        times.append(t)
        labels.append(parts[1].strip())
    order = np.argsort(np.array(times), kind="stable")
    return np.array(times)[order], [labels[i] for i in order]


def merge_labels(items, times, labels):
    """Insert ("label", x) items where the feed's time reaches each change of a label file."""
    k = 0
    for item in items:
        if k < len(times) and item[0] == "events":
            t, u = item[1], item[2]
            start = 0
            while k < len(times) and start < t.size:
                cut = start + int(np.searchsorted(t[start:], times[k], side="left"))
                if cut >= t.size:
                    break
                if cut > start:
                    yield ("events", t[start:cut], u[start:cut])
                yield ("label", labels[k])
                k += 1
                start = cut
            if start < t.size:
                yield ("events", t[start:], u[start:])
            continue
        if item[0] == "tick":
            while k < len(times) and times[k] <= item[1]:
                yield ("label", labels[k])
                k += 1
        yield item


def source_items(source, runner, input_format, time_unit, max_line_bytes, max_record_events, log):
    """The items of a source, session after session (an ``end`` closes each TCP client's)."""
    if isinstance(source, Hdf5Source):
        yield from source.items(runner)
        return
    for name, chunks in source.sessions():
        if isinstance(source, TcpSource):
            log(f"client {name} connected")
        parser = make_parser(input_format, time_unit, max_line_bytes, max_record_events)
        for data in chunks:
            yield from parser.feed(data)
        yield from parser.close()
        if isinstance(source, TcpSource):
            if source.end_reason == "timeout":
                log(f"client {name} sent nothing for {source.recv_timeout_s:g} s: disconnected")
            else:
                log(f"client {name} disconnected")
            yield ("end", source.end_reason)
