"""Creating the tables, or migrating a seed-era (Headless-Wan2GP) `tasks` table in place.

No row is lost: missing columns are added with defaults, the seed's `depends_on` is renamed to
`dependant_on`, and seed rows left In Progress get a lease so they are reclaimed. Safe to run from many
workers at once (SQLite: one writer at a time; PostgreSQL: an advisory lock).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from source.store import sql as q
from source.store.connection import Database, text

log = logging.getLogger("headless.store")


def _columns(db: Database, conn: Connection) -> set[str]:
    return {r[0] for r in conn.execute(text(db.sql.columns_of_tasks))}


def _schema_is_current(db: Database) -> bool:
    try:
        with db.read() as conn:
            row = conn.execute(text(db.sql.schema_version)).first()
            return row is not None and row[0] >= q.SCHEMA_VERSION
    except sa.exc.DBAPIError:  # no headless_schema table yet
        return False


def ensure_schema(db: Database, lease_seconds_for_migrated: float = 300.0) -> None:
    """Create the tables, or migrate a seed-era table in place (no row is lost). Safe to run concurrently."""
    if db.run(lambda: _schema_is_current(db)):
        return
    sql = db.sql

    def migrate() -> None:
        with db.begin() as conn:
            if sql.migration_lock:
                conn.execute(text(sql.migration_lock))
            have = _columns(db, conn)
            existed = bool(have)
            if existed and "dependant_on" not in have and "depends_on" in have:
                conn.exec_driver_sql(sql.rename_depends_on)
            conn.exec_driver_sql(sql.create_seed_table)
            have = _columns(db, conn)
            added = []
            for name, statement in sql.add_columns:
                if name not in have:
                    conn.exec_driver_sql(statement)
                    added.append(name)
            for ddl in sql.other_ddl:
                conn.exec_driver_sql(ddl)
            if existed and "lease_expires_at" in added:
                # Seed rows left In Progress have no lease: give them one, so a dead seed worker's
                # tasks are reclaimed instead of stranded.
                conn.execute(text(sql.lease_unleased_in_progress),
                             db.times(lease_seconds=lease_seconds_for_migrated))
            conn.execute(text(sql.forget_schema_version))
            conn.execute(text(sql.record_schema_version), {"version": q.SCHEMA_VERSION})
            if added:
                log.info("migrated tasks table: added columns %s", ", ".join(added))

    db.run(migrate, what="schema migration")
