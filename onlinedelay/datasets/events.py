"""A loaded split of an event dataset: an index in memory, events read from the open file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .binning import MAX_DERIVED_STEPS, bin_batch, check_binning, steps_for
from .hdf5_checks import BIN_BLOCK, BLOCK, READ_ERRORS, DatasetFormatError, fail

class EventDataset:
    """One split of an event dataset: an index in memory, events read from the open file.

    Attributes
    ----------
    path : pathlib.Path -- the ``.h5`` file that is read
    source : pathlib.Path -- the file named in messages (the ``.h5.gz`` / ``.h5.zip`` it came from)
    name : str -- dataset name (``"digits"``, ``"shd"``, ...) or the file's stem
    split : str or None
    class_names : list of str -- from ``extra/keys``; label ``i`` is ``class_names[i]``
    labels : ndarray, shape (N,), int64
    speakers : ndarray, shape (N,), int64, or None when the file has no ``extra/speaker``
    n_channels : int
    offsets : ndarray, shape (N + 1,), int64 -- sample ``i`` holds ``offsets[i+1] - offsets[i]`` spikes
    channel_counts : ndarray, shape (n_channels,), int64 -- spikes per channel over the split
    max_time : float -- latest spike time of the split, seconds (0.0 when there are no spikes)
    attrs : dict -- the file's root attributes
    meta_info : dict of str -> ndarray -- ``extra/meta_info/*``
    """

    def __init__(self, path, offsets, labels, class_names, speakers, n_channels, unsorted, max_time,
                 channel_counts, attrs=None, meta_info=None, name=None, split=None, source=None):
        self.path = Path(path)
        self.source = Path(source) if source is not None else self.path
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.speakers = None if speakers is None else np.asarray(speakers, dtype=np.int64)
        self.n_channels = int(n_channels)
        self.max_time = float(max_time)
        self.channel_counts = np.asarray(channel_counts, dtype=np.int64)
        self.attrs = dict(attrs or {})
        self.meta_info = dict(meta_info or {})
        self.name = name if name is not None else self.source.name.split(".")[0]
        self.split = split
        self._unsorted = np.asarray(unsorted, dtype=bool)
        st = self.path.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)
        self._h5 = self._datasets = None

    # -- the open file ---------------------------------------------------------------------------
    def _spikes(self):
        """``(spikes/times, spikes/units)`` of the open file (opened again, checked unchanged, when closed)."""
        if self._h5 is None or not self._h5.id.valid:
            st = self.path.stat() if self.path.is_file() else None
            if st is None or (st.st_size, st.st_mtime_ns) != self._stamp:
                raise DatasetFormatError(f"{self.source}: changed or removed since it was validated; load it again")
            self._h5 = h5py.File(self.path, "r")
            self._datasets = (self._h5["spikes/times"], self._h5["spikes/units"])
        return self._datasets

    def close(self) -> None:
        """Close the file (it is reopened, and checked unchanged, on the next read)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = self._datasets = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = state["_datasets"] = None
        return state

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

    def _index(self, i) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"sample index must be an int, got {type(i).__name__}")
        n = len(self)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"sample index {i} out of range for {n} samples in '{self.path}'")
        return j

    def _read(self, indices) -> dict:
        """``{i: (times float64, units int64)}`` for the sample indices asked, sorted where repaired."""
        d_times, d_units = self._spikes()
        wanted = np.unique(np.asarray(indices, dtype=np.int64))
        out = {}
        for a, b in runs(wanted):
            try:
                t_run, u_run = d_times[a:b], d_units[a:b]
            except READ_ERRORS as exc:
                fail(self.source, "spikes/times, spikes/units", f"unreadable ({exc})", a)
            for k in range(b - a):
                i = a + k
                t, u = np.asarray(t_run[k], dtype=np.float64), np.asarray(u_run[k]).astype(np.int64)
                if t.shape[0] != self.offsets[i + 1] - self.offsets[i] or u.shape != t.shape:
                    fail(self.source, "spikes/times", "changed since it was validated; load it again", i)
                if self._unsorted[i]:
                    order = np.argsort(t, kind="stable")
                    t, u = t[order], u[order]
                out[i] = (t, u)
        return out

    def events(self, i):
        """Spike events of sample ``i``.

        Returns
        -------
        times : ndarray, shape (n,), float64, seconds, sorted
        units : ndarray, shape (n,), int64, channel ids
        """
        j = self._index(i)
        return self._read([j])[j]

    def __iter__(self):
        """Unbinned per-event iteration: yields ``(times, units, label)`` per sample."""
        for a in range(0, len(self), BLOCK):
            block = self._read(range(a, min(a + BLOCK, len(self))))
            for i in range(a, min(a + BLOCK, len(self))):
                t, u = block[i]
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
        """Like :meth:`frames` for several samples: shape (n_steps, len(indices), n_channels // pool), uint16.

        Samples are read and binned ``BIN_BLOCK`` at a time: memory is the output plus one block.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"indices: expected a 1-D sequence of ints, got {np.asarray(indices).dtype} "
                            f"with shape {idx.shape}")
        idx = np.array([self._index(int(k)) for k in idx], dtype=np.int64)
        if n_steps is None:
            n_steps = self.n_steps_for(dt_ms)
            if n_steps > MAX_DERIVED_STEPS:
                fail(self.source, "spikes/times", f"the latest spike at {self.max_time!r} s needs {n_steps} steps "
                                                   f"of {dt_ms} ms (more than {MAX_DERIVED_STEPS}); give n_steps")
        dt_ms, n_steps, pool = check_binning(dt_ms, n_steps, self.n_channels, pool, overflow)
        out = np.zeros((n_steps, idx.size, self.n_channels // pool), dtype=np.uint16)
        for a in range(0, idx.size, BIN_BLOCK):
            chunk = idx[a:a + BIN_BLOCK]
            events = self._read(chunk)
            pairs = [events[int(i)] for i in chunk]
            offsets = np.zeros(len(pairs) + 1, dtype=np.int64)
            np.cumsum([t.size for t, _ in pairs], out=offsets[1:])
            times = np.concatenate([t for t, _ in pairs]) if pairs else np.zeros(0)
            units = np.concatenate([u for _, u in pairs]) if pairs else np.zeros(0, np.int64)
            out[:, a:a + chunk.size] = bin_batch(times, units, offsets, np.arange(chunk.size), dt_ms, n_steps,
                                                 self.n_channels, pool, overflow)
        return out

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


def runs(sorted_indices):
    """``(start, stop)`` of the runs of consecutive values in a sorted unique int array."""
    if sorted_indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_indices) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_indices.size]])
    return [(int(sorted_indices[s]), int(sorted_indices[e - 1]) + 1) for s, e in zip(starts, stops)]
