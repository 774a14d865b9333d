"""Event files in the layout of the Spiking Heidelberg Digits (SHD) / Spiking Speech Commands.

Layout (HDF5, one file per split)::

    /spikes/times   (N,) variable-length float   spike times in seconds, sorted within a sample
    /spikes/units   (N,) variable-length uint    channel id 0 .. n_channels-1
    /labels         (N,) int                     class index, names in /extra/keys
    /extra/speaker  (N,) int                     optional speaker id
    /extra/keys     (C,) bytes                   optional class names, label i <-> keys[i]
    /extra/meta_info/<field>                     optional per-speaker arrays

:func:`read_events_file` reads a whole file into memory (flat arrays + per-sample offsets,
times kept in the file's float width, about 6-10 bytes per spike) and validates every sample
once.  :func:`write_events_file` writes the same layout, atomically.

What validation does
--------------------
Fatal (:class:`DatasetFormatError`, a ``ValueError``; the message names the file, the field,
the sample index and the offending value):

* a missing ``spikes`` group or ``spikes/times``, ``spikes/units``, ``labels`` dataset;
* ``spikes/times``, ``spikes/units``, ``labels`` (and ``extra/speaker``) of different lengths;
* a sample whose times and units differ in length;
* a NaN, infinite or negative time; non-numeric times;
* a unit outside ``0 .. n_channels-1``; non-integer units;
* a non-integer label, or a label outside ``0 .. len(extra/keys)-1``
  (outside ``0 ..`` when there are no keys, i.e. negative);
* fewer than one sample.

Repaired with a :class:`DatasetWarning` (one warning per kind and file, giving the count and
the first sample index):

* times not sorted within a sample -- the sample is stably sorted by time (units follow);
* samples without any spike -- kept (they bin to all-zero frames);
* no ``extra/keys`` -- class names become ``"0" .. "K-1"`` from the largest label.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from .binning import bin_batch, steps_for

__all__ = ["DatasetFormatError", "DatasetWarning", "EventDataset", "read_events_file", "write_events_file",
           "DEFAULT_N_CHANNELS"]

DEFAULT_N_CHANNELS = 700
_CHUNK = 4096


class DatasetFormatError(ValueError):
    """An event file that does not follow the SHD layout (message names file, field, sample)."""


class DatasetWarning(UserWarning):
    """Something in an event file was repaired or filled in while reading it."""


class EventDataset:
    """One split of an event dataset, held in memory.

    Attributes
    ----------
    path : pathlib.Path -- the ``.h5`` file that was read
    name : str -- dataset name (``"digits"``, ``"shd"``, ...) or the file's stem
    split : str or None
    class_names : list of str -- from ``extra/keys``; label ``i`` is ``class_names[i]``
    labels : ndarray, shape (N,), int64
    speakers : ndarray, shape (N,), int64, or None when the file has no ``extra/speaker``
    n_channels : int
    offsets : ndarray, shape (N + 1,), int64 -- sample ``i`` is ``[offsets[i], offsets[i+1])``
    times : ndarray, shape (n_spikes,), float (file width), seconds, sorted within each sample
    units : ndarray, shape (n_spikes,), unsigned int
    attrs : dict -- the file's root attributes
    meta_info : dict of str -> ndarray -- ``extra/meta_info/*``
    """

    def __init__(self, path, times, units, offsets, labels, class_names, speakers=None, n_channels=700,
                 attrs=None, meta_info=None, name=None, split=None):
        self.path = Path(path)
        self.times = times
        self.units = units
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.speakers = None if speakers is None else np.asarray(speakers, dtype=np.int64)
        self.n_channels = int(n_channels)
        self.attrs = dict(attrs or {})
        self.meta_info = dict(meta_info or {})
        self.name = name if name is not None else self.path.name.split(".")[0]
        self.split = split
        self._max_time = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"EventDataset(name={self.name!r}, split={self.split!r}, samples={len(self)}, "
                f"classes={len(self.class_names)}, channels={self.n_channels}, path='{self.path}')")

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def spike_counts(self) -> np.ndarray:
        """Spikes per sample, shape (N,), int64."""
        return np.diff(self.offsets)

    @property
    def max_time(self) -> float:
        """Latest spike time in the whole split, seconds (0.0 when there are no spikes)."""
        if self._max_time is None:
            self._max_time = float(self.times.max()) if self.times.size else 0.0
        return self._max_time

    def _index(self, i) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"sample index must be an int, got {type(i).__name__}")
        n = len(self)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"sample index {i} out of range for {n} samples in '{self.path}'")
        return j

    def events(self, i):
        """Spike events of sample ``i``.

        Returns
        -------
        times : ndarray, shape (n,), float64, seconds, sorted
        units : ndarray, shape (n,), int64, channel ids
        """
        j = self._index(i)
        a, b = self.offsets[j], self.offsets[j + 1]
        return self.times[a:b].astype(np.float64), self.units[a:b].astype(np.int64)

    def __iter__(self):
        """Unbinned per-event iteration: yields ``(times, units, label)`` per sample."""
        for i in range(len(self)):
            t, u = self.events(i)
            yield t, u, int(self.labels[i])

    def n_steps_for(self, dt_ms: float = 10.0) -> int:
        """Steps of ``dt_ms`` that cover the latest spike of the split."""
        return steps_for(self.max_time, dt_ms)

    def frames(self, i, dt_ms=10.0, n_steps=100, pool=5, overflow="clip"):
        """Spike counts of sample ``i`` per time step and channel group.

        Parameters
        ----------
        i : int
        dt_ms : float -- step length, ms
        n_steps : int or None -- steps in the window; None: enough to cover the split's latest spike
        pool : int -- channels summed per group (``n_channels`` must be a multiple)
        overflow : "clip" (events past the window count in the last step) or "drop"

        Returns
        -------
        ndarray, shape (n_steps, n_channels // pool), uint16
        """
        return self.frames_batch([self._index(i)], dt_ms, n_steps, pool, overflow)[:, 0, :]

    def frames_batch(self, indices, dt_ms=10.0, n_steps=100, pool=5, overflow="clip"):
        """Like :meth:`frames` for several samples: shape (n_steps, len(indices), n_channels // pool), uint16."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"indices: expected a 1-D sequence of ints, got {np.asarray(indices).dtype} "
                            f"with shape {idx.shape}")
        idx = np.array([self._index(int(k)) for k in idx], dtype=np.int64)
        if n_steps is None:
            n_steps = self.n_steps_for(dt_ms)
        return bin_batch(self.times, self.units, self.offsets, idx, dt_ms=dt_ms, n_steps=n_steps,
                         n_channels=self.n_channels, pool=pool, overflow=overflow)

    def to_tonic(self, i, polarity: int = 1):
        """Sample ``i`` as a Tonic-style structured event array.

        Fields ``t`` (microseconds, int64), ``x`` (channel, int64) and ``p`` (int64, constant
        ``polarity``; Tonic's SHD reader sets 1), in Tonic's ``(t, x, p)`` order and dtype.
        ``t`` is rounded to the nearest microsecond in float64; Tonic's own reader truncates
        ``times * 1e6`` in the file's float width, so its values can be 1 us lower.
        """
        t, u = self.events(i)
        out = np.empty(t.shape[0], dtype=np.dtype([("t", np.int64), ("x", np.int64), ("p", np.int64)]))
        out["t"] = np.rint(t * 1e6).astype(np.int64)
        out["x"] = u
        out["p"] = polarity
        return out


def _fail(path, field, message, sample=None):
    where = f"sample {sample}: " if sample is not None else ""
    raise DatasetFormatError(f"{path}: {where}{field}: {message}")


def _decode(name) -> str:
    if isinstance(name, bytes):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            return name.decode("latin-1")
    return str(name)


def _read_attr(value):
    if isinstance(value, bytes):
        return _decode(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_events_file(path, n_channels=None, name=None, split=None) -> EventDataset:
    """Read and validate an SHD-layout ``.h5`` file (see the module docstring for the rules).

    Parameters
    ----------
    path : str or Path
    n_channels : int or None -- channel count; None: the file's ``n_channels`` attribute, else 700

    Raises
    ------
    FileNotFoundError, DatasetFormatError
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event file not found: '{path}'")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetFormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        for field in ("spikes", "spikes/times", "spikes/units", "labels"):
            if field not in f:
                _fail(path, field, f"missing (an SHD-layout file needs spikes/times, spikes/units and labels; "
                                   f"found top-level: {sorted(f.keys())})")
        attrs = {k: _read_attr(v) for k, v in f.attrs.items()}
        if n_channels is None:
            n_channels = int(attrs.get("n_channels", DEFAULT_N_CHANNELS))
        if isinstance(n_channels, bool) or int(n_channels) < 1:
            raise ValueError(f"n_channels={n_channels!r}: expected an integer >= 1")
        n_channels = int(n_channels)
        d_times, d_units, d_labels = f["spikes/times"], f["spikes/units"], f["labels"]
        n = d_labels.shape[0] if d_labels.ndim == 1 else -1
        if d_labels.ndim != 1:
            _fail(path, "labels", f"expected a 1-D array, got shape {d_labels.shape}")
        if n < 1:
            _fail(path, "labels", "no samples (length 0)")
        for field, d in (("spikes/times", d_times), ("spikes/units", d_units)):
            if d.ndim != 1 or d.shape[0] != n:
                _fail(path, field, f"has shape {d.shape} but labels has {n} samples")
        labels = d_labels[()]
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.issubdtype(labels.dtype, np.floating):
                _fail(path, "labels", f"expected integers, got dtype {labels.dtype}")
            bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
            if bad.size:
                _fail(path, "labels", f"non-integer label {labels[bad[0]]!r}", bad[0])
        labels = labels.astype(np.int64)
        speakers = None
        if "extra/speaker" in f:
            speakers = f["extra/speaker"][()]
            if speakers.shape != (n,):
                _fail(path, "extra/speaker", f"has shape {speakers.shape} but labels has {n} samples")
            if not np.issubdtype(speakers.dtype, np.integer):
                _fail(path, "extra/speaker", f"expected integers, got dtype {speakers.dtype}")
            speakers = speakers.astype(np.int64)
        class_names = None
        if "extra/keys" in f:
            class_names = [_decode(k) for k in np.atleast_1d(f["extra/keys"][()])]
        meta_info = {}
        if "extra/meta_info" in f and isinstance(f["extra/meta_info"], h5py.Group):
            for key, d in f["extra/meta_info"].items():
                if isinstance(d, h5py.Dataset):
                    meta_info[key] = d[()]
        times_parts, units_parts, lengths = [], [], np.empty(n, dtype=np.int64)
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            t_chunk, u_chunk = d_times[start:stop], d_units[start:stop]
            for j in range(stop - start):
                t, u = np.asarray(t_chunk[j]), np.asarray(u_chunk[j])
                if t.ndim != 1 or u.ndim != 1 or t.shape[0] != u.shape[0]:
                    _fail(path, "spikes/times, spikes/units",
                          f"{t.size} times but {u.size} units (lengths must match)", start + j)
                lengths[start + j] = t.shape[0]
                times_parts.append(t)
                units_parts.append(u)
    times = np.concatenate(times_parts) if times_parts else np.zeros(0)
    units = np.concatenate(units_parts) if units_parts else np.zeros(0, dtype=np.uint16)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    times, units = _validate_events(path, times, units, offsets, n_channels)
    _validate_labels(path, labels, class_names)
    if class_names is None:
        class_names = [str(k) for k in range(int(labels.max()) + 1)]
        warnings.warn(f"{path}: extra/keys: missing; class names set to '0'..'{len(class_names) - 1}'",
                      DatasetWarning, stacklevel=2)
    return EventDataset(path, times, units, offsets, labels, class_names, speakers, n_channels,
                        attrs, meta_info, name=name, split=split)


def _sample_of(offsets, position):
    return int(np.searchsorted(offsets, position, side="right") - 1)


def _validate_events(path, times, units, offsets, n_channels):
    if times.size and not (np.issubdtype(times.dtype, np.floating) or np.issubdtype(times.dtype, np.integer)):
        _fail(path, "spikes/times", f"expected numbers, got dtype {times.dtype}")
    if units.size and not np.issubdtype(units.dtype, np.integer):
        _fail(path, "spikes/units", f"expected integers, got dtype {units.dtype}")
    if times.size:
        bad = np.flatnonzero(~np.isfinite(times))
        if bad.size:
            s = _sample_of(offsets, bad[0])
            _fail(path, "spikes/times", f"non-finite time {times[bad[0]]!r} at event {bad[0] - offsets[s]} "
                                        f"({bad.size} non-finite in the file)", s)
        bad = np.flatnonzero(times < 0)
        if bad.size:
            s = _sample_of(offsets, bad[0])
            _fail(path, "spikes/times", f"negative time {float(times[bad[0]])!r} s at event {bad[0] - offsets[s]} "
                                        f"({bad.size} negative in the file)", s)
        bad = np.flatnonzero((units < 0) | (units >= n_channels))
        if bad.size:
            s = _sample_of(offsets, bad[0])
            _fail(path, "spikes/units", f"unit {int(units[bad[0]])} outside 0..{n_channels - 1} "
                                        f"(n_channels={n_channels}) at event {bad[0] - offsets[s]}", s)
        descending = np.flatnonzero(np.diff(times) < 0) + 1          # position of the later event
        descending = descending[~np.isin(descending, offsets[1:-1])]   # not across a sample boundary
        if descending.size:
            samples = np.unique(np.searchsorted(offsets, descending, side="right") - 1)
            warnings.warn(f"{path}: sample {samples[0]}: spikes/times: not sorted ({samples.size} sample(s) "
                          f"affected); sorted on load", DatasetWarning, stacklevel=3)
            times, units = times.copy(), units.copy()
            for s in samples:
                a, b = offsets[s], offsets[s + 1]
                order = np.argsort(times[a:b], kind="stable")
                times[a:b] = times[a:b][order]
                units[a:b] = units[a:b][order]
    empty = np.flatnonzero(np.diff(offsets) == 0)
    if empty.size:
        warnings.warn(f"{path}: sample {empty[0]}: spikes/times: no spikes ({empty.size} empty sample(s)); kept",
                      DatasetWarning, stacklevel=3)
    return times, units


def _validate_labels(path, labels, class_names):
    bad = np.flatnonzero(labels < 0)
    if bad.size:
        _fail(path, "labels", f"negative label {labels[bad[0]]}", bad[0])
    if class_names is not None:
        bad = np.flatnonzero(labels >= len(class_names))
        if bad.size:
            _fail(path, "labels", f"label {labels[bad[0]]} outside 0..{len(class_names) - 1} "
                                  f"(extra/keys has {len(class_names)} class names)", bad[0])


def write_events_file(path, times, units, labels, class_names, speakers=None, meta_info=None, attrs=None,
                      n_channels=DEFAULT_N_CHANNELS, times_dtype=np.float32):
    """Write samples in the SHD layout, atomically (temporary file, then ``os.replace``).

    Parameters
    ----------
    path : str or Path -- the ``.h5`` to create or replace
    times : sequence of N arrays, seconds -- written as variable-length ``times_dtype`` (float32)
    units : sequence of N integer arrays -- written as variable-length uint16
    labels : (N,) ints in ``0 .. len(class_names)-1``
    class_names : sequence of str -- written to ``extra/keys`` as UTF-8 bytes
    speakers : (N,) ints or None -- ``extra/speaker``
    meta_info : dict of str -> array or None -- ``extra/meta_info/<key>``
    attrs : dict or None -- root attributes (str, numbers); ``n_channels`` is always added
    """
    path = Path(path)
    n = len(labels)
    if len(times) != n or len(units) != n:
        raise ValueError(f"times ({len(times)}), units ({len(units)}) and labels ({n}) must have the same length")
    if speakers is not None and len(speakers) != n:
        raise ValueError(f"speakers has {len(speakers)} entries, labels {n}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        vt = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype(times_dtype)))
        vu = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.dtype(np.uint16)))
        for i in range(n):
            t = np.asarray(times[i], dtype=times_dtype)
            u = np.asarray(units[i])
            if t.shape != u.shape or t.ndim != 1:
                raise ValueError(f"sample {i}: times {t.shape} and units {u.shape} must be 1-D of equal length")
            if u.size and (u.min() < 0 or u.max() > np.iinfo(np.uint16).max):
                raise ValueError(f"sample {i}: units must fit uint16, got range {u.min()}..{u.max()}")
            vt[i] = t
            vu[i] = u.astype(np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int32))
        f.create_dataset("extra/keys", data=np.array([str(k).encode("utf-8") for k in class_names]))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.int32))
        for key, value in (meta_info or {}).items():
            value = np.asarray(value)
            if value.dtype.kind == "U":
                value = np.char.encode(value, "utf-8")
            f.create_dataset(f"extra/meta_info/{key}", data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.attrs["n_channels"] = int(n_channels)
    return path

