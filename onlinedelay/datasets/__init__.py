"""Event datasets: SHD / SSC files, the embedded spoken-digits set, binning and splits.

>>> from onlinedelay.datasets import load_dataset, split_by_speaker
>>> ds = load_dataset("digits", split="train")            # doctest: +SKIP
>>> x = ds.frames_batch(range(8))                          # (100 steps, 8, 140) uint16 counts
>>> train_idx, valid_idx = split_by_speaker(ds, valid_fraction=0.1, seed=0)

Names: ``"digits"`` (embedded; the compact copy in ``data/digits.npz`` is materialised once into
the cache directory as SHD-layout ``digits_train.h5`` / ``digits_test.h5`` and read back with the
ordinary reader), ``"shd"`` and ``"ssc"`` (looked up in the data directory), or a path to any
SHD-layout ``.h5`` / ``.h5.gz`` / ``.h5.zip``.  See :mod:`.hdf5` for what validation rejects
and what it repairs with a warning, :mod:`.registry` for directories, checksums and download,
:mod:`.binning` for frames, :mod:`.cochlea` and :mod:`.digits` for how ``digits`` is made.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import OnlineDelayError, check_fraction
from .binning import OVERFLOW_MODES, bin_batch, bin_events, steps_for
from .hdf5 import DatasetFormatError, DatasetWarning, EventDataset, read_events_file, write_events_file
from .registry import (DATASETS, ChecksumError, DownloadError, DatasetInfo, ensure_h5, fetch, find_dataset_file,
                       md5_file, resolve_cache_dir, resolve_data_dir, verify_checksum)

__all__ = ["load_dataset", "split_by_speaker", "DATASETS", "DatasetInfo", "EventDataset", "DatasetFormatError",
           "DatasetWarning", "ChecksumError", "DownloadError", "read_events_file", "write_events_file",
           "bin_events", "bin_batch", "steps_for", "OVERFLOW_MODES", "fetch", "embedded_path", "resolve_data_dir",
           "resolve_cache_dir", "materialise_embedded"]

SPLITS = ("train", "test", "valid")
EMBEDDED_FILE = "digits.npz"


def embedded_path() -> Path:
    """The compact frozen copy of ``digits``: ``onlinedelay/datasets/data/digits.npz``, package data
    (installed with the package, wheel or editable).

    ``$ONLINEDELAY_EMBEDDED_DATA`` (a file path) overrides it.
    """
    import os

    env = os.environ.get("ONLINEDELAY_EMBEDDED_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent / "data" / EMBEDDED_FILE


def materialise_embedded(cache_dir=None, verify=False) -> dict:
    """SHD-layout files of the embedded ``digits`` set, written once into the cache directory.

    Returns ``{split: Path}``.  The files live in ``<cache dir>/digits/<md5 prefix of the npz>/``
    so a regenerated ``data/digits.npz`` is materialised afresh.  ``verify`` checks the npz
    against the MD5 recorded next to it (``digits.npz.md5``).
    """
    from .frozen import load_frozen, materialise

    src = embedded_path()
    if not src.is_file():
        raise FileNotFoundError(
            f"embedded dataset not found at '{src}' (it ships in the source tree's data/ folder; set "
            f"$ONLINEDELAY_EMBEDDED_DATA to its path, or rebuild it with `onlinedelay data generate`)")
    digest = md5_file(src)
    if verify:
        sidecar = src.with_name(src.name + ".md5")
        if not sidecar.is_file():
            raise ChecksumError(f"{src}: no recorded checksum ({sidecar} is missing)")
        expected = sidecar.read_text().split()[0]
        if digest != expected:
            raise ChecksumError(f"{src}: MD5 {digest} differs from the recorded {expected}")
    out = resolve_cache_dir(cache_dir) / "digits" / digest[:12]
    info = DATASETS["digits"]
    paths = {split: out / f"digits_{split}.h5" for split in info.splits}
    if not all(p.is_file() for p in paths.values()):
        paths = materialise(load_frozen(src), out, name="digits")
    return paths


def load_dataset(name_or_path, split="train", data_dir=None, verify=False, cache_dir=None,
                 n_channels=None) -> EventDataset:
    """Open one split of a dataset, validated and indexed (events are read from the file on demand).

    Parameters
    ----------
    name_or_path : "digits", "shd", "ssc", or a path to an SHD-layout ``.h5`` / ``.h5.gz`` / ``.h5.zip``
    split : "train", "test" or "valid" (only where the dataset has that file, e.g. SSC; otherwise
        use :func:`split_by_speaker`); ignored for a path
    data_dir : where named files are looked up (default ``$ONLINEDELAY_DATA_DIR``, then the user cache)
    verify : check the file's MD5 against the published one (named datasets and files with a
        published name); a file with no known checksum gives a warning
    cache_dir : where compressed files are decompressed and ``digits`` is materialised
    n_channels : override the channel count (default: file attribute ``n_channels``, else 700)

    Returns
    -------
    EventDataset

    Raises
    ------
    FileNotFoundError (naming every place looked), OnlineDelayError (bad split), DatasetFormatError
    (malformed file, named as given, e.g. the ``.h5.zip``), ChecksumError
    """
    key = str(name_or_path).lower() if isinstance(name_or_path, str) else None
    if key in DATASETS:
        info = DATASETS[key]
        if split not in info.splits:
            hint = " (use split_by_speaker on the train split for validation)" if split == "valid" else ""
            raise OnlineDelayError(f"dataset '{key}' has no split {split!r}; it has {', '.join(info.splits)}{hint}")
        if info.embedded:
            found = path = materialise_embedded(cache_dir, verify=verify)[split]
        else:
            found = find_dataset_file(key, split, data_dir)
            if verify:
                _verify(found)
            path = ensure_h5(found, cache_dir)
        return read_events_file(path, n_channels=n_channels, name=key, split=split, source=found)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"'{name_or_path}' is neither a known dataset ({', '.join(DATASETS)}) "
                                f"nor an existing file (looked at '{path.resolve()}')")
    if verify:
        _verify(path)
    return read_events_file(ensure_h5(path, cache_dir), n_channels=n_channels, split=None,
                            name=path.name.split(".")[0], source=path)


def _verify(path):
    if not verify_checksum(path):
        warnings.warn(f"{path}: no published checksum for '{path.name}'; not verified", DatasetWarning,
                      stacklevel=3)


def split_by_speaker(ds, valid_fraction=0.1, seed=0):
    """Deterministic train/validation split of one dataset split.

    With speaker ids (and at least two speakers), whole speakers are held out:
    ``max(1, round(valid_fraction * n_speakers))`` of them, drawn with ``seed``.  Without, a
    stratified random split: ``round(valid_fraction * n)`` samples of every class.

    Returns
    -------
    train_idx, valid_idx : ndarray of int64, sorted, disjoint, together all samples
    """
    check_fraction("valid_fraction", valid_fraction, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    n = len(ds)
    speakers = getattr(ds, "speakers", None)
    if speakers is not None and np.unique(speakers).size >= 2:
        unique = np.unique(speakers)
        k = min(unique.size - 1, max(1, int(round(valid_fraction * unique.size))))
        held = rng.permutation(unique)[:k]
        valid = np.isin(speakers, held)
    else:
        valid = np.zeros(n, dtype=bool)
        labels = np.asarray(ds.labels)
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            k = int(round(valid_fraction * members.size))
            valid[rng.permutation(members)[:k]] = True
    return np.flatnonzero(~valid).astype(np.int64), np.flatnonzero(valid).astype(np.int64)
