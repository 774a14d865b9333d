"""Run one measurement in a fresh Python process and read back its JSON result.

The memory figures need a fresh process per sequence length (separate peaks); the peers need one
so that torch's OpenMP threads, which stay awake after its runs, never share a process with ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD_TIMEOUT_S = 3600.0


def run_child(entry: str, spec: dict, what: str, timeout_s: float = CHILD_TIMEOUT_S) -> dict:
    """Call ``entry`` ("package.module:function") in a fresh interpreter as ``function(spec_json,
    result_path)``; the function writes its result as JSON to ``result_path``, which is returned.

    Raises RuntimeError naming ``what`` if the child runs over ``timeout_s`` or exits non-zero (with
    the tail of its output).
    """
    module, function = entry.split(":")
    code = f"import sys; from {module} import {function}; {function}(*sys.argv[1:3])"
    with tempfile.TemporaryDirectory(prefix="onlinedelay-bench-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        log_path = os.path.join(tmp, "child.log")
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec), result_path], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{what} ran over {timeout_s:.0f} s and was killed") from None
        if proc.returncode != 0:
            with open(log_path, "rb") as log:
                tail = log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        with open(result_path) as fh:
            return json.load(fh)
