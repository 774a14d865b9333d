"""Readers: bytes -> items, incrementally and with bounded memory.

An item is ``("events", times_s (n,) float64, units (n,) int64)`` | ``("label", value)`` |
``("tick", time_s)`` | ``("end", reason)`` | ``("reject", reason, count)``.  A reader gives the
same items however its input is cut into chunks (tested by tests/test_fuzz_stream.py).

Text format: one item per line: ``TIME UNIT`` (time in ``time_unit``: ``s`` or ``ms``), ``label K``
(class index or name; ``label -`` or ``label none`` clears it), ``tick TIME``, ``end``; blank lines
and lines starting with ``#`` are ignored.  A line of more than ``max_line_bytes`` bytes (without
its newline), whatever it holds, is skipped as one ``oversized_record``.

Binary format: see :mod:`onlinedelay.stream.protocol`.  After a bad header the reader skips to the
next magic (counted once as ``malformed``).  An EVENTS record whose payload holds a valid header
(a count larger than the events sent) ends there: its whole events before that header are kept
and it counts as one ``truncated_record``; reading goes on at the header, so no event is ever
decoded from another record's bytes.  A header that begins in the last 7 bytes of a claimed
payload is not looked for (it would cost waiting for bytes after the record); the event it
overlaps then has a time above 5e20 s or a unit of 2**24 or more and is rejected by the runner.
"""

from __future__ import annotations

import numpy as np

from ..errors import check_choice, check_int
from .protocol import (EVENT_DTYPE, HEADER, HEADER_BYTES, KIND_END, KIND_EVENTS, KIND_LABEL, KIND_TICK, MAGIC,
                       MAX_RECORD_EVENTS, NO_LABEL, TIME_F64, TIME_UNITS, check_option, valid_header_at)

__all__ = ["TextParser", "BinaryParser", "make_parser"]

_EVENT_BYTES = EVENT_DTYPE.itemsize       # 12
_MAGIC_WORD = int.from_bytes(MAGIC, "little")
_FIND_BYTES = 4096                        # payloads shorter than this are searched with bytearray.find


class TextParser:
    """Incremental reader of the text format (module docstring); bounded memory per line.

    Parameters
    ----------
    time_unit : "s" or "ms", unit of the times in the lines
    max_line_bytes : int, longer lines are skipped and counted as ``oversized_record``
    """

    def __init__(self, time_unit: str = "s", max_line_bytes: int = 1024):
        self.divisor = TIME_UNITS[check_option(check_choice, "time_unit", time_unit, tuple(TIME_UNITS))]
        self.max_line_bytes = int(check_option(check_int, "max_line_bytes", max_line_bytes, 16))
        self._buf = b""
        self._skipping = False

    def feed(self, data: bytes) -> list:
        """Parse a chunk; returns the items of its complete lines."""
        if self._skipping:
            i = data.find(b"\n")
            if i < 0:
                return []
            data = data[i + 1:]
            self._skipping = False
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        items = self._parse(lines)
        if len(self._buf) > self.max_line_bytes:     # already too long: skip to its end
            items.append(("reject", "oversized_record", 1))
            self._buf = b""
            self._skipping = True
        return items

    def close(self) -> list:
        """End of input: the last line, even without a newline."""
        rest, self._buf = self._buf, b""
        skipping, self._skipping = self._skipping, False
        return [] if skipping or not rest else self._parse([rest])

    def _parse(self, lines) -> list:
        items, times, units = [], [], []
        malformed = oversized = 0
        limit = self.max_line_bytes

        def flush():
            if times:
                items.append(("events", _as_times(times, self.divisor), _as_units(units)))
                times.clear()
                units.clear()

        for line in lines:
            if len(line) > limit:
                oversized += 1
                continue
            parts = line.split()
            if len(parts) == 2:
                try:
                    t = float(parts[0])
                    u = int(parts[1])
                except ValueError:
                    pass
                else:
                    times.append(t)
                    units.append(u)
                    continue
            if not parts or parts[0][:1] == b"#":
                continue
            word = parts[0]
            if word == b"label" and len(parts) >= 2:
                flush()
                items.append(("label", line.split(None, 1)[1].strip().decode("utf-8", "replace")))
            elif word == b"tick" and len(parts) == 2:
                try:
                    value = float(parts[1]) / self.divisor
                except ValueError:
                    malformed += 1
                    continue
                flush()
                items.append(("tick", value))
            elif word == b"end" and len(parts) == 1:
                flush()
                items.append(("end", "end"))
            else:
                malformed += 1
        flush()
        if malformed:
            items.append(("reject", "malformed", malformed))
        if oversized:
            items.append(("reject", "oversized_record", oversized))
        return items


