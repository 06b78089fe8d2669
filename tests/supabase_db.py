"""A fresh database prepared as a Supabase project: supabase/tests/supabase_base.sql (what Supabase itself
provides), then the repo's migrations in order. Used by the SQL tests and the HTTP stand-in's tests."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_SQL = REPO / "supabase" / "tests" / "supabase_base.sql"
MIGRATIONS = REPO / "supabase" / "migrations"


def migration_files() -> list[Path]:
    """Timestamp-named files, applied in name order (as the Supabase CLI does)."""
    return sorted(MIGRATIONS.glob("*.sql"))


def apply_supabase(url: str, *, migrations: bool = True) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BASE_SQL.read_text(encoding="utf-8"))
        for path in migration_files() if migrations else []:
            conn.execute(path.read_text(encoding="utf-8"))


@contextmanager
def as_role(conn, role: str, sub: str | None = None):
    """One transaction as PostgREST runs a request: SET LOCAL ROLE plus the JWT's claims."""
    claims = {"role": role, **({"sub": sub} if sub else {})}
    with conn.transaction():
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        conn.execute(f"SET LOCAL ROLE {role}")  # role names are this module's constants, never input
        yield conn
