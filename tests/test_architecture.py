"""Architecture rules checked on the source text (no database, no models): SQL has one home, and only
source/settings.py reads the environment."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The homes of SQL text: the store's statements, and the HTTP API's own (api keys, pages).
SQL_MODULES = {REPO / "source" / "store" / "sql.py", REPO / "source" / "store" / "api_sql.py"}

# Statement shapes, in the upper case SQL is written in here (prose in docstrings says "select" or
# "update" in lower case and is not matched).
SQL_PATTERN = re.compile(
    r"\bSELECT\b[\s\S]*?\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|ALTER|DROP)\s+TABLE\b|\bPRAGMA\s+\w+\s*(?:[=(]|$)")


def _sql_literals(path: Path) -> list[tuple[int, str]]:
    """(line, SQL) for each string literal of the file that holds SQL (f-string parts included;
    comments are not code)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.lineno, match.group(0)) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            for match in [SQL_PATTERN.search(node.value)] if match]


def test_sql_text_lives_only_in_the_store_sql_module():
    files = sorted([*(REPO / "source").rglob("*.py"), REPO / "headless.py", REPO / "add_task.py"])
    offenders = [f"{path.relative_to(REPO)}:{line}: {sql[:60]!r}"
                 for path in files if path not in SQL_MODULES for line, sql in _sql_literals(path)]
    assert not offenders, "SQL text outside source/store/sql.py:\n" + "\n".join(offenders)


def test_the_sql_check_recognises_each_statement_shape(tmp_path):
    # The rule above must not pass because its pattern went blind, nor flag prose.
    sample = tmp_path / "sample.py"
    sample.write_text("\n".join([
        'a = "SELECT id FROM tasks"', 'b = f"UPDATE tasks SET status = {x}"', 'c = "INSERT INTO t (a) VALUES (1)"',
        'd = "DELETE FROM t"', 'e = "ALTER TABLE tasks ADD COLUMN x"', 'f = "CREATE TABLE IF NOT EXISTS t (a)"',
        'g = ("SELECT a"\n     " FROM b")', 'h = "PRAGMA data_version"', 'i = "PRAGMA journal_mode=WAL"',
        '"""Docstrings may say select the first row from the queue, or update it; PRAGMA data_version changes."""',
    ]), encoding="utf-8")
    assert len(_sql_literals(sample)) == 9, _sql_literals(sample)


def test_status_words_in_sql_are_the_enum_values():
    """Every quoted status word of a task in the SQL module is a TaskStatus value (one vocabulary)."""
    from source.task_status import TaskStatus

    text = (REPO / "source" / "store" / "sql.py").read_text(encoding="utf-8")
    quoted = set(re.findall(r"status\s*(?:=|<>)\s*'([^']*)'", text))
    for group in re.findall(r"status\s+IN\s*\(([^)]*)\)", text):
        quoted |= set(re.findall(r"'([^']*)'", group))
    quoted.discard("running")  # the `workers` table's own status, not a task's
    assert {"Queued", "In Progress", "Complete"} <= quoted, "the pattern went blind"
    assert quoted <= {s.value for s in TaskStatus}, quoted - {s.value for s in TaskStatus}


SOURCE = REPO / "source"



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
        if relative == "settings.py":
            continue
        for line, name in _environment_reads(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"source/{relative}:{line} reads ${name}")
    assert not offenders, "ask source.settings.settings() instead:\n" + "\n".join(offenders)


def test_the_rule_finds_a_direct_read():
    """The check itself works: it sees each way of reading a variable, and only HEADLESS_* names."""
    tree = ast.parse('import os\na = os.environ.get("HEADLESS_X")\nb = os.environ["HEADLESS_Y"]\n'
                     'c = os.getenv("HEADLESS_Z", "1")\nd = os.environ.get("SUPABASE_URL")\n')
    assert _environment_reads(tree) == [(2, "HEADLESS_X"), (3, "HEADLESS_Y"), (4, "HEADLESS_Z")]
