"""Peak memory of loading an SSC-shaped split and binning it batch by batch.

Writes (once) a generated SHD-layout file of SSC's shape -- 35 classes, 700 channels, ``--samples``
samples of about ``--spikes`` spikes each, float32 times within 1 s -- then, in a fresh
subprocess, loads it with :func:`onlinedelay.datasets.load_dataset`, bins every sample in batches
of 64 (100 steps of 10 ms, pool 5) and reads every sample's events once (``--whole``: bins the
whole split in one call instead, as ``train.load_split`` does).  Prints the peak resident
set size above the interpreter's baseline (``VmHWM``) and the peak of numpy's traced
allocations (``tracemalloc``), total and per sample.

    python tests/fuzz/ssc_memory.py --samples 7500 --spikes 5000 --file /tmp/ssc_like.h5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

MEASURE = r"""
import json, sys, time, tracemalloc
sys.path.insert(0, {root!r})
import numpy as np, h5py
import onlinedelay.datasets as datasets


def peak_kb():  # VmHWM: this process's peak RSS (ru_maxrss would include a forking parent's)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


base = peak_kb()
tracemalloc.start()
start = time.perf_counter()
ds = datasets.load_dataset({path!r})
load_s = time.perf_counter() - start
after_load = tracemalloc.get_traced_memory()[1]
total = 0
if {whole}:          # what train.load_split does: the whole split's frames at once
    total = int(ds.frames_batch(np.arange(len(ds)), dt_ms=10.0, n_steps=100, pool=5).sum(dtype=np.int64))
else:
    for a in range(0, len(ds), 64):
        x = ds.frames_batch(np.arange(a, min(a + 64, len(ds))), dt_ms=10.0, n_steps=100, pool=5)
        total += int(x.sum(dtype=np.int64))
    for i in range(len(ds)):
        t, u = ds.events(i)
peak = tracemalloc.get_traced_memory()[1]
rss = peak_kb()
print(json.dumps({{"samples": len(ds), "spikes": int(ds.spike_counts.sum()), "binned": total,
                  "load_s": round(load_s, 2), "total_s": round(time.perf_counter() - start, 2),
                  "rss_above_baseline_mb": round((rss - base) / 1024, 1),
                  "traced_after_load_mb": round(after_load / 2**20, 1), "traced_peak_mb": round(peak / 2**20, 1)}}))
"""


def make_file(path: Path, n_samples: int, spikes: int, seed: int = 0) -> None:
    sys.path.insert(0, str(ROOT))
    from onlinedelay.datasets import write_events_file

    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n_samples):
        k = int(rng.integers(spikes // 2, spikes * 3 // 2))
        times.append(np.sort(rng.integers(0, 24000, k)) / 24000.0)
        units.append(rng.integers(0, 700, k))
    write_events_file(path, times, units, np.arange(n_samples) % 35, [f"word{c}" for c in range(35)],
                      speakers=np.arange(n_samples) % 100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=7500)
    parser.add_argument("--spikes", type=int, default=5000, help="mean spikes per sample")
    parser.add_argument("--file", type=Path, default=Path("/tmp/ssc_like.h5"))
    parser.add_argument("--package-root", type=Path, default=ROOT,
                        help="import onlinedelay from this folder (e.g. an older checkout, to compare)")
    parser.add_argument("--whole", action="store_true",
                        help="bin the whole split in one call (as train.load_split does) instead of batches of 64")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        start = time.perf_counter()
        make_file(args.file, args.samples, args.spikes)
        print(f"wrote {args.file} ({args.file.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
    code = MEASURE.format(root=str(args.package_root), path=str(args.file), whole=args.whole)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    n = result["samples"]
    result["rss_per_sample_kb"] = round(result["rss_above_baseline_mb"] * 1024 / n, 2)
    result["traced_peak_per_sample_kb"] = round(result["traced_peak_mb"] * 1024 / n, 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
