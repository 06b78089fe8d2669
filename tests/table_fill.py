"""Filling a tasks table with many finished rows fast (query-plan tests and the queue benchmark)."""

from __future__ import annotations

import sqlalchemy as sa

from source.store.task_store import TaskStore


def insert_finished_rows(store: TaskStore, n: int) -> None:
    """n Complete rows `done-1..n`, each depending on the previous one, then the planner's statistics
    (PostgreSQL) or a WAL checkpoint (SQLite), as after normal operation."""
    with store.begin() as conn:
        if store.is_sqlite:
            conn.execute(sa.text(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)"
                " INSERT INTO tasks (id, task_type, params, status, created_at, dependant_on)"
                " SELECT 'done-' || i, 'noop', '{}', 'Complete', '2025-01-01T00:00:00.000000Z',"
                " CASE WHEN i > 1 THEN 'done-' || (i - 1) END FROM s"), {"n": n})
        else:
            conn.execute(sa.text(
                "INSERT INTO tasks (id, task_type, params, status, dependant_on) SELECT 'done-' || i, 'noop', '{}',"
                " 'Complete', CASE WHEN i > 1 THEN 'done-' || (i - 1) END FROM generate_series(1, :n) AS i"),
                {"n": n})
    if store.is_sqlite:
        raw = store.engine.raw_connection()  # outside any transaction: a checkpoint cannot run inside one
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
    else:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE tasks"))
