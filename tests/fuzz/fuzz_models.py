"""Model and checkpoint fuzzer: byte flips, truncations and structural mutations of saved files.

Every case must end in one ModelFileError naming the file (or load exactly the saved parameters);
each runs in a worker process with a time limit, so a hang or a crash is counted, not suffered.

    python tests/fuzz/fuzz_models.py --cases 2000 [--seed 0]

The suite runs a slice of the same checks (tests/test_io.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def _saved(folder: Path):
    from onlinedelay import LearningConfig, Network, NetworkConfig, ThreeFactorLearner
    from onlinedelay.io import save_model

    out = {}
    for name, cfg in (("deep", dict(n_inputs=6, n_outputs=3, n_layers=2, n_hidden=5, recurrent="conv",
                                    recurrent_delays="axonal", input_delays="synaptic", hidden_delays="axonal",
                                    readout="all", max_delay_steps=6)),
                      ("ternary", dict(n_inputs=6, n_outputs=3, n_hidden=5, weight_bits="ternary", delay_step=2.0))):
        net = Network(NetworkConfig(**cfg), seed=2)
        learner = ThreeFactorLearner(net, LearningConfig(feedback="random"))
        learner.run_sample(np.random.default_rng(0).poisson(0.6, size=(12, 2, 6)), np.array([0, 1]), update=True)
        path = folder / f"{name}.h5"
        save_model(path, net, ["a", "b", "c"], learner=learner, training={"epoch": 1})
        out[name] = (path, {k: a.copy() for k, a in net.params.arrays(stored_only=False)})
    return out


def _case(args):
    path, want = args
    from onlinedelay.io import ModelFileError, load_model

    try:
        loaded = load_model(path)
    except ModelFileError as err:
        return "refused" if str(path) in str(err) else "refused-without-file-name"
    except BaseException as err:  # noqa: BLE001 - the fuzzer counts every other outcome
        return f"crash:{type(err).__name__}"
    got = {k: a for k, a in loaded.net.params.arrays(stored_only=False)}
    same = got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    return "identical" if same else "wrong-data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    ns = parser.parse_args()
    rng = np.random.default_rng(ns.seed)
    outcomes = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        originals = _saved(folder)
        jobs = []
        for k in range(ns.cases):
            name = ("deep", "ternary")[k % 2]
            path, want = originals[name]
            raw = bytearray(path.read_bytes())
            kind = rng.choice(["flip", "flip4", "truncate", "zero-run"], p=[0.6, 0.2, 0.1, 0.1])
            if kind == "flip":
                raw[int(rng.integers(len(raw)))] ^= int(rng.integers(1, 256))
            elif kind == "flip4":
                for pos in rng.integers(len(raw), size=4):
                    raw[int(pos)] ^= 0xFF
            elif kind == "truncate":
                raw = raw[:int(rng.integers(len(raw)))]
            else:
                a = int(rng.integers(len(raw)))
                raw[a:a + 64] = bytes(min(64, len(raw) - a))
            case = folder / f"case{k}.h5"
            case.write_bytes(bytes(raw))
            jobs.append((case, want))
        ctx = mp.get_context("spawn")
        done = 0
        while done < len(jobs):                  # a hung worker is killed with its pool; the rest go on
            with ctx.Pool(2) as pool:
                pending = [pool.apply_async(_case, (job,)) for job in jobs[done:]]
                for res in pending:
                    try:
                        outcomes[res.get(timeout=ns.timeout)] += 1
                        done += 1
                    except mp.TimeoutError:
                        outcomes["hang"] += 1
                        done += 1
                        pool.terminate()
                        break
    print(dict(sorted(outcomes.items())))
    bad = {k: v for k, v in outcomes.items() if k not in ("refused", "identical")}
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
