"""A connection straight on the database driver, for the statements every task runs (claim, heartbeat,
complete).

SQLAlchemy's execute and result machinery costs more per statement than the statement itself does
(about 0.4 ms against 0.05 ms for a claim on SQLite), and a PostgreSQL transaction opened through it
takes three round trips (BEGIN, the statement, COMMIT). The hot statements are single statements, so
here they run in one round trip each: on PostgreSQL in autocommit mode; on SQLite inside BEGIN IMMEDIATE
(a deferred write transaction in WAL mode fails when another writer got in between its read and its write).

On SQLite, writers on this path also queue on an flock of `<database>-writers` before BEGIN IMMEDIATE.
SQLite's busy handler sleeps and retries (1, 2, 5 ... 100 ms) while another process holds the write
lock, which is held for about 0.1 ms; the kernel instead wakes the next waiter the moment the lock is
released. Two workers on one database went from ~3,200 to ~4,500 tasks/s. The lock is released when
its process dies; writers that do not take it (other apps, rare statements) still get SQLite's own
busy timeout.

Each thread gets its own connection. After any error the connection is dropped, so the next call
reconnects, and the error is re-raised as SQLAlchemy's exception class (TaskStore.run retries
connection problems by those classes).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from source.store import sql as q
from source.store.records import decode_text

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's own busy handling only
    fcntl = None


class DriverConnections:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._lock_fds: list[int] = []
        database = engine.url.database if self.is_sqlite else None
        self._lock_path = (f"{database}-writers" if fcntl is not None and database and database != ":memory:"
                           else None)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one instance per store, kept for its life
    def _driver_sql(self, statement: str) -> str:
        """The statement in the driver's parameter style. sqlite3 takes `:name` as written; for psycopg
        SQLAlchemy's compiler writes `%(name)s` and escapes literal percent signs."""
        if self.is_sqlite:
            return statement
        return str(sa.text(statement).compile(dialect=self.engine.dialect))

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        fairy = self.engine.raw_connection()  # the engine's connect hooks run (SQLite pragmas, timeouts)
        conn = fairy.driver_connection
        fairy.detach()  # ours for good: closed, never returned to the pool with autocommit switched on
        if self.is_sqlite:
            conn.text_factory = str  # C decoding on the hot path; see _sqlite_transaction for non-UTF-8 text
        else:
            conn.rollback()  # the dialect's first-connect checks may have opened a transaction
            conn.autocommit = True
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
            if self._lock_path and not hasattr(self._local, "lock_fd"):
                try:
                    self._local.lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                    self._lock_fds.append(self._local.lock_fd)
                except OSError:
                    self._local.lock_fd = None  # e.g. a read-only folder: SQLite's own busy handling only
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        try:
            conn.close()  # an open SQLite transaction is rolled back with it
        except Exception:  # noqa: BLE001 - a broken connection is being dropped anyway
            pass

    def write(self, statement: str, params: dict[str, Any]) -> list[tuple]:
        """Run one writing statement as its own transaction. Returns the rows it returned."""
        if self.is_sqlite:
            return self.write_sqlite_batch([(statement, params)])[0]
        return self._pg_write(statement, params)

    def write_sqlite_batch(self, statements: list[tuple[str, dict[str, Any]]]) -> list[list[tuple]]:
        """SQLite: several statements in one write transaction (all writers share one lock, so fewer
        transactions means fewer lock hand-overs). Returns each statement's rows."""
        assert self.is_sqlite
        try:
            conn = self._connection()
            lock_fd = getattr(self._local, "lock_fd", None)
            if lock_fd is not None:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                results = self._sqlite_transaction(conn, statements)
            finally:
                if lock_fd is not None:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
            return results
        except BaseException as exc:
            self._failed(exc, statements[0][0], statements[0][1])
            raise

    @staticmethod
    def _sqlite_transaction(conn: Any, statements: list[tuple[str, dict[str, Any]]]) -> list[list[tuple]]:
        conn.execute(q.SQLITE_BEGIN["IMMEDIATE"])
        try:
            results = [conn.execute(sql, params).fetchall() for sql, params in statements]
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("Could not decode to UTF-8"):
                raise
            # A row holds text that is not UTF-8 (an app wrote latin-1). Failing here would look like an
            # outage: the claim retried forever and the completion batched with it lost. Redo the
            # transaction decoding text in Python, so the row reads, marked, and fails alone. Only then:
            # the Python decoder costs ~0.6 us per text value, a few percent of a claim.
            conn.execute(q.ROLLBACK)
            conn.text_factory = decode_text
            try:
                conn.execute(q.SQLITE_BEGIN["IMMEDIATE"])
                results = [conn.execute(sql, params).fetchall() for sql, params in statements]
            finally:
                conn.text_factory = str
        conn.execute(q.COMMIT)
        return results

    def _pg_write(self, statement: str, params: dict[str, Any]) -> list[tuple]:
        try:
            cursor = self._connection().execute(self._driver_sql(statement), params)
            return cursor.fetchall() if cursor.description else []
        except BaseException as exc:
            self._failed(exc, statement, params)
            raise

    def _failed(self, exc: BaseException, statement: str, params: dict[str, Any]) -> None:
        """Drop the connection; a driver error is raised again as SQLAlchemy's class for it."""
        self._drop()
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        if isinstance(exc, dbapi_error):
            raise sa.exc.DBAPIError.instance(statement, params, exc, dbapi_error,
                                              dialect=self.engine.dialect) from exc

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
            fds, self._lock_fds = self._lock_fds, []
            self._local = threading.local()
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection is being dropped anyway
                pass
        for fd in fds:
            os.close(fd)
