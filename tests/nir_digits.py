"""Measure a model's NIR round trip on its test split: ``python tests/nir_digits.py MODEL.h5``.

Exports MODEL with both delay encodings, re-imports each file, runs the re-imported network and the
independent interpreter (tests/nir_interpreter.py) on every test sample, and prints the largest
readout difference to the original model, the accuracies and the branch count (README, NIR section).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nir_interpreter import Interpreter  # noqa: E402
from onlinedelay.evaluate import load_eval_data, predict  # noqa: E402
from onlinedelay.export import save_nir, to_nir  # noqa: E402
from onlinedelay.io import load_nir  # noqa: E402


def readouts(net, x):
    net.reset(x.shape[1])
    out = np.empty((x.shape[0], net.config.n_outputs, x.shape[1]))
    for t in range(x.shape[0]):
        net.advance(x[t].T)
        out[t] = net.state.y
    return out


def main(model_path):
    loaded, x, labels, _ = load_eval_data(model_path)
    x = np.asarray(x)
    start = loaded.learning_config.loss_start_step if loaded.learning_config else 0
    y = readouts(loaded.net, x)
    acc = float((predict(y, start) == labels).mean())
    print(f"{model_path}: {x.shape[1]} test samples x {x.shape[0]} steps, accuracy {acc:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("branches", "metadata"):
            summary = save_nir(Path(tmp) / f"net_{mode}.nir", loaded, mode)
            back = load_nir(Path(tmp) / f"net_{mode}.nir").net
            same = all(np.array_equal(a, b) for (_, a), (_, b) in zip(loaded.net.params.arrays(stored_only=False),
                                                                    back.params.arrays(stored_only=False)))
            y_back = readouts(back, x)
            y_int = Interpreter(to_nir(loaded, mode)).run(x).transpose(0, 2, 1)
            print(f"  {mode}: {summary['nodes']} nodes, {summary['edges']} edges, {summary['branches']} branches; "
                  f"re-imported: parameters identical {same}, max |dy| {np.abs(y_back - y).max():.3g}, accuracy "
                  f"{float((predict(y_back, start) == labels).mean()):.4f}; interpreter: max |dy| "
                  f"{np.abs(y_int - y).max():.3g}, accuracy {float((predict(y_int, start) == labels).mean()):.4f}, "
                  f"predictions identical {bool((predict(y_int, start) == predict(y, start)).all())}")


if __name__ == "__main__":
    main(sys.argv[1])