def _as_times(values, divisor) -> np.ndarray:
    arr = np.array(values, np.float64)
    return arr / divisor if divisor != 1.0 else arr


def _as_units(values) -> np.ndarray:
    try:
        return np.array(values, np.int64)
    except OverflowError:                       # a unit beyond int64: make it an unknown unit
        return np.array([max(-1, min(v, 2 ** 62)) for v in values], np.int64)


def _events(buf, offset: int, count: int):
    arr = np.frombuffer(buf, EVENT_DTYPE, count, offset)
    item = ("events", arr["time_s"].astype(np.float64), arr["unit"].astype(np.int64))
    del arr                                   # release the view: the buffer is resized later
    return item


def _partial_magic(buf) -> int:
    """Length of the longest proper prefix of the magic that ``buf`` ends with (0 to 3)."""
    return next((k for k in (3, 2, 1) if buf.endswith(MAGIC[:k])), 0)


def _header_in(buf, start: int, stop: int) -> int:
    """First position p in [start, stop) where a valid header begins (its 8 bytes in ``buf``), else -1.

    Long ranges are searched as little-endian words at the four byte offsets (numpy: 2-3x the
    speed of ``bytearray.find`` on event payloads, measured)."""
    if stop - start < _FIND_BYTES:
        p = buf.find(MAGIC, start, stop + 3)
        while p >= 0 and not valid_header_at(buf, p):
            p = buf.find(MAGIC, p + 1, stop + 3)
        return p
    found = []
    for k in range(4):
        words = np.frombuffer(buf, "<u4", (stop + 3 - start - k) // 4, start + k)
        hits = (start + k + 4 * np.flatnonzero(words == _MAGIC_WORD)).tolist()
        del words                             # release the view: the buffer is resized later
        found += [p for p in hits if valid_header_at(buf, p)][:1]
    return min(found, default=-1)


class BinaryParser:
    """Incremental reader of the binary record format (module docstring); bounded memory.

    Parameters
    ----------
    max_record_events : int, EVENTS records with more events are skipped as ``oversized_record``
    """

    def __init__(self, max_record_events: int = MAX_RECORD_EVENTS):
        self.max_record_events = int(check_option(check_int, "max_record_events", max_record_events, 1))
        self._buf = bytearray()
        self._resyncing = False
        self._scanned = 0          # payload bytes of the record at the buffer's start already searched for a header

    def feed(self, data: bytes) -> list:
        """Parse a chunk; returns the items of its complete records."""
        buf = self._buf
        buf += data
        items, pos, n = [], 0, len(buf)
        scanned, self._scanned = self._scanned, 0
        while n - pos >= HEADER_BYTES:
            if buf[pos:pos + 4] != MAGIC:
                j = buf.find(MAGIC, pos + 1)
                self._garbage(items)
                if j < 0:
                    pos = max(pos, n - _partial_magic(buf))    # keep a possible partial magic
                    break
                pos = j
                continue
            _, kind, flags, count = HEADER.unpack_from(buf, pos)
            if kind == KIND_EVENTS and flags == 0:
                if count > self.max_record_events:
                    items.append(("reject", "oversized_record", 1))
                    self._resyncing = True             # its payload is skipped as garbage, not counted again
                    pos += 4
                    continue
                end = pos + HEADER_BYTES + _EVENT_BYTES * count
                stop = min(end, n) - 7                 # headers begin at p <= stop - 1 (8 bytes in the payload)
                cut = _header_in(buf, max(pos + HEADER_BYTES, scanned), stop)
                scanned = 0
                if cut >= 0:                           # the count exceeds the payload: the record ends here
                    whole = (cut - pos - HEADER_BYTES) // _EVENT_BYTES
                    if whole:
                        items.append(_events(buf, pos + HEADER_BYTES, whole))
                    items.append(("reject", "truncated_record", 1))
                    pos = cut
                    self._resyncing = False
                    continue
                if n < end:
                    self._scanned = max(HEADER_BYTES, stop - pos)   # the record moves to the buffer's start
                    break
                items.append(_events(buf, pos + HEADER_BYTES, count))
                pos = end
            elif kind == KIND_LABEL and flags == 0:
                items.append(("label", None if count == NO_LABEL else int(count)))
                pos += HEADER_BYTES
            elif kind == KIND_TICK and flags == 0:
                if n - pos < HEADER_BYTES + 8:
                    break
                items.append(("tick", TIME_F64.unpack_from(buf, pos + HEADER_BYTES)[0]))
                pos += HEADER_BYTES + 8
            elif kind == KIND_END and flags == 0:
                items.append(("end", "end"))
                pos += HEADER_BYTES
            else:                                      # a header of unknown kind (or flags): one bad record
                items.append(("reject", "malformed", 1))
                self._resyncing = True                 # the rest of its header is skipped without a count
                pos += 4
                continue
            self._resyncing = False
        del buf[:pos]
        return items

    def _garbage(self, items) -> None:
        if not self._resyncing:
            items.append(("reject", "malformed", 1))
            self._resyncing = True

    def close(self) -> list:
        """End of input: bytes left over are a truncated record (its complete events are kept) or garbage."""
        items = []
        buf = self._buf
        if buf and buf[:4] != MAGIC[:len(buf[:4])]:   # bytes after a bad header, perhaps then a cut record
            j = buf.find(MAGIC)
            self._garbage(items)
            del buf[:j if j >= 0 else len(buf) - _partial_magic(buf)]
        if buf:                                        # a record cut by the end of the feed
            if len(buf) >= HEADER_BYTES:
                _, kind, flags, count = HEADER.unpack_from(buf, 0)
                whole = min(count, (len(buf) - HEADER_BYTES) // _EVENT_BYTES)
                if kind == KIND_EVENTS and flags == 0 and whole:
                    items.append(_events(buf, HEADER_BYTES, whole))
            items.append(("reject", "truncated_record", 1))
        self._buf = bytearray()
        self._resyncing = False
        self._scanned = 0
        return items


class _SniffingParser:
    """Text or binary, decided by the first bytes (binary streams start with ``MAGIC``)."""

    def __init__(self, time_unit, max_line_bytes, max_record_events):
        self._args = (time_unit, max_line_bytes, max_record_events)
        self._head = b""
        self.parser = None

    def _decide(self):
        time_unit, max_line, max_events = self._args
        binary = self._head[:4] == MAGIC
        self.parser = BinaryParser(max_events) if binary else TextParser(time_unit, max_line)
        head, self._head = self._head, b""
        return self.parser.feed(head)

    def feed(self, data: bytes) -> list:
        if self.parser is not None:
            return self.parser.feed(data)
        self._head += data
        return self._decide() if len(self._head) >= 4 or b"\n" in self._head else []

    def close(self) -> list:
        items = self._decide() if self.parser is None and self._head else []
        return items + (self.parser.close() if self.parser is not None else [])


def make_parser(fmt: str, time_unit: str = "s", max_line_bytes: int = 1024,
                max_record_events: int = MAX_RECORD_EVENTS):
    """A reader for ``fmt``: "text", "binary", or "auto" (binary when the input starts with the magic)."""
    if fmt == "text":
        return TextParser(time_unit, max_line_bytes)
    if fmt == "binary":
        return BinaryParser(max_record_events)
    return _SniffingParser(time_unit, max_line_bytes, max_record_events)
