"""The compact on-disk form of the embedded dataset, and its materialisation to SHD-layout ``.h5``.

The SHD layout (variable-length arrays) does not compress inside HDF5, so the copy shipped in
``data/`` is a plain ``.npz`` (a deflated zip of ``.npy`` files, as ``numpy.savez_compressed``
writes, but with fixed time stamps so the same data gives the same bytes; read with
``numpy.load(allow_pickle=False)``) of fixed-length arrays:

``counts``    (N, n_channels) uint16  spikes per sample and channel
``delta_lo``, ``delta_hi``  (n_spikes,) uint8  low / high byte of the spike ticks, sorted by
              (sample, channel, time) and delta-coded within each (sample, channel) run (the first
              spike of a run is relative to 0); one tick = ``time_step_s`` (1/24000 s, the SHD grid)
``labels``, ``speakers``, ``split`` (N,) uint8; ``split_names``, ``class_names``, ``speaker_*``
              arrays; ``attrs_json``: generator, version, seed, espeak-ng version, front-end config

Splitting the ticks into byte planes lets deflate see the (mostly zero) high bytes as long
runs: about 1 byte per spike instead of 4 (float32 time) + 2 (uint16 unit).

:func:`materialise` decodes it into one ``<name>_<split>.h5`` per split, events sorted by time
then unit, written with :func:`~onlinedelay.datasets.hdf5.write_events_file` -- so the real
SHD reader is exercised every time the embedded set is used.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import OnlineDelayError
from .hdf5 import DatasetFormatError, write_events_file

__all__ = ["FrozenEvents", "encode", "decode_sample", "save_frozen", "load_frozen", "materialise", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class FrozenEvents:
    """Decoded frozen dataset: spikes as integer ticks, plus labels and metadata.

    Attributes
    ----------
    counts : (N, n_channels) uint16; starts : (N, n_channels) int64 offsets into ``ticks``
    ticks : (n_spikes,) int64, absolute ticks, sorted by (sample, channel, time)
    labels, speakers, split : (N,) int64; split_names, class_names : list of str
    time_step_s : float; attrs : dict; speaker_meta : dict of str -> ndarray (per speaker)
    """

    def __init__(self, counts, ticks, labels, speakers, split, split_names, class_names, time_step_s,
                 attrs=None, speaker_meta=None):
        self.counts = np.asarray(counts, dtype=np.uint16)
        self.ticks = np.asarray(ticks, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.speakers = np.asarray(speakers, dtype=np.int64)
        self.split = np.asarray(split, dtype=np.int64)
        self.split_names = list(split_names)
        self.class_names = list(class_names)
        self.time_step_s = float(time_step_s)
        self.attrs = dict(attrs or {})
        self.speaker_meta = dict(speaker_meta or {})
        flat = self.counts.astype(np.int64).ravel()
        self.starts = (np.cumsum(flat) - flat).reshape(self.counts.shape)
        if int(flat.sum()) != self.ticks.size:
            raise OnlineDelayError(f"frozen data: counts sum to {int(flat.sum())} but there are {self.ticks.size} ticks")

    def __len__(self):
        return int(self.labels.shape[0])

    @property
    def n_channels(self) -> int:
        """Channels per sample."""
        return int(self.counts.shape[1])

    def sample(self, i):
        """``(ticks, units)`` of sample ``i``, int64, sorted by time then unit."""
        c = self.counts[i].astype(np.int64)
        a = int(self.starts[i, 0])
        ticks = self.ticks[a:a + int(c.sum())]
        units = np.repeat(np.arange(self.n_channels, dtype=np.int64), c)
        order = np.lexsort((units, ticks))
        return ticks[order], units[order]


def encode(samples, n_channels):
    """``counts`` (N, n_channels) and channel-major absolute ``ticks`` from per-sample (ticks, units)."""
    counts = np.zeros((len(samples), n_channels), dtype=np.int64)
    parts = []
    for i, (ticks, units) in enumerate(samples):
        ticks = np.asarray(ticks, dtype=np.int64)
        units = np.asarray(units, dtype=np.int64)
        order = np.lexsort((ticks, units))
        counts[i] = np.bincount(units, minlength=n_channels)
        parts.append(ticks[order])
    if counts.max(initial=0) > np.iinfo(np.uint16).max:
        raise OnlineDelayError("a channel holds more than 65535 spikes in one sample")
    return counts.astype(np.uint16), (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))


def decode_sample(frozen: FrozenEvents, i):
    """Same as ``frozen.sample(i)``."""
    return frozen.sample(i)


def _run_starts(counts):
    flat = counts.astype(np.int64).ravel()
    nonzero = flat > 0
    starts = (np.cumsum(flat) - flat)[nonzero]
    return starts


def save_frozen(path, frozen: FrozenEvents):
    """Write the compact ``.npz`` atomically; returns its MD5."""
    path = Path(path)
    ticks = frozen.ticks
    if ticks.size and (ticks.min() < 0 or ticks.max() > np.iinfo(np.uint16).max):
        raise OnlineDelayError(f"ticks must lie in 0..65535 (got {ticks.min()}..{ticks.max()}); "
                         f"the window is 65535 * time_step_s = {65535 * frozen.time_step_s:.2f} s")
    delta = np.zeros_like(ticks)
    if ticks.size:
        delta[0] = ticks[0]
        delta[1:] = np.diff(ticks)
        starts = _run_starts(frozen.counts)
        is_start = np.zeros(ticks.size, dtype=bool)
        is_start[starts] = True
        if np.any((delta < 0) & ~is_start):
            raise OnlineDelayError("ticks must be sorted in time within every (sample, channel)")
        delta[starts] = ticks[starts]
    delta = delta.astype(np.uint16)
    arrays = dict(
        format_version=np.array(FORMAT_VERSION),
        counts=frozen.counts, delta_lo=(delta & 0xFF).astype(np.uint8), delta_hi=(delta >> 8).astype(np.uint8),
        labels=frozen.labels.astype(np.uint8), speakers=frozen.speakers.astype(np.uint8),
        split=frozen.split.astype(np.uint8), split_names=np.array(frozen.split_names),
        class_names=np.array(frozen.class_names), time_step_s=np.array(frozen.time_step_s),
        attrs_json=np.array(json.dumps(frozen.attrs, sort_keys=True)),
    )
    for key, value in frozen.speaker_meta.items():
        arrays[f"speaker_{key}"] = np.asarray(value)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key, value in arrays.items():
            # what numpy.savez_compressed writes, minus the time stamps: same content, same bytes
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return hashlib.md5(path.read_bytes()).hexdigest()


def load_frozen(path) -> FrozenEvents:
    """Read a compact ``.npz`` written by :func:`save_frozen` (no pickle)."""
    path = Path(path)
    try:
        return _load_frozen(path)
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise DatasetFormatError(f"{path}: not a readable frozen dataset ({type(exc).__name__}: {exc})") from None


def _load_frozen(path) -> FrozenEvents:
    with np.load(path, allow_pickle=False) as z:
        version = int(z["format_version"])
        if version != FORMAT_VERSION:
            raise DatasetFormatError(f"{path}: format_version: {version}, this code reads {FORMAT_VERSION}")
        counts = z["counts"]
        delta = z["delta_lo"].astype(np.int64) | (z["delta_hi"].astype(np.int64) << 8)
        ticks = np.cumsum(delta)
        starts = _run_starts(counts)
        if starts.size:
            # undo the delta coding run by run: subtract the running sum before each run
            before = np.concatenate([[0], ticks[starts[1:] - 1]])
            run_len = np.diff(np.append(starts, ticks.size))
            base = np.repeat(before, run_len)
            ticks = ticks - base
        meta = {k[len("speaker_"):]: z[k] for k in z.files if k.startswith("speaker_") and k != "speakers"}
        return FrozenEvents(counts, ticks, z["labels"], z["speakers"], z["split"],
                            [str(s) for s in z["split_names"]], [str(s) for s in z["class_names"]],
                            float(z["time_step_s"]), json.loads(str(z["attrs_json"])), meta)


def materialise(frozen: FrozenEvents, out_dir, name="digits") -> dict:
    """Write one SHD-layout ``<name>_<split>.h5`` per split into ``out_dir``; returns {split: Path}."""
    out_dir = Path(out_dir)
    paths = {}
    attrs = {k: (v if isinstance(v, (int, float, str)) else json.dumps(v)) for k, v in frozen.attrs.items()}
    for code, split in enumerate(frozen.split_names):
        idx = np.flatnonzero(frozen.split == code)
        times, units = [], []
        for i in idx:
            t, u = frozen.sample(int(i))
            times.append(t * frozen.time_step_s)
            units.append(u)
        meta = dict(frozen.speaker_meta)
        paths[split] = write_events_file(
            out_dir / f"{name}_{split}.h5", times, units, frozen.labels[idx], frozen.class_names,
            speakers=frozen.speakers[idx], meta_info=meta,
            attrs={**attrs, "split": split, "time_step_s": frozen.time_step_s}, n_channels=frozen.n_channels)
    return paths
