"""Waking an idle worker when work may have become ready, without burning CPU.

PostgreSQL: LISTEN on the channel the tasks trigger notifies (new rows, rows that became Queued or
Complete); where LISTEN is unavailable (e.g. behind a transaction pooler) it falls back to polling.
SQLite: `PRAGMA data_version` changes whenever another connection commits; checking it is cheap.
Either way the worker also polls every --poll-interval, so a lost notification only costs latency.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod

import sqlalchemy as sa

from source.store import sql as q


class Waker(ABC):
    @abstractmethod
    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Block up to timeout; True when a change was seen. Returns early when stop is set."""

    def close(self) -> None:  # noqa: B027 - most wakers hold nothing to close
        pass


class SqliteWaker(Waker):
    CHECK_EVERY = 0.05

    def __init__(self, url: str) -> None:
        path = sa.engine.make_url(url).database
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._version = self._read()

    def _read(self) -> int:
        return self._conn.execute(q.SQLITE_DATA_VERSION).fetchone()[0]

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            try:
                version = self._read()
            except sqlite3.Error:
                version = self._version
            if version != self._version:
                self._version = version
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            stop.wait(min(self.CHECK_EVERY, remaining))
        return False

    def close(self) -> None:
        self._conn.close()


class PostgresWaker(Waker):
    RECONNECT_EVERY = 10.0

    def __init__(self, url: str, on_event=None) -> None:
        self._conninfo = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn = None
        self._next_connect = 0.0
        self._on_event = on_event or (lambda event, **fields: None)
        self.listening = False
        self._connect()

    def _connect(self) -> None:
        import psycopg

        self._next_connect = time.monotonic() + self.RECONNECT_EVERY
        try:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            self._conn.execute(q.LISTEN)
            self.listening = True
        except Exception as exc:  # noqa: BLE001 - LISTEN unavailable: polling still works
            self._close_conn()
            self._on_event("listen_unavailable", reason=f"{type(exc).__name__}: {exc}",
                           fallback="polling")
            self.listening = False

    def _close_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a broken connection is being dropped anyway
                pass
        self._conn = None

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        if self._conn is None and time.monotonic() >= self._next_connect:
            self._connect()
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._conn is None:
                stop.wait(remaining)
                return False
            try:
                for _ in self._conn.notifies(timeout=min(0.5, remaining), stop_after=1):
                    return True
            except Exception:  # noqa: BLE001 - a lost LISTEN connection: poll, reconnect later
                self._close_conn()
        return False

    def close(self) -> None:
        self._close_conn()


class PollingWaker(Waker):
    def wait(self, timeout: float, stop: threading.Event) -> bool:
        stop.wait(timeout)
        return False


def make_waker(url: str, *, listen: bool = True, on_event=None) -> Waker:
    if not listen:
        return PollingWaker()
    if url.startswith("sqlite"):
        return SqliteWaker(url)
    return PostgresWaker(url, on_event=on_event)
