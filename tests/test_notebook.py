"""The walkthrough notebook runs top to bottom (tiny sizes) and stays narrative: no library code in it.

Its code cells are executed in order as one script in a fresh interpreter -- what "Run all" does,
without needing Jupyter (nbclient would add a kernel and its dependencies to the test extras).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def _code_cells():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    return ["".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code"]


def test_notebook_defines_no_library_code_and_has_no_magics():
    cells = _code_cells()
    assert len(cells) >= 6
    for source in cells:
        assert not re.search(r"^\s*(def|class)\s", source, flags=re.M), source
        assert not re.search(r"^\s*[%!]", source, flags=re.M), source
    imports = {m for source in cells for m in re.findall(r"^(?:from|import)\s+([\w.]+)", source, flags=re.M)}
    assert {m.split(".")[0] for m in imports} <= {"onlinedelay", "json", "os", "pathlib", "numpy", "matplotlib"}


def test_notebook_runs_top_to_bottom_on_a_tiny_setting(tmp_path):
    script = tmp_path / "walkthrough.py"
    script.write_text("\n\n".join(_code_cells()) + "\n")
    env = {**os.environ, "ONLINEDELAY_WALKTHROUGH": "tiny", "ONLINEDELAY_WALKTHROUGH_OUT": str(tmp_path / "runs"),
           "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "test accuracy" in done.stdout and "longest-first:" in done.stdout, done.stdout
    run_dir = tmp_path / "runs" / "synaptic"
    assert (run_dir / "best.h5").is_file() and (run_dir / "metrics.jsonl").read_text().strip()
