"""Editing saved model files in tests: h5py edits, then the file seal rewritten (io.seal_file), so a
test reaches the field validators behind the whole-file checksum."""

from contextlib import contextmanager

import h5py

from onlinedelay.io import seal_file


@contextmanager
def edit_model(path, mode="a"):
    with h5py.File(path, mode) as f:
        yield f
    seal_file(path)
