"""The task store: every read and write of the `tasks` table, on SQLite or PostgreSQL.

The worker, the CLI and tests use only this class. SQL text lives in source/store/sql.py.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from source.store import sql as q
from source.store.driver_connection import DriverConnections
from source.store.sql import CANCELLED, COMPLETE, FAILED, IN_PROGRESS, QUEUED, TERMINAL
from source.task_context import ChildTask, child_task_id

log = logging.getLogger("headless.store")


@functools.lru_cache(maxsize=512)
def _text(statement: str) -> sa.TextClause:
    """Parsed statements are reused: parsing the SQL text again on every call costs more than the claim."""
    return sa.text(statement)


T = TypeVar("T")


def _iso(moment: datetime) -> str:
    """A UTC datetime in the seed's form (isoformat: several times cheaper than strftime, same text)."""
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def iso_now(offset_seconds: float = 0.0) -> str:
    """The seed's timestamp form: ISO-8601 UTC with microseconds and a Z (sorts as text)."""
    return _iso(datetime.now(timezone.utc) + timedelta(seconds=offset_seconds))


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
    except Exception:  # an unparsable URL is reported without its text, which may hold a password
        return "<database url>"


class StoreError(Exception):
    """A request the store refuses (unknown id, wrong state, bad dependency): the message says why."""


@dataclass
class Claim:
    """A task this worker holds: (id, worker, attempt) guard every later write."""

    row: dict[str, Any]

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def worker_id(self) -> str:
        return self.row["worker_id"]

    @property
    def attempt(self) -> int:
        return int(self.row["attempts"])

    @property
    def task_type(self) -> str:
        return self.row["task_type"]

    def guard(self) -> dict[str, Any]:
        return {"id": self.id, "worker": self.worker_id, "attempt": self.attempt}


def _claim_from(rows: list[tuple]) -> Claim | None:
    """The Claim of a claim statement's result rows (q.CLAIM_COLUMNS), or None when nothing was ready."""
    return Claim(dict(zip(q.CLAIM_COLUMNS, rows[0]))) if rows else None


def parse_params(raw: Any) -> Any:
    """Params as stored: a JSON text (SQLite, seed) or already decoded (PostgreSQL JSONB)."""
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return json.loads(raw)
    return raw


def _is_connection_problem(exc: BaseException) -> bool:
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


