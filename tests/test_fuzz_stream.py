"""Hostile stream feeds (issue 14): exact rejection counts, no crash, bounded time, whatever the reads.

Each case is a clean feed of valid events with hostile pieces spliced in, generated together with
the reason each piece must be rejected for: text lines (garbage, over-long lines whatever they
hold, NaN / negative times, unknown units, times going backwards or jumping ahead, bad labels) and
binary records (bytes between records, unknown kinds, oversized counts, counts larger than the
payload -- aligned or not --, bad events and labels inside records, a record cut by the end of the
feed).  The whole stream path runs (file source read in random chunk sizes, parser, runner,
output), and every case must give

* exactly the expected count per rejection reason and of accepted events,
* the same output lines, byte for byte, as the clean feed alone (rejected input never reaches the
  network), for two different chunkings,
* within a generous time box (a hang check, not a speed measurement).

The suite runs a fast slice; ``python tests/test_fuzz_stream.py --cases 1000`` runs a larger set.
"""

from __future__ import annotations

import io
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onlinedelay import Network, NetworkConfig
from onlinedelay.config import RunConfig
from onlinedelay.io import load_model, save_model
from onlinedelay.stream import REJECT_REASONS, FileSource, encode_events, encode_label, run_stream

FAST_CASES = 25                 # per family in the test suite
TIME_BOX_S = 30.0               # per case; a case takes well under a second
N_CHANNELS, MAX_JUMP_S, LINE_LIMIT, MAX_RECORD = 700, 3600.0, 96, 64
SAFE = np.frombuffer(b"abcdefghijklmnpqrstuvwxyz!$%&*+-=?@^_~\x00\xff", np.uint8)   # no "O": cannot hold the magic


def make_model(path: Path) -> Path:
    net = Network(NetworkConfig(n_inputs=140, n_hidden=16, n_outputs=3, max_delay_steps=8), seed=0)
    save_model(path, net, class_names=["low", "mid", "high"], training={"run": RunConfig(pool=5, n_steps=30).to_dict()})
    return path


class Feed:
    """A clean event sequence and the hostile pieces spliced into it, with their expected reasons."""

    def __init__(self, rng):
        self.rng = rng
        self.clock = 0.0                 # the latest valid event time
        self.times, self.units = [], []
        self.expected = dict.fromkeys(REJECT_REASONS, 0)

    def valid_events(self, n):
        t = self.clock + np.cumsum(self.rng.exponential(0.002, n))
        u = self.rng.integers(0, N_CHANNELS, n)
        self.clock = float(t[-1])
        self.times += t.tolist()
        self.units += u.tolist()
        return t, u

    def bad_event(self):
        """(time_s, unit, reason) of one event the runner must reject."""
        rng, reason = self.rng, self.rng.choice(["nan_time", "negative_time", "unknown_unit", "backwards",
                                                  "time_jump"])
        if reason == "backwards" and self.clock == 0.0:
            reason = "negative_time"
        t, u = self.clock + 0.001, int(rng.integers(0, N_CHANNELS))
        if reason == "nan_time":
            t = float(rng.choice([np.nan, np.inf, -np.inf]))
        elif reason == "negative_time":
            t = -float(rng.uniform(1e-6, 5.0))
        elif reason == "unknown_unit":
            u = int(rng.choice([N_CHANNELS, N_CHANNELS + 1, 2 ** 31, 2 ** 32 - 1]))
        elif reason == "backwards":
            t = self.clock * float(rng.uniform(0.0, 0.999))
        else:
            t = self.clock + MAX_JUMP_S + float(rng.choice([1.0, 1e5, 1e300]))
        self.expected[reason] += 1
        return t, u


# -- text --------------------------------------------------------------------------------------------
MALFORMED_LINES = ["garbage", "1.0 2 3", "0.1 seven", "0.1 5.5", "tick abc", "end now", "label", "x y z w"]


def text_case(rng):
    """(hostile bytes, clean bytes, feed) of the text format."""
    feed, hostile, clean = Feed(rng), [], []
    for _ in range(int(rng.integers(5, 25))):
        t, u = feed.valid_events(int(rng.integers(1, 20)))
        lines = [f"{ti!r} {ui}" for ti, ui in zip(t.tolist(), u.tolist())]
        clean += lines
        hostile += lines
        kind = rng.choice(["event", "malformed", "oversized", "bad_label", "comment"])
        if kind == "event":
            ti, ui = feed.bad_event()
            hostile.append(f"{ti!r} {ui}")
        elif kind == "malformed":
            hostile.append(str(rng.choice(MALFORMED_LINES)))
            feed.expected["malformed"] += 1
        elif kind == "oversized":
            n = int(rng.integers(LINE_LIMIT + 1, 4 * LINE_LIMIT))
            body = rng.choice([f"{feed.clock!r} 5", "# comment", "label 1", "garbage", ""])
            hostile.append(body + " " * max(0, n - len(body)) if rng.random() < 0.5 else (body + "x" * n)[:n])
            feed.expected["oversized_record"] += 1
        elif kind == "bad_label":
            hostile.append(str(rng.choice(["label nobody", "label 7", "label -5"])))
            feed.expected["bad_label"] += 1
        else:
            hostile.append(str(rng.choice(["# a comment", "", "   "])))
    return ("\n".join(hostile) + "\n").encode(), ("\n".join(clean) + "\n").encode(), feed


