"""The stream's vocabulary: errors, reasons for rejecting input, and the binary record format.

Binary records (little-endian): a 12-byte header ``magic b"ODEV" | kind u16 | flags u16 (0) |
count u32`` and a payload:

* kind 1 EVENTS: ``count`` events of 12 bytes each, ``time f64 (seconds) | unit u32`` (packed);
* kind 2 LABEL: no payload; ``count`` is the class index, ``0xFFFFFFFF`` clears the label;
* kind 3 TICK: payload ``time f64`` (seconds): the feed's clock reached this time;
* kind 4 END: no payload; end of sample.

A header is *valid* when its magic, kind (1 to 4) and flags (0) are; its first 8 bytes tell.
No valid header can lie inside the payload of usable events (times 0 or in [1e-280, 1e20] s,
units below 2**24): its bytes would make an event's time below 2e-287 s or above 5e20 s, or its
unit 2**24 or more.  The reader (:class:`~onlinedelay.stream.parsers.BinaryParser`) relies on this
to end an EVENTS record whose count exceeds its payload at the next record's header.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import OnlineDelayError

__all__ = ["StreamError", "StreamOptionError", "REJECT_REASONS", "TIME_UNITS", "MAGIC", "HEADER_BYTES",
           "KIND_EVENTS", "KIND_LABEL", "KIND_TICK", "KIND_END", "NO_LABEL", "EVENT_DTYPE", "check_option",
           "encode_events", "encode_label", "encode_tick", "encode_end"]

REJECT_REASONS = ("malformed", "oversized_record", "truncated_record", "nan_time", "negative_time", "unknown_unit",
                  "backwards", "time_jump", "bad_label")
TIME_UNITS = {"s": 1.0, "ms": 1000.0}     # divisor turning a value in the unit into seconds

MAGIC = b"ODEV"
HEADER = struct.Struct("<4sHHI")
HEADER_BYTES = HEADER.size                # 12
KIND_EVENTS, KIND_LABEL, KIND_TICK, KIND_END = 1, 2, 3, 4
KINDS = (KIND_EVENTS, KIND_LABEL, KIND_TICK, KIND_END)
NO_LABEL = 0xFFFFFFFF
EVENT_DTYPE = np.dtype([("time_s", "<f8"), ("unit", "<u4")])     # 12 bytes, packed
TIME_F64 = struct.Struct("<d")
MAX_RECORD_EVENTS = 65536                 # what encode_events writes per record; the reader's default limit


class StreamError(OnlineDelayError):
    """The stream was stopped on purpose (``on_backwards="fail"``) or cannot be used."""


class StreamOptionError(OnlineDelayError):
    """A bad option value; ``option`` names it (``"every"``, ``"sample"`` ...)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def check_option(check, name: str, value, *args, allow_none: bool = False, **kwargs):
    """Run a shared validator of :mod:`onlinedelay.errors` on an option; returns ``value``.

    A failure raises :class:`StreamOptionError` naming ``name``; ``allow_none`` lets None through.
    """
    if value is None and allow_none:
        return None
    check(name, value, *args, error=lambda message: StreamOptionError(name, message), **kwargs)
    return value


def valid_header_at(buf, pos: int) -> bool:
    """Whether the 8 bytes at ``buf[pos:]`` start a valid header (magic, known kind, flags 0)."""
    if buf[pos:pos + 4] != MAGIC or len(buf) < pos + 8:
        return False
    kind, flags = struct.unpack_from("<HH", buf, pos + 4)
    return kind in KINDS and flags == 0


# -- writers -------------------------------------------------------------------------------------------
def encode_events(times_s, units) -> bytes:
    """EVENTS record(s) of the binary format (split into records of at most 65536 events).

    Parameters
    ----------
    times_s : array, shape (n,), float, seconds
    units : array, shape (n,), int in [0, 2**32)
    """
    t = np.asarray(times_s, np.float64).ravel()
    u = np.asarray(units).ravel()
    if t.shape != u.shape:
        raise ValueError(f"times_s {t.shape} and units {u.shape} must have the same length")
    if u.size and (u.min() < 0 or u.max() > NO_LABEL):
        raise ValueError("units must fit an unsigned 32-bit integer")
    out = []
    for a in range(0, max(t.size, 1), MAX_RECORD_EVENTS):
        rec = np.empty(min(MAX_RECORD_EVENTS, t.size - a), EVENT_DTYPE)
        rec["time_s"], rec["unit"] = t[a:a + rec.size], u[a:a + rec.size]
        out.append(HEADER.pack(MAGIC, KIND_EVENTS, 0, rec.size) + rec.tobytes())
    return b"".join(out)


def encode_label(label) -> bytes:
    """LABEL record: a class index, or None to clear the label."""
    return HEADER.pack(MAGIC, KIND_LABEL, 0, NO_LABEL if label is None or label < 0 else int(label))


def encode_tick(time_s: float) -> bytes:
    """TICK record: the feed's clock reached ``time_s`` seconds."""
    return HEADER.pack(MAGIC, KIND_TICK, 0, 0) + TIME_F64.pack(float(time_s))


def encode_end() -> bytes:
    """END record: end of sample."""
    return HEADER.pack(MAGIC, KIND_END, 0, 0)
