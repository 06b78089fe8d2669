"""The store's database: engine set-up per backend, URL normalising and redaction, retries of
connection problems, and the time parameters every statement takes.

TaskStore (source/store/task_store.py) is a Database; the schema, graph and lifecycle code run their
statements (all from source/store/sql.py) through it.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from source.settings import settings
from source.store import sql as q
from source.store.driver_connection import DriverConnections
from source.store.records import decode_text

T = TypeVar("T")


@functools.lru_cache(maxsize=512)
def text(statement: str) -> sa.TextClause:
    """Parsed statements are reused: parsing the SQL text again on every call costs more than the claim."""
    return sa.text(statement)


def iso(moment: datetime) -> str:
    """A UTC datetime in the seed's form (isoformat: several times cheaper than strftime, same text)."""
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def iso_now(offset_seconds: float = 0.0) -> str:
    """The seed's timestamp form: ISO-8601 UTC with microseconds and a Z (sorts as text)."""
    return iso(datetime.now(UTC) + timedelta(seconds=offset_seconds))


def normalise_db_url(url: str) -> str:
    """`postgresql://` / `postgres://` -> the psycopg 3 driver; a bare path -> sqlite."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if "://" not in url:
        return f"sqlite:///{url}"
    return url


def redact_url(url: str) -> str:
    try:
        return sa.engine.make_url(normalise_db_url(url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported without its text (it may hold a password)
        return "<database url>"


def is_connection_problem(exc: BaseException) -> bool:
    """An error worth retrying on a fresh connection (server gone, network cut, database locked)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _json_or_text(data: Any) -> Any:
    """psycopg's JSON loader: a JSONB value nested too deeply for Python's json (thousands of levels)
    comes back as its text, for parse_params to refuse, instead of raising RecursionError mid-fetch."""
    try:
        return json.loads(data)
    except RecursionError:
        return bytes(data).decode("utf-8")


class Database:
    """One database: a SQLAlchemy engine for transactions, per-thread driver connections for the hot
    single statements, and the dialect's statements (`self.sql`)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_db_url(url)
        self.dialect = q.dialect_for(self.url)
        self.sql = q.Statements(self.dialect)
        self.is_sqlite = self.dialect.name == "sqlite"
        self.engine = self._make_engine(echo)
        self._driver = DriverConnections(self.engine)  # claim, heartbeat and complete skip SQLAlchemy

    def _make_engine(self, echo: bool) -> Engine:
        if self.is_sqlite:
            engine = sa.create_engine(self.url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):  # we issue BEGIN ourselves (pysqlite's own is deferred)
                dbapi_conn.isolation_level = None
                # A TEXT value that is not UTF-8 (another app's latin-1) would make sqlite3 raise
                # OperationalError mid-fetch, taken for an outage and retried forever. Decoded here, such
                # a row reads (marked) and then fails alone. The hot path's driver connections decode in
                # C and fall back to this only when they meet such a row (driver_connection.py).
                dbapi_conn.text_factory = decode_text
                cursor = dbapi_conn.cursor()
                for pragma in q.SQLITE_CONNECT_PRAGMAS:
                    cursor.execute(pragma)
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):  # writers take the lock up front: no deadlock-prone lock upgrades
                conn.exec_driver_sql(q.SQLITE_BEGIN[conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")])

            return engine
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        # Transaction poolers (Supabase port 6543, pgbouncer) cannot keep prepared statements.
        if ":6543" in self.url or settings().pg_no_prepare:
            connect_args["prepare_threshold"] = None
        # No pre-ping (a round trip per transaction): a dropped connection fails its statement, SQLAlchemy
        # discards the pool, and run() retries on a fresh one.
        engine = sa.create_engine(self.url, echo=echo, pool_size=4, max_overflow=4, connect_args=connect_args)

        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_conn, _record):
            from psycopg.types.json import set_json_loads

            set_json_loads(_json_or_text, getattr(dbapi_conn, "driver_connection", dbapi_conn))

        return engine

    def begin(self):
        """A write transaction (SQLite: BEGIN IMMEDIATE)."""
        return self.engine.begin()

    def read(self):
        """A connection for reading (SQLite: its transactions begin DEFERRED, taking no write lock)."""
        conn = self.engine.connect()
        return conn.execution_options(sqlite_begin="DEFERRED") if self.is_sqlite else conn

    def run(self, fn: Callable[[], T], *, retry_for: float | None = 30.0, what: str = "database call",
            on_retry: Callable[[BaseException, float], None] | None = None) -> T:
        """Run fn, retrying connection problems with exponential backoff (forever when retry_for is None)."""
        delay, started = 0.2, time.monotonic()
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_connection_problem(exc):
                    raise
                if retry_for is not None and time.monotonic() - started > retry_for:
                    raise
                if on_retry:
                    on_retry(exc, delay)
                time.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self._driver.close()
        self.engine.dispose()

    def times(self, *, lease_seconds: float = 0.0, delay_seconds: float = 0.0) -> dict[str, Any]:
        """Time parameters for a statement (SQLite uses the ISO texts; PostgreSQL the seconds)."""
        times: dict[str, Any] = {"lease_seconds": lease_seconds, "delay_seconds": delay_seconds}
        if self.is_sqlite:
            now = datetime.now(UTC)
            times["now"] = iso(now)
            times["lease_until"] = iso(now + timedelta(seconds=lease_seconds)) if lease_seconds else times["now"]
            times["not_before_at"] = iso(now + timedelta(seconds=delay_seconds)) if delay_seconds else times["now"]
        return times