# -- binary ------------------------------------------------------------------------------------------
def header(kind, flags, count):
    return struct.pack("<4sHHI", b"ODEV", kind, flags, count)


def binary_case(rng):
    """(hostile bytes, clean bytes, feed) of the binary format; pieces are separated by valid records."""
    feed, hostile, clean = Feed(rng), [], []
    for _ in range(int(rng.integers(5, 25))):
        t, u = feed.valid_events(int(rng.integers(1, 20)))
        record = encode_events(t, u)
        clean.append(record)
        kind = rng.choice(["garbage", "unknown_kind", "oversized", "short", "misaligned", "bad_events",
                           "bad_label"])
        if kind in ("short", "misaligned"):                 # a count larger than the payload sent
            extra = int(rng.integers(1, 4)) if kind == "short" else int(rng.integers(2, 5))
            lying = bytearray(record)
            lying[8:12] = (t.size + extra).to_bytes(4, "little")
            stray = rng.choice(SAFE, int(rng.integers(1, 12))).tobytes() if kind == "misaligned" else b""
            hostile.append(bytes(lying) + stray)
            feed.expected["truncated_record"] += 1
            t, u = feed.valid_events(int(rng.integers(1, 5)))     # the record whose header ends it
            record = encode_events(t, u)
            clean.append(record)
        hostile.append(record)
        if kind == "garbage":
            hostile.append(rng.choice(SAFE, int(rng.integers(1, 40))).tobytes())
            feed.expected["malformed"] += 1
        elif kind == "unknown_kind":
            k = int(rng.choice([0, 5, 77, 65535, 1, 4]))
            hostile.append(header(k, 0 if k not in (1, 4) else 1, int(rng.choice([0, 1, 12345]))))
            feed.expected["malformed"] += 1
        elif kind == "oversized":
            n = MAX_RECORD + int(rng.integers(1, 10))
            payload = np.zeros(n, [("t", "<f8"), ("u", "<u4")])
            payload["t"] = feed.clock + 0.001                   # never seen by the runner
            hostile.append(header(1, 0, n) + payload.tobytes())
            feed.expected["oversized_record"] += 1
        elif kind == "bad_events":
            bad = [feed.bad_event() for _ in range(int(rng.integers(1, 4)))]
            hostile.append(encode_events([b[0] for b in bad], [b[1] for b in bad]))
        else:
            hostile.append(encode_label(int(rng.choice([3, 7, 0xFFFFFFFE]))))
            feed.expected["bad_label"] += 1
    t, u = feed.valid_events(int(rng.integers(2, 20)))        # the last record, cut by the end of the feed
    record = encode_events(t, u)
    keep = int(rng.integers(0, t.size))
    cut = 12 + 12 * keep + int(rng.integers(0, 12)) if keep or rng.random() < 0.5 else int(rng.integers(1, 12))
    hostile.append(record[:cut])
    feed.expected["truncated_record"] += 1
    kept = keep if cut >= 12 else 0
    feed.times, feed.units = feed.times[:len(feed.times) - t.size + kept], feed.units[:len(feed.units) - t.size + kept]
    clean.append(encode_events(t[:kept], u[:kept]) if kept else b"")
    return b"".join(hostile), b"".join(clean), feed


# -- running a case ------------------------------------------------------------------------------------
def stream_bytes(model, path: Path, data: bytes, fmt: str, chunk_bytes: int):
    path.write_bytes(data)
    out = io.StringIO()
    summary = run_stream(model, FileSource(path, chunk_bytes=chunk_bytes), out, input_format=fmt,
                         max_line_bytes=LINE_LIMIT, max_record_events=MAX_RECORD)
    lines = [line for line in out.getvalue().splitlines() if not line.startswith('{"summary"')]
    return summary, lines


def check_case(model, tmp: Path, family: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hostile, clean, feed = (text_case if family == "text" else binary_case)(rng)
    fmt = "text" if family == "text" else "binary"
    started = time.monotonic()
    ref_summary, ref_lines = stream_bytes(model, tmp / "clean", clean, fmt, 1 << 16)
    assert ref_summary["rejected_total"] == 0 and ref_summary["events_accepted"] == len(feed.times)
    for chunk in (int(rng.integers(1, 50)), int(rng.integers(50, 5000))):
        summary, lines = stream_bytes(model, tmp / "hostile", hostile, fmt, chunk)
        assert summary["events_rejected"] == feed.expected, (family, seed, chunk)
        assert summary["events_accepted"] == len(feed.times), (family, seed, chunk)
        assert lines == ref_lines, (family, seed, chunk)
    assert time.monotonic() - started < TIME_BOX_S, (family, seed)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(make_model(tmp_path_factory.mktemp("fuzz") / "model.h5"))


@pytest.mark.parametrize("family", ["text", "binary"])
def test_hostile_feeds_are_rejected_exactly(model, tmp_path, family):
    for seed in range(FAST_CASES):
        check_case(model, tmp_path, family, seed)


def main(argv) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="cases per family")
    parser.add_argument("--seed", type=int, default=10_000, help="first seed (the suite uses 0 .. FAST_CASES-1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_model(make_model(Path(tmp) / "model.h5"))
        started = time.monotonic()
        for family in ("text", "binary"):
            for seed in range(args.seed, args.seed + args.cases):
                check_case(loaded, Path(tmp), family, seed)
        print(f"{2 * args.cases} hostile feeds: all rejected exactly, in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
