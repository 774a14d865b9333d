"""A fast slice of the dataset-file fuzzer (``tests/fuzz/fuzz_datasets.py``; the full set is
``python tests/fuzz/fuzz_datasets.py --cases 3000``).

Every generated malformed SHD-layout file (wrong kinds and dtypes, ragged samples, bad and huge
times, out-of-range units and labels, declared-but-unstored data, links and external storage,
truncated and flipped bytes, damaged gzip and zip wrappers) must end in one
:class:`~onlinedelay.errors.OnlineDelayError` naming the file and the field, and every valid one
must load exactly the reference data; each case runs time-boxed in a worker process with a
bounded address space.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import fuzz_datasets  # noqa: E402

CASES = 400          # 20 of each of the 20 case generators


@pytest.fixture(scope="module")
def results():
    return fuzz_datasets.run_cases(range(CASES), seed=1, timeout_s=10.0, memory_mb=3072)


def test_every_malformed_file_is_one_clean_error_and_every_valid_one_loads_exactly(results):
    bad = {i: r for i, r in results.items() if r["outcome"] in fuzz_datasets.BAD}
    assert not bad, "\n".join(f"case {i} [{r['outcome']}] {r.get('note')}: {r.get('error')}"
                              for i, r in sorted(bad.items())[:20])
    assert all(r.get("own_type") for r in results.values() if r["outcome"] == "clean error")


def test_the_slice_covers_errors_and_data(results):
    counts = Counter(r["outcome"] for r in results.values())
    assert len(results) == CASES
    assert counts["clean error"] >= 200 and counts["loaded"] >= 60, counts
    kinds = {r["note"].split(":")[0] for r in results.values()}
    assert {"links", "declared", "wrapped", "huge_times", "labels", "valid"} <= kinds


def test_the_judge_notices_wrong_data(tmp_path):
    """A loader that returned other events would be caught: the reference differs from a changed copy."""
    case = fuzz_datasets.make_case(1, 8, tmp_path)          # huge_times: a valid file
    assert case.expect == "data"
    first = case.ref["events"][0]
    case.ref["events"][0] = (first[0] + 0.001, first[1]) if first[0].size else (first[0], first[1])
    if not first[0].size:
        case.ref["labels"] = case.ref["labels"] + 1
    assert fuzz_datasets.judge(case, tmp_path / "cache")["outcome"] == "wrong data"
