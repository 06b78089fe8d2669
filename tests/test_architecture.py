"""Rules about the code's shape, checked by reading the source."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "source"

# TEMPORARY: modules other helpers are converting to Settings right now (issue 9, part 5). Remove each
# entry as its conversion lands; the test then holds them to the rule too.
NOT_YET_CONVERTED = ("generation/", "downloads.py", "model_files.py", "store/")


def _environment_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every os.environ[...] / os.environ.get(...) / os.getenv(...) with a HEADLESS_* literal."""
    found = []
    for node in ast.walk(tree):
        name_node = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            name_node = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv",
                                                                        "os.environ.setdefault"):
            name_node = node.args[0] if node.args else None
        if isinstance(name_node, ast.Constant) and isinstance(name_node.value, str) \
                and name_node.value.startswith("HEADLESS_"):
            found.append((node.lineno, name_node.value))
    return found


def test_only_settings_reads_headless_variables_from_the_environment():
    offenders = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative == "settings.py" or relative.startswith(NOT_YET_CONVERTED):
            continue
        for line, name in _environment_reads(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"source/{relative}:{line} reads ${name}")
    assert not offenders, "ask source.settings.settings() instead:\n" + "\n".join(offenders)


def test_the_rule_finds_a_direct_read():
    """The check itself works: it sees each way of reading a variable, and only HEADLESS_* names."""
    tree = ast.parse('import os\na = os.environ.get("HEADLESS_X")\nb = os.environ["HEADLESS_Y"]\n'
                     'c = os.getenv("HEADLESS_Z", "1")\nd = os.environ.get("SUPABASE_URL")\n')
    assert _environment_reads(tree) == [(2, "HEADLESS_X"), (3, "HEADLESS_Y"), (4, "HEADLESS_Z")]
