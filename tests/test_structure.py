"""The package's structure: no module reads another object's or module's private names, and no
module is over ~500 lines except where one cohesive algorithm needs it (listed, with the reason)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "onlinedelay"
NAMEDTUPLE_API = {"_fields", "_replace", "_asdict", "_make", "_field_defaults"}
MAX_LINES = 500
LONG_MODULES = {
    # one cohesive algorithm each: splitting would scatter a single recursion over files
    "learning.py": "the three-factor rule: per-layer traces, chunking, flush and the optimizer step",
}


def _private_uses(source: str, where: str):
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr in NAMEDTUPLE_API:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            yield f"{where}:{node.lineno}: {ast.unparse(node)}"
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name != "_version" \
                        and not (node.module or "").endswith("_jit") and alias.name != "_jit":
                    yield f"{where}:{node.lineno}: from {node.module} import {alias.name}"


def test_no_module_reads_private_names_of_another_object_or_module():
    hits = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_uses(path.read_text(), path.name)]
    assert not hits, "\n".join(hits)


def test_the_scan_finds_a_planted_private_access():
    planted = "from .datasets.binning import _SLACK\n\ndef f(self, runner):\n    return runner._steps_run + self._ok\n"
    assert [hit.split(": ", 1)[1] for hit in _private_uses(planted, "planted.py")] == \
        ["from datasets.binning import _SLACK", "runner._steps_run"]


def test_modules_stay_small_unless_listed():
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and path.name not in LONG_MODULES:
            long[str(path.relative_to(PACKAGE))] = n
    assert not long, f"modules over {MAX_LINES} lines: {long}"
