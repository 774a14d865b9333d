"""The README's example runs, the CLI answers, and no kernel hard-codes fastmath."""

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from onlinedelay import __version__
from onlinedelay.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_first_lines_are_the_setup_and_test_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert "pip install -e '.[test]'" in first_block[0]
    test_command = first_block[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci, "CI must run exactly the README's test command"


def test_cli_version_and_warmup():
    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(main, ["warmup"])
    assert result.exit_code == 0 and "compiled and cached all kernels in" in result.output


def test_kernels_allow_no_fast_math_beyond_contraction():
    """IEEE semantics everywhere (thresholds, NaN checks); only fused multiply-add may be allowed,
    and only through the project's decorators in kernels/_jit.py."""
    import importlib

    from numba.core.registry import CPUDispatcher

    for path in (ROOT / "onlinedelay" / "kernels").glob("*.py"):
        if path.name != "_jit.py":
            assert "fastmath" not in path.read_text(), path
        module = importlib.import_module(f"onlinedelay.kernels.{path.stem}")
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher):
                assert obj.targetoptions.get("fastmath") in (False, None, {"contract"}), (path.name, name)


def test_importing_the_package_compiles_nothing():
    code = ("import onlinedelay, onlinedelay.kernels as k, sys;"
            "assert all(not f.signatures for f in (k.pulled_current, k.lif_step, k.weight_traces)), 'compiled';"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_importing_the_package_changes_no_global_threading_setting():
    code = ("import os, numba; before = list(numba.config.THREADING_LAYER_PRIORITY);"
            "import onlinedelay, onlinedelay.kernels, onlinedelay.cli;"
            "assert list(numba.config.THREADING_LAYER_PRIORITY) == before, 'layer priority changed';"
            "assert 'OMP_WAIT_POLICY' not in os.environ, 'OMP_WAIT_POLICY set';"
            "from onlinedelay import Network, NetworkConfig; Network(NetworkConfig(), threads=2);"
            "assert numba.config.THREADING_LAYER_PRIORITY[0] == 'omp';"
            "print('ok')")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "ok", out.stderr
