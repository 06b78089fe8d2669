"""Architecture rules checked on the source text (no database, no models)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SQL_MODULES = {REPO / "source" / "store" / "sql.py"}  # the one home of SQL text

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