class TaskStore:
    def __init__(self, url: str, *, lease_seconds_for_migrated: float = 300.0, echo: bool = False) -> None:
        self.url = normalise_db_url(url)
        self.dialect = q.dialect_for(self.url)
        self.sql = q.Statements(self.dialect)
        self.is_sqlite = self.dialect.name == "sqlite"
        self.engine = self._make_engine(echo)
        self._driver = DriverConnections(self.engine)  # claim, heartbeat and complete skip SQLAlchemy
        self.ensure_schema(lease_seconds_for_migrated)

    # ------------------------------------------------------------------ connections
    def _make_engine(self, echo: bool) -> Engine:
        if self.is_sqlite:
            engine = sa.create_engine(self.url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):  # we issue BEGIN ourselves (pysqlite's own is deferred)
                dbapi_conn.isolation_level = None
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: the hot indexes stay in memory as rows pile up
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):  # writers take the lock up front: no deadlock-prone lock upgrades
                conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get("sqlite_begin", "IMMEDIATE"))

            return engine
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        # Transaction poolers (Supabase port 6543, pgbouncer) cannot keep prepared statements.
        if ":6543" in self.url or os.environ.get("HEADLESS_PG_NO_PREPARE") == "1":
            connect_args["prepare_threshold"] = None
        # No pre-ping (a round trip per transaction): a dropped connection fails its statement, SQLAlchemy
        # discards the pool, and run() retries on a fresh one.
        return sa.create_engine(self.url, echo=echo, pool_size=4, max_overflow=4,
                                connect_args=connect_args)

    def begin(self):
        """A write transaction (SQLite: BEGIN IMMEDIATE)."""
        return self.engine.begin()

    def _read(self):
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
                if not _is_connection_problem(exc):
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

    def _times(self, *, lease_seconds: float = 0.0, delay_seconds: float = 0.0) -> dict[str, Any]:
        """Time parameters for a statement (SQLite uses the ISO texts; PostgreSQL the seconds)."""
        times: dict[str, Any] = {"lease_seconds": lease_seconds, "delay_seconds": delay_seconds}
        if self.is_sqlite:
            now = datetime.now(timezone.utc)
            times["now"] = _iso(now)
            times["lease_until"] = _iso(now + timedelta(seconds=lease_seconds)) if lease_seconds else times["now"]
            times["not_before_at"] = _iso(now + timedelta(seconds=delay_seconds)) if delay_seconds else times["now"]
        return times

    def _json(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value)

    # ------------------------------------------------------------------ schema
    def _columns(self, conn: Connection) -> set[str]:
        if self.is_sqlite:
            return {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(tasks)")}
        rows = conn.execute(_text("SELECT column_name FROM information_schema.columns"
                                    " WHERE table_name = 'tasks' AND table_schema = current_schema()"))
        return {r[0] for r in rows}

    def _schema_is_current(self) -> bool:
        try:
            with self._read() as conn:
                row = conn.execute(_text("SELECT version FROM headless_schema WHERE name = 'tasks'")).first()
                return row is not None and row[0] >= q.SCHEMA_VERSION
        except sa.exc.DBAPIError:
            return False

    def ensure_schema(self, lease_seconds_for_migrated: float = 300.0) -> None:
        """Create the tables, or migrate a seed-era table in place (no row is lost). Safe to run concurrently."""
        if self.run(self._schema_is_current):
            return

        def migrate() -> None:
            with self.begin() as conn:
                if not self.is_sqlite:  # one migrator at a time across all machines
                    conn.execute(_text("SELECT pg_advisory_xact_lock(7418806245)"))
                existed = bool(self._columns(conn))
                if existed and "dependant_on" not in self._columns(conn) and "depends_on" in self._columns(conn):
                    conn.exec_driver_sql("ALTER TABLE tasks RENAME COLUMN depends_on TO dependant_on")
                conn.exec_driver_sql(self.dialect.seed_table)
                have = self._columns(conn)
                added = []
                for name, ddl in self.dialect.extra_columns:
                    if name not in have:
                        conn.exec_driver_sql(self.dialect.add_column.format(name=name, ddl=ddl))
                        added.append(name)
                for ddl in self.dialect.other_tables + self.dialect.indexes + self.dialect.triggers:
                    conn.exec_driver_sql(ddl)
                if existed and "lease_expires_at" in added:
                    # Seed rows left In Progress have no lease: give them one, so a dead seed worker's
                    # tasks are reclaimed instead of stranded.
                    conn.execute(_text(f"UPDATE tasks SET lease_expires_at = {self.dialect.lease_until}"
                                         " WHERE status = 'In Progress' AND lease_expires_at IS NULL"),
                                 self._times(lease_seconds=lease_seconds_for_migrated))
                conn.execute(_text("DELETE FROM headless_schema WHERE name = 'tasks'"))
                conn.execute(_text("INSERT INTO headless_schema (name, version) VALUES ('tasks', :v)"),
                             {"v": q.SCHEMA_VERSION})
                if added:
                    log.info("migrated tasks table: added columns %s", ", ".join(added))

        self.run(migrate, what="schema migration")

    # ------------------------------------------------------------------ inserting
    def _insert_row(self, conn: Connection, *, task_id: str, task_type: str, params: Any, priority: int,
                    depends_on: Sequence[str], project_id: str | None, max_attempts: int,
                    timeout_seconds: float | None, parent_task_id: str | None = None,
                    completes_parent: bool = False, if_absent: bool = False) -> bool:
        columns = {
            "id": task_id, "task_type": task_type,
            "params": params if isinstance(params, str) else json.dumps(params),
            "status": QUEUED, "dependant_on": depends_on[0] if depends_on else None, "project_id": project_id,
            "priority": int(priority), "max_attempts": int(max_attempts), "timeout_seconds": timeout_seconds,
            "parent_task_id": parent_task_id, "completes_parent": 1 if completes_parent else 0,
        }
        names = list(columns)
        values = [f":{n}" for n in names]
        names += ["created_at", "updated_at"]
        if self.is_sqlite:
            columns["created_at"] = columns["updated_at"] = iso_now()
            values += [":created_at", ":updated_at"]
        else:  # the server's clock, per row: now() is one value per transaction and would scramble the order
            values += ["clock_timestamp()", "clock_timestamp()"]
        conflict = " ON CONFLICT (id) DO NOTHING" if if_absent else ""
        result = conn.execute(_text(f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join(values)}){conflict}"),
                              columns)
        inserted = result.rowcount != 0
        if inserted and len(depends_on) > 1:
            for parent in dict.fromkeys(depends_on):
                conn.execute(_text(self.sql.insert_edge + " ON CONFLICT DO NOTHING"),
                             {"task_id": task_id, "depends_on": parent})
        return inserted

    def _check_parents_exist(self, conn: Connection, parents: Iterable[str]) -> None:
        for parent in parents:
            if conn.execute(_text("SELECT 1 FROM tasks WHERE id = :id"), {"id": parent}).first() is None:
                raise StoreError(f"depends-on task {parent} does not exist")

    def add_task(self, task_type: str, params: Any, *, task_id: str | None = None, priority: int = 0,
                 depends_on: Sequence[str] = (), project_id: str | None = None, max_attempts: int = 3,
                 timeout_seconds: float | None = None) -> str:
        """Insert one Queued task (its parents must exist, so no cycle can form). Returns its id."""
        return self.add_tasks([dict(task_type=task_type, params=params, task_id=task_id, priority=priority,
                                    depends_on=list(depends_on), project_id=project_id,
                                    max_attempts=max_attempts, timeout_seconds=timeout_seconds)])[0]

    def add_tasks(self, specs: Sequence[dict[str, Any]]) -> list[str]:
        """Insert many tasks in one transaction (all or nothing). A spec may depend on earlier specs' ids."""
        def insert() -> list[str]:
            ids: list[str] = []
            with self.begin() as conn:
                for spec in specs:
                    task_id = spec.get("task_id") or str(uuid.uuid4())
                    depends_on = list(spec.get("depends_on") or [])
                    self._check_parents_exist(conn, depends_on)
                    if conn.execute(_text("SELECT 1 FROM tasks WHERE id = :id"), {"id": task_id}).first():
                        raise StoreError(f"a task with id {task_id} already exists")
                    self._insert_row(conn, task_id=task_id, task_type=spec["task_type"], params=spec["params"],
                                     priority=spec.get("priority") or 0, depends_on=depends_on,
                                     project_id=spec.get("project_id"),
                                     max_attempts=spec.get("max_attempts") or 3,
                                     timeout_seconds=spec.get("timeout_seconds"))
                    ids.append(task_id)
            return ids

        return self.run(insert, what="insert tasks")

    # ------------------------------------------------------------------ claiming
    def claim(self, worker_id: str, lease_seconds: float, task_types: Sequence[str] | None = None) -> Claim | None:
        """Atomically take the best ready task: Queued, not-before passed, every parent Complete,
        highest priority first, then oldest."""
        rows = self._driver.write(*self._claim_statement(worker_id, lease_seconds, task_types))
        return _claim_from(rows)

    def _claim_statement(self, worker_id: str, lease_seconds: float,
                         task_types: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
        types = list(task_types or [])
        params = {"worker": worker_id, **self._times(lease_seconds=lease_seconds), "types": types or None}
        params.update({f"type{i}": t for i, t in enumerate(types)})
        return self.sql.claim_sql(len(types)), params

    def complete_and_claim(self, claim: Claim, output_location: str | None, result: dict | None, *,
                           worker_id: str, lease_seconds: float,
                           task_types: Sequence[str] | None = None) -> tuple[bool, Claim | None]:
        """Complete `claim` (as complete()) and claim the next ready task. Returns (completed, next claim).

        SQLite: both in one write transaction, so a busy worker takes the database's one write lock once
        per task instead of twice. PostgreSQL: two single-statement round trips (a transaction around
        them would add two more); if the claim then hits a connection problem, no claim is returned and
        the worker's loop claims again, so the completion is never repeated."""
        if not self.is_sqlite or claim.row.get("completes_parent", 1) != 0:
            completed = self.complete(claim, output_location, result)
            try:
                return completed, self.claim(worker_id, lease_seconds, task_types)
            except Exception as exc:
                if _is_connection_problem(exc):
                    return completed, None
                raise
        done, claimed = self._driver.write_sqlite_batch([
            (self.sql.complete, self._complete_params(claim, output_location, result)),
            self._claim_statement(worker_id, lease_seconds, task_types)])
        return bool(done), _claim_from(claimed)

    def _complete_params(self, claim: Claim, output_location: str | None, result: dict | None) -> dict[str, Any]:
        return {**claim.guard(), **self._times(), "output_location": output_location, "result": self._json(result)}

    def heartbeat(self, claim: Claim, lease_seconds: float, progress: float | None = None,
                  message: str | None = None) -> tuple[bool, bool]:
        """Renew the lease and write progress. Returns (still ours, cancel requested)."""
        params = {**claim.guard(), **self._times(lease_seconds=lease_seconds), "progress": progress,
                  "message": message}
        rows = self._driver.write(self.sql.heartbeat, params)
        if not rows:
            return False, False
        return True, bool(rows[0][0])

    # ------------------------------------------------------------------ ending a claimed task
    def complete(self, claim: Claim, output_location: str | None, result: dict | None = None) -> bool:
        """Complete (guarded). When the task completes its orchestrator, the orchestrator completes too."""
        params = self._complete_params(claim, output_location, result)
        if claim.row.get("completes_parent", 1) == 0:  # the common case: one statement, one round trip
            return bool(self._driver.write(self.sql.complete, params))
        with self.begin() as conn:
            row = conn.execute(_text(self.sql.complete), params).first()
            if row is None:
                return False
            parent, completes_parent = row[0], row[1]
            while parent and completes_parent:
                conn.execute(_text(self.sql.complete_parent),
                             {**self._times(), "id": parent, "output_location": output_location,
                              "result": self._json({**(result or {}), "completed_by": claim.id})})
                up = conn.execute(_text("SELECT parent_task_id, completes_parent, status FROM tasks WHERE id = :id"),
                                  {"id": parent}).first()
                if up is None or up[2] != COMPLETE:
                    break
                parent, completes_parent = up[0], up[1]
        return True

    def fail(self, claim: Claim, message: str) -> bool:
        return self._end_claimed(claim, self.sql.fail, FAILED, message)

    def mark_cancelled(self, claim: Claim, message: str) -> bool:
        return self._end_claimed(claim, self.sql.cancelled, CANCELLED, message)

    def _end_claimed(self, claim: Claim, statement: str, status: str, message: str) -> bool:
        with self.begin() as conn:
            row = conn.execute(_text(statement), {**claim.guard(), **self._times(), "message": message}).first()
            if row is None:
                return False
            self._propagate_end(conn, claim.id, claim.task_type, status, message, row[0])
        return True

    def retry_later(self, claim: Claim, message: str, delay_seconds: float) -> bool:
        params = {**claim.guard(), **self._times(delay_seconds=delay_seconds), "message": message}
        with self.begin() as conn:
            return conn.execute(_text(self.sql.retry_later), params).rowcount == 1

    def hand_back(self, claim: Claim) -> bool:
        """Back to Queued without spending the attempt (graceful shutdown)."""
        with self.begin() as conn:
            return conn.execute(_text(self.sql.hand_back), {**claim.guard(), **self._times()}).rowcount == 1

    def spawn_children(self, claim: Claim, children: Sequence[ChildTask]) -> bool:
        """Insert an orchestrator's children and let it wait without a worker, in one transaction.
        Children have deterministic ids, so a re-run inserts nothing twice."""
        keys = [c.key for c in children]
        if len(set(keys)) != len(keys):
            raise StoreError("child task keys must be unique")
        if sum(1 for c in children if c.completes_parent) > 1:
            raise StoreError("at most one child task may complete the orchestrator")
        ids = {c.key: child_task_id(claim.id, c.key) for c in children}
        order = _topological(children)
        parent_row = claim.row

        with self.begin() as conn:
            if conn.execute(_text(self.sql.await_children), {**claim.guard(), **self._times()}).rowcount != 1:
                return False
            for child in order:
                deps = [ids.get(d, d) for d in child.depends_on]
                external = [d for d in child.depends_on if d not in ids]
                self._check_parents_exist(conn, external)
                self._insert_row(
                    conn, task_id=ids[child.key], task_type=child.task_type, params=child.params,
                    priority=child.priority if child.priority is not None else parent_row.get("priority") or 0,
                    depends_on=deps, project_id=parent_row.get("project_id"),
                    max_attempts=child.max_attempts or parent_row.get("max_attempts") or 3,
                    timeout_seconds=None, parent_task_id=claim.id, completes_parent=child.completes_parent,
                    if_absent=True)
            # A re-run may find its children already finished.
            for child in children:
                row = conn.execute(_text("SELECT status, output_location, result, error_message FROM tasks"
                                           " WHERE id = :id"), {"id": ids[child.key]}).first()
                if row is None:
                    continue
                if child.completes_parent and row[0] == COMPLETE:
                    conn.execute(_text(self.sql.complete_parent),
                                 {**self._times(), "id": claim.id, "output_location": row[1],
                                  "result": row[2] if isinstance(row[2], str) or row[2] is None else json.dumps(row[2])})
                elif row[0] in (FAILED, CANCELLED):
                    message = f"child task {ids[child.key]} ({child.task_type}) {row[0].lower()}: {row[3] or ''}"
                    self._end_parent(conn, claim.id, FAILED if row[0] == FAILED else CANCELLED, message)
        return True

    # ------------------------------------------------------------------ propagation
    def _end_parent(self, conn: Connection, parent_id: str, status: str, message: str) -> None:
        row = conn.execute(_text(self.sql.end_parent),
                           {**self._times(), "id": parent_id, "status": status, "message": message}).first()
        if row is not None:
            task_type = conn.execute(_text("SELECT task_type FROM tasks WHERE id = :id"), {"id": parent_id}).scalar()
            self._propagate_end(conn, parent_id, task_type, status, message, row[0])

    def _propagate_end(self, conn: Connection, task_id: str, task_type: str, status: str, message: str,
                       parent_task_id: str | None) -> None:
        """A task ended Failed or Cancelled: nothing waiting on it may stay Queued forever.
        Dependents end with the same status and an error naming it; a waiting orchestrator fails naming
        its child; an orchestrator's own unfinished children are cancelled."""
        work = [(task_id, task_type, status, message, parent_task_id)]
        while work:
            tid, ttype, st, why, parent = work.pop()
            if st not in (FAILED, CANCELLED):
                continue
            word = "failed" if st == FAILED else "was cancelled"
            children = [r[0] for r in conn.execute(_text(self.sql.children_by_dependant_on), {"id": tid})]
            children += [r[0] for r in conn.execute(_text(self.sql.children_by_edges), {"id": tid})]
            for child in dict.fromkeys(children):
                child_msg = f"not run: task {tid} ({ttype}) that it depends on {word}: {why}"
                row = conn.execute(_text(self.sql.end_queued),
                                   {**self._times(), "id": child, "status": st, "message": child_msg[:2000]}).first()
                if row is not None:
                    ctype = conn.execute(_text("SELECT task_type FROM tasks WHERE id = :id"), {"id": child}).scalar()
                    work.append((child, ctype, st, child_msg, row[0]))
            if parent:
                parent_msg = f"child task {tid} ({ttype}) {word}: {why}"
                row = conn.execute(_text(self.sql.end_parent),
                                   {**self._times(), "id": parent, "status": st, "message": parent_msg[:2000]}).first()
                if row is not None:
                    ptype = conn.execute(_text("SELECT task_type FROM tasks WHERE id = :id"), {"id": parent}).scalar()
                    work.append((parent, ptype, st, parent_msg, row[0]))
            for child, child_status in conn.execute(_text(self.sql.child_tasks), {"id": tid}).all():
                if child_status == QUEUED:
                    child_msg = f"not run: its orchestrator {tid} ({ttype}) {word}: {why}"
                    row = conn.execute(_text(self.sql.end_queued),
                                       {**self._times(), "id": child, "status": CANCELLED,
                                        "message": child_msg[:2000]}).first()
                    if row is not None:
                        ctype = conn.execute(_text("SELECT task_type FROM tasks WHERE id = :id"),
                                             {"id": child}).scalar()
                        work.append((child, ctype, CANCELLED, child_msg, None))
                elif child_status == IN_PROGRESS:
                    conn.execute(_text(self.sql.request_cancel_running), {**self._times(), "id": child})

    # ------------------------------------------------------------------ maintenance
    def reclaim_expired(self) -> list[dict[str, Any]]:
        """Tasks whose worker stopped renewing its lease: re-queue them (the attempt counts), or fail them
        past max_attempts. Returns what was done, for the log."""
        done = []
        with self.begin() as conn:
            rows = conn.execute(_text(self.sql.expired_leases), self._times()).mappings().all()
            for r in rows:
                attempt, max_attempts = int(r["attempts"]), int(r["max_attempts"])
                base = (f"lease expired during attempt {attempt} of {max_attempts}: worker {r['worker_id']} stopped"
                        " renewing it (crashed, killed or cut off)")
                params = {**self._times(), "id": r["id"], "attempt": attempt}
                if attempt >= max_attempts:
                    message = base + "; no attempts left"
                    row = conn.execute(_text(self.sql.fail_expired), {**params, "message": message}).first()
                    if row is not None:
                        task_type = conn.execute(_text("SELECT task_type FROM tasks WHERE id = :id"),
                                                 {"id": r["id"]}).scalar()
                        self._propagate_end(conn, r["id"], task_type, FAILED, message, row[0])
                        done.append({"task_id": r["id"], "worker_id": r["worker_id"], "attempt": attempt,
                                     "outcome": FAILED})
                else:
                    if conn.execute(_text(self.sql.reclaim_expired), {**params, "message": base}).rowcount:
                        done.append({"task_id": r["id"], "worker_id": r["worker_id"], "attempt": attempt,
                                     "outcome": QUEUED})
        return done

    def sweep_stranded(self) -> list[dict[str, Any]]:
        """Queued rows that can never run (a parent that does not exist, or one that already ended
        Failed/Cancelled, e.g. rows inserted by other apps): end them with a clear error."""
        done = []
        with self.begin() as conn:
            missing = conn.execute(_text(self.sql.orphans)).all() + conn.execute(_text(self.sql.orphan_edges)).all()
            for task_id, parent in missing:
                message = f"depends on task {parent}, which does not exist"
                if conn.execute(_text(self.sql.end_queued),
                                {**self._times(), "id": task_id, "status": FAILED, "message": message}).first():
                    self._propagate_end(conn, task_id, self._type_of(conn, task_id), FAILED, message, None)
                    done.append({"task_id": task_id, "reason": message})
            ended = conn.execute(_text(self.sql.stranded)).all() + conn.execute(_text(self.sql.stranded_edges)).all()
            for task_id, parent, parent_status in ended:
                word = "failed" if parent_status == FAILED else "was cancelled"
                message = f"not run: task {parent} that it depends on {word}"
                if conn.execute(_text(self.sql.end_queued),
                                {**self._times(), "id": task_id, "status": parent_status, "message": message}).first():
                    self._propagate_end(conn, task_id, self._type_of(conn, task_id), parent_status, message, None)
                    done.append({"task_id": task_id, "reason": message})
        return done

    def _type_of(self, conn: Connection, task_id: str) -> str:
        return conn.execute(_text("SELECT task_type FROM tasks WHERE id = :id"), {"id": task_id}).scalar()

    # ------------------------------------------------------------------ user actions
    def request_cancel(self, task_id: str) -> str:
        """Cancel: a Queued task (or a waiting orchestrator) ends Cancelled now; a running one is asked to
        stop. Returns the task's status afterwards."""
        message = "cancelled on request"
        with self.begin() as conn:
            row = conn.execute(_text("SELECT status, task_type, parent_task_id, awaiting_children FROM tasks"
                                       " WHERE id = :id"), {"id": task_id}).first()
            if row is None:
                raise StoreError(f"no task with id {task_id}")
            status, task_type, parent, awaiting = row
            if status == QUEUED:
                conn.execute(_text(self.sql.cancel_queued), {**self._times(), "id": task_id, "message": message})
                self._propagate_end(conn, task_id, task_type, CANCELLED, message, parent)
                return CANCELLED
            if status == IN_PROGRESS and awaiting:
                conn.execute(_text(self.sql.cancel_waiting_parent),
                             {**self._times(), "id": task_id, "message": message})
                self._propagate_end(conn, task_id, task_type, CANCELLED, message, parent)
                return CANCELLED
            if status == IN_PROGRESS:
                conn.execute(_text(self.sql.request_cancel_running), {**self._times(), "id": task_id})
                return IN_PROGRESS
            return status

    def _descendants(self, conn: Connection, task_id: str) -> list[str]:
        seen: dict[str, None] = {}
        frontier = [task_id]
        while frontier:
            nxt = []
            for tid in frontier:
                kids = [r[0] for r in conn.execute(_text(self.sql.children_by_dependant_on), {"id": tid})]
                kids += [r[0] for r in conn.execute(_text(self.sql.children_by_edges), {"id": tid})]
                for k in kids:
                    if k not in seen and k != task_id:
                        seen[k] = None
                        nxt.append(k)
            frontier = nxt
        return list(seen)

    def retry(self, task_id: str) -> list[str]:
        """Re-queue a Failed/Cancelled task and its Failed/Cancelled descendants (Complete work is never
        redone). An orchestrator that failed because of it waits again, and its other children that were
        ended with it are re-queued. Returns the ids re-queued."""
        with self.begin() as conn:
            row = conn.execute(_text("SELECT status, parent_task_id FROM tasks WHERE id = :id"),
                               {"id": task_id}).first()
            if row is None:
                raise StoreError(f"no task with id {task_id}")
            if row[0] not in (FAILED, CANCELLED):
                raise StoreError(f"task {task_id} is {row[0]}; only Failed or Cancelled tasks can be retried")
            requeued: list[str] = []
            orchestrators = set()
            targets = [task_id]
            # An orchestrator retried after it spawned children: retry its ended children instead.
            kids = conn.execute(_text(self.sql.child_tasks), {"id": task_id}).all()
            if kids:
                orchestrators.add(task_id)
                targets = [k for k, st in kids if st in (FAILED, CANCELLED)]
            elif row[1]:
                orchestrators.add(row[1])
            for parent in list(orchestrators):
                prow = conn.execute(_text("SELECT status FROM tasks WHERE id = :id"), {"id": parent}).first()
                if prow and prow[0] in (FAILED, CANCELLED):
                    conn.execute(_text(self.sql.rewait_parent), {**self._times(), "id": parent})
                    targets += [k for k, st in conn.execute(_text(self.sql.child_tasks), {"id": parent}).all()
                                if st in (FAILED, CANCELLED)]
            for target in dict.fromkeys(targets):
                for tid in [target, *self._descendants(conn, target)]:
                    if conn.execute(_text(self.sql.requeue_for_retry), {**self._times(), "id": tid}).rowcount:
                        requeued.append(tid)
            return list(dict.fromkeys(requeued))

    def regenerate(self, task_id: str, params_patch: dict[str, Any]) -> list[str]:
        """Run one finished task again with changed params (e.g. a segment's prompt or seed), and re-run
        its descendants (e.g. the stitch); its orchestrator waits for them again. Returns the ids re-queued."""
        with self.begin() as conn:
            row = conn.execute(_text("SELECT status, params, parent_task_id FROM tasks WHERE id = :id"),
                               {"id": task_id}).first()
            if row is None:
                raise StoreError(f"no task with id {task_id}")
            if row[0] not in TERMINAL:
                raise StoreError(f"task {task_id} is {row[0]}; wait until it ends before regenerating it")
            params = parse_params(row[1])
            if not isinstance(params, dict):
                raise StoreError(f"task {task_id} has params that are not a JSON object")
            params.update(params_patch)
            conn.execute(_text(self.sql.regenerate), {**self._times(), "id": task_id, "params": json.dumps(params)})
            requeued = [task_id]
            for tid in self._descendants(conn, task_id):
                if conn.execute(_text(self.sql.requeue_complete), {**self._times(), "id": tid}).rowcount:
                    requeued.append(tid)
            if row[2]:
                conn.execute(_text(self.sql.rewait_parent), {**self._times(), "id": row[2]})
            return requeued

    # ------------------------------------------------------------------ reading
    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(_text(self.sql.get), {"id": task_id}).mappings().first()
            if row is None:
                return None
            task = dict(row)
            task["depends_on"] = ([task["dependant_on"]] if task.get("dependant_on") else []) + [
                r[0] for r in conn.execute(_text(self.sql.dependencies_of), {"id": task_id})
                if r[0] != task.get("dependant_on")]
            return task

    def output_of(self, task_id: str) -> str | None:
        with self._read() as conn:
            return conn.execute(_text(self.sql.output_of), {"id": task_id}).scalar()

    def list_tasks(self, *, status: str | None = None, task_type: str | None = None, project_id: str | None = None,
                   parent_task_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        where, params = [], {"limit": int(limit)}
        for column, value in (("status", status), ("task_type", task_type), ("project_id", project_id),
                              ("parent_task_id", parent_task_id)):
            if value is not None:
                where.append(f"{column} = :{column}")
                params[column] = value
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._read() as conn:
            rows = conn.execute(_text(f"SELECT * FROM tasks{clause} ORDER BY created_at DESC, id LIMIT :limit"),
                                params).mappings().all()
        return [dict(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        with self._read() as conn:
            return {s: n for s, n in conn.execute(_text("SELECT status, COUNT(*) FROM tasks GROUP BY status"))}

    # ------------------------------------------------------------------ output cache
    def cache_get(self, key: str) -> str | None:
        with self._read() as conn:
            return conn.execute(_text(self.sql.cache_get), {"key": key}).scalar()

    def cache_put(self, key: str, location: str, task_id: str | None = None) -> None:
        with self.begin() as conn:
            conn.execute(_text(self.sql.cache_put), {**self._times(), "key": key, "location": location,
                                                       "task_id": task_id})

    def cache_forget(self, key: str) -> None:
        with self.begin() as conn:
            conn.execute(_text(self.sql.cache_delete), {"key": key})

    # ------------------------------------------------------------------ workers
    def register_worker(self, worker_id: str, host: str, pid: int, version: str) -> None:
        with self.begin() as conn:
            conn.execute(_text(self.sql.worker_upsert), {**self._times(), "id": worker_id, "host": host,
                                                           "pid": pid, "version": version})

    def worker_seen(self, worker_id: str, task_id: str | None, status: str = "running") -> None:
        with self.begin() as conn:
            conn.execute(_text(self.sql.worker_seen), {**self._times(), "id": worker_id, "task_id": task_id,
                                                         "status": status})


def _topological(children: Sequence[ChildTask]) -> list[ChildTask]:
    """Children in an order where sibling dependencies come first; a cycle is refused."""
    by_key = {c.key: c for c in children}
    ordered: list[ChildTask] = []
    state: dict[str, int] = {}

    def visit(c: ChildTask, path: tuple[str, ...]) -> None:
        if state.get(c.key) == 2:
            return
        if state.get(c.key) == 1:
            raise StoreError(f"child tasks form a dependency cycle: {' -> '.join(path + (c.key,))}")
        state[c.key] = 1
        for dep in c.depends_on:
            if dep in by_key:
                visit(by_key[dep], path + (c.key,))
        state[c.key] = 2
        ordered.append(c)

    for c in children:
        visit(c, ())
    return ordered
