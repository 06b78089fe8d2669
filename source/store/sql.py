"""Every SQL statement of the task store, for both backends, in one place.

The two backends share most statements; they differ in how "now" and "now + N seconds" are written
(SQLite: ISO-8601 UTC text computed by the worker, the seed's format; PostgreSQL: the server's clock,
so leases are judged by one clock however many machines share the queue), in the schema types, and in
the claim (SQLite: one UPDATE ... RETURNING inside BEGIN IMMEDIATE; PostgreSQL: FOR UPDATE SKIP LOCKED).

Every state change is guarded by the expected status, worker and attempt (`:id`, `:worker`, `:attempt`),
so a late or duplicate actor changes nothing.

No other module writes SQL text (tests/test_architecture.py checks). The statements are grouped as the
store's modules use them: connection set-up, schema and migration, claim and lifecycle, the task graph
(inserting, propagation, retry/regenerate/cancel, the sweep), reading, cache, workers. Status words in
the SQL text are the values of source.task_status.TaskStatus.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from source.task_status import TaskStatus

NOTIFY_CHANNEL = "headless_tasks"
SCHEMA_VERSION = 3  # 2: PostgreSQL claim function (headless_claim); 3: CHECKs on status and self-dependency

# -- connection set-up ---------------------------------------------------------------------------
# SQLite, on every new connection: WAL (readers never block the writer), durable enough for a queue,
# waits for the write lock instead of failing, and a 64 MiB page cache so the hot indexes stay in memory.
SQLITE_CONNECT_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA cache_size=-65536",
)
SQLITE_BEGIN = {"IMMEDIATE": "BEGIN IMMEDIATE", "DEFERRED": "BEGIN DEFERRED"}
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
SQLITE_DATA_VERSION = "PRAGMA data_version"  # changes whenever another connection commits
LISTEN = f"LISTEN {NOTIFY_CHANNEL}"

# What a claim returns: what the worker needs to run the task and to guard its later writes.
CLAIM_COLUMNS = ("id", "task_type", "params", "attempts", "worker_id", "max_attempts", "project_id", "priority",
                 "timeout_seconds", "parent_task_id", "completes_parent")

# What an insert names (created_at/updated_at are added per dialect); the rest take their defaults.
INSERT_COLUMNS = ("id", "task_type", "params", "status", "dependant_on", "project_id", "priority", "max_attempts",
                  "timeout_seconds", "parent_task_id", "completes_parent")
LIST_FILTERS = ("status", "task_type", "project_id", "parent_task_id")

# Rows that could never run are refused where the database can: an unknown status word (e.g. 'Pending',
# 'queued') and a task that depends on itself. New tables have these CHECKs. A PostgreSQL table made
# earlier gets the status CHECK NOT VALID: old rows stay, for the sweep to end (setting a known status,
# which passes the check); new writes are checked. Not the self-dependency CHECK: NOT VALID still checks
# every UPDATE of an old row, and a self-dependent row keeps its dependant_on, so even ending it would
# fail. The edges table's rows are never updated, so its CHECK is added NOT VALID too. SQLite cannot add
# a CHECK to an existing table: there the sweep alone ends such rows.
STATUS_WORDS = ", ".join(f"'{s.value}'" for s in TaskStatus)
_TASK_CHECKS = (
    ("tasks", "tasks_status_known", f"CHECK (status IN ({STATUS_WORDS}))"),
    ("tasks", "tasks_not_own_parent", "CHECK (dependant_on <> id)"),
)
_TASK_CHECKS_SQL = ",\n    ".join(f"CONSTRAINT {name} {check}" for _table, name, check in _TASK_CHECKS)
_PG_ADD_CHECKS = [
    f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{name}' AND conrelid = '{table}'::regclass) THEN
            ALTER TABLE {table} ADD CONSTRAINT {name} {check} NOT VALID;
        END IF;
    END $$"""
    for table, name, check in (
        _TASK_CHECKS[0], ("task_dependencies", "task_dependencies_not_own_parent", "CHECK (task_id <> depends_on)"))
]

# The seed's 11 columns come first; a table made by the seed worker is migrated by adding the rest.
_SEED_TABLE_SQLITE = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'Queued',
    dependant_on TEXT NULL,
    output_location TEXT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at TEXT NULL,
    generation_started_at TEXT NULL,
    generation_processed_at TEXT NULL,
    project_id TEXT NULL,
    {constraints}
)"""

_SEED_TABLE_POSTGRES = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    params JSONB NOT NULL,
    status TEXT NOT NULL DEFAULT 'Queued',
    dependant_on TEXT NULL,
    output_location TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NULL,
    generation_started_at TIMESTAMPTZ NULL,
    generation_processed_at TIMESTAMPTZ NULL,
    project_id TEXT NULL,
    {constraints}
)"""


def _extra_columns(ts: str, json_type: str) -> list[tuple[str, str]]:
    """Columns the seed did not have. All have defaults, so an INSERT naming only seed columns works."""
    return [
        ("priority", "INTEGER NOT NULL DEFAULT 0"),
        ("attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("max_attempts", "INTEGER NOT NULL DEFAULT 3"),
        ("not_before", f"{ts} NULL"),
        ("worker_id", "TEXT NULL"),
        ("lease_expires_at", f"{ts} NULL"),
        ("heartbeat_at", f"{ts} NULL"),
        ("error_message", "TEXT NULL"),
        ("progress", "REAL NULL"),
        ("progress_message", "TEXT NULL"),
        ("result", f"{json_type} NULL"),
        ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
        ("timeout_seconds", "REAL NULL"),
        ("parent_task_id", "TEXT NULL"),
        ("completes_parent", "INTEGER NOT NULL DEFAULT 0"),
        ("awaiting_children", "INTEGER NOT NULL DEFAULT 0"),
    ]


def _other_tables(ts: str, now_default: str) -> list[str]:
    return [
        # Several parents per task. Direct-SQL users insert rows here in the same transaction as the task.
        """CREATE TABLE IF NOT EXISTS task_dependencies (
            task_id TEXT NOT NULL,
            depends_on TEXT NOT NULL,
            PRIMARY KEY (task_id, depends_on),
            CONSTRAINT task_dependencies_not_own_parent CHECK (task_id <> depends_on)
        )""",
        f"""CREATE TABLE IF NOT EXISTS workers (
            id TEXT PRIMARY KEY,
            host TEXT NULL,
            pid INTEGER NULL,
            started_at {ts} NULL,
            last_seen_at {ts} NULL,
            current_task_id TEXT NULL,
            version TEXT NULL,
            status TEXT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS output_cache (
            cache_key TEXT PRIMARY KEY,
            output_location TEXT NOT NULL,
            task_id TEXT NULL,
            created_at {ts} NOT NULL DEFAULT {now_default}
        )""",
        """CREATE TABLE IF NOT EXISTS headless_schema (
            name TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        )""",
    ]


_INDEXES = [
    # The claim walks this partial index in order and stops at the first ready row.
    "CREATE INDEX IF NOT EXISTS idx_tasks_ready ON tasks (priority DESC, created_at, id) WHERE status = 'Queued'",
    "CREATE INDEX IF NOT EXISTS idx_tasks_lease ON tasks (lease_expires_at) WHERE status = 'In Progress'",
    "CREATE INDEX IF NOT EXISTS idx_tasks_dependant_on ON tasks (dependant_on)",
    "CREATE INDEX IF NOT EXISTS idx_tasks_parent ON tasks (parent_task_id)",
    "CREATE INDEX IF NOT EXISTS idx_status_created ON tasks (status, created_at)",
    "CREATE INDEX IF NOT EXISTS idx_task_dependencies_parent ON task_dependencies (depends_on)",
]

_POSTGRES_NOTIFY = [
    f"""CREATE OR REPLACE FUNCTION headless_notify_tasks() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS headless_tasks_notify ON tasks",
    # New rows and rows that became Queued or Complete (a Complete parent may make children ready).
    """CREATE TRIGGER headless_tasks_notify AFTER INSERT OR UPDATE OF status ON tasks
       FOR EACH ROW WHEN (NEW.status IN ('Queued', 'Complete'))
       EXECUTE FUNCTION headless_notify_tasks()""",
]


@dataclass(frozen=True)
class Dialect:
    name: str
    now: str  # SQL for the current time
    lease_until: str  # SQL for now + :lease_seconds
    not_before_at: str  # SQL for now + :delay_seconds
    row_now: str  # SQL for the current time of one inserted row
    seed_table: str
    extra_columns: list[tuple[str, str]]
    other_tables: list[str]
    indexes: list[str]
    triggers: list[str]
    add_column: str  # format with name, ddl
    claim_template: str  # SQLite: format with type_filter; PostgreSQL: the call of headless_claim

    def claim_sql(self, n_types: int) -> str:
        """The claim. Parameters: :worker, :lease_seconds, :now and :lease_until (SQLite), and the task types
        as :type0, :type1... (SQLite) or as one :types list (PostgreSQL, None for any type)."""
        type_filter = ""
        if n_types:
            names = ", ".join(f":type{i}" for i in range(n_types))
            type_filter = f"AND t.task_type IN ({names})"
        return self.claim_template.format(type_filter=type_filter)


# The dependency gate: the seed's single parent by a LEFT JOIN on its primary key (an EXISTS here would plan
# as a hashed subplan scanning the whole table in PostgreSQL), further parents by an anti-join on the
# dependency table's primary key. Both are per-candidate index lookups.
_READY_WHERE = """
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= {now})
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    {{type_filter}}
"""

_CLAIM_SET = """
    status = 'In Progress', worker_id = :worker, attempts = attempts + 1,
    lease_expires_at = {lease_until}, heartbeat_at = {now}, generation_started_at = {now},
    updated_at = {now}, progress = 0, progress_message = NULL, error_message = NULL
"""

SQLITE = Dialect(
    name="sqlite",
    now=":now",
    lease_until=":lease_until",
    not_before_at=":not_before_at",
    row_now=":now",
    seed_table=_SEED_TABLE_SQLITE.replace("{constraints}", _TASK_CHECKS_SQL),
    extra_columns=_extra_columns("TEXT", "TEXT"),
    other_tables=_other_tables("TEXT", "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')"),
    indexes=_INDEXES,
    triggers=[],
    add_column="ALTER TABLE tasks ADD COLUMN {name} {ddl}",
    claim_template=(
        "UPDATE tasks SET " + _CLAIM_SET.format(now=":now", lease_until=":lease_until")
        # INDEXED BY: left alone, SQLite's planner picks idx_status_created and sorts every Queued row
        + " WHERE status = 'Queued' AND id = (SELECT t.id FROM tasks t INDEXED BY idx_tasks_ready"
        " LEFT JOIN tasks p ON p.id = t.dependant_on"
        " WHERE " + _READY_WHERE.format(now=":now")
        + " ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1) RETURNING " + ", ".join(CLAIM_COLUMNS)
    ),
)

_PG_LEASE = "now() + make_interval(secs => CAST(:lease_seconds AS double precision))"


def pg_claim_statement(worker: str, lease_seconds: str, types: str) -> str:
    """The PostgreSQL claim, with SQL expressions for the worker id, the lease in seconds and the task
    types (a text[]; NULL means any type)."""
    # The claim's own times use clock_timestamp(): inside the function the query takes a fresh snapshot,
    # later than now() (the start of the caller's statement), so a child claimed the moment its parent
    # completed would otherwise record a start before the parent's end.
    lease_until = f"clock_timestamp() + make_interval(secs => {lease_seconds})"
    returning = ", ".join(f"tasks.{c}::{t}" for c, t in zip(CLAIM_COLUMNS, _PG_CLAIM_TYPES))
    return (
        "WITH candidate AS (SELECT t.id FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on"
        " WHERE " + _READY_WHERE.format(now="now()").format(
            type_filter=f"AND ({types} IS NULL OR t.task_type = ANY({types}))")
        + " ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED)"
        " UPDATE tasks SET " + _CLAIM_SET.format(now="clock_timestamp()", lease_until=lease_until)
        .replace(":worker", worker)
        # No status test out here: the candidate is row-locked and was re-checked as Queued when locked,
        # and a `status = 'Queued'` here lets the planner, misled by statistics that say few rows are
        # Queued, find the row by walking idx_tasks_ready instead of the primary key (O(queued) per claim).
        + " FROM candidate WHERE tasks.id = candidate.id RETURNING " + returning
    )


# Casts make the result the same whatever types a migrated table has (a seed-era params column may be TEXT).
_PG_CLAIM_TYPES = ("text", "text", "text", "integer", "text", "integer", "text", "integer", "double precision",
                   "text", "integer")

# The claim runs inside a function so that it always plans as a walk of idx_tasks_ready in claim order.
# Left to itself, the planner sorts every Queued row whenever its statistics say few rows are Queued (a
# new table, or one analyzed while idle), and a burst of queued work then costs O(queued) per claim:
# 4.5 ms at 2,000 queued rows against 0.3 ms. The function's own settings cannot leak into other
# statements and survive transaction poolers; plpgsql also keeps the plan between calls.
_PG_CLAIM_PLANNER_SETTINGS = (("enable_sort", "off"), ("enable_bitmapscan", "off"))
_PG_CLAIM_FUNCTION = (
    "CREATE OR REPLACE FUNCTION headless_claim(p_worker text, p_lease_seconds double precision, p_types text[])"
    " RETURNS TABLE (" + ", ".join(f"{c} {t}" for c, t in zip(CLAIM_COLUMNS, _PG_CLAIM_TYPES)) + ")"
    " LANGUAGE plpgsql"
    + "".join(f" SET {name} = {value}" for name, value in _PG_CLAIM_PLANNER_SETTINGS)
    + " AS $$\n#variable_conflict use_column\nBEGIN\n    RETURN QUERY "
    + pg_claim_statement("p_worker", "p_lease_seconds", "p_types")
    + ";\nEND\n$$"
)

POSTGRES = Dialect(
    name="postgresql",
    now="now()",
    lease_until=_PG_LEASE,
    not_before_at="now() + make_interval(secs => CAST(:delay_seconds AS double precision))",
    row_now="clock_timestamp()",
    seed_table=_SEED_TABLE_POSTGRES.replace("{constraints}", _TASK_CHECKS_SQL),
    extra_columns=_extra_columns("TIMESTAMPTZ", "JSONB"),
    other_tables=_other_tables("TIMESTAMPTZ", "now()"),
    indexes=_INDEXES,
    triggers=_POSTGRES_NOTIFY + [_PG_CLAIM_FUNCTION] + _PG_ADD_CHECKS,
    add_column="ALTER TABLE tasks ADD COLUMN IF NOT EXISTS {name} {ddl}",
    claim_template=(
        "SELECT " + ", ".join(CLAIM_COLUMNS) + " FROM headless_claim(:worker,"
        " CAST(:lease_seconds AS double precision), CAST(:types AS text[]))"
    ),
)


class Statements:
    """Every statement of the task store, written once with the dialect's time expressions.

    Parameters are named (`:id`, `:worker`, ...); time parameters come from Database.times()."""

    def __init__(self, d: Dialect) -> None:
        now, lease_until, not_before_at = d.now, d.lease_until, d.not_before_at
        owned = "id = :id AND status = 'In Progress' AND worker_id = :worker AND attempts = :attempt"

        # -- schema and migration (source/store/schema.py) ------------------------------------------
        self.schema_version = "SELECT version FROM headless_schema WHERE name = 'tasks'"
        self.forget_schema_version = "DELETE FROM headless_schema WHERE name = 'tasks'"
        self.record_schema_version = "INSERT INTO headless_schema (name, version) VALUES ('tasks', :version)"
        if d.name == "sqlite":
            self.columns_of_tasks = "SELECT name FROM pragma_table_info('tasks')"
            self.migration_lock = None  # BEGIN IMMEDIATE already admits one writer
        else:
            self.columns_of_tasks = ("SELECT column_name FROM information_schema.columns"
                                     " WHERE table_name = 'tasks' AND table_schema = current_schema()")
            self.migration_lock = "SELECT pg_advisory_xact_lock(7418806245)"  # one migrator across machines
        self.rename_depends_on = "ALTER TABLE tasks RENAME COLUMN depends_on TO dependant_on"
        self.create_seed_table = d.seed_table
        self.add_columns = [(name, d.add_column.format(name=name, ddl=ddl)) for name, ddl in d.extra_columns]
        self.other_ddl = d.other_tables + d.indexes + d.triggers
        # Seed rows left In Progress have no lease: give them one, so they are reclaimed, not stranded.
        self.lease_unleased_in_progress = (
            f"UPDATE tasks SET lease_expires_at = {lease_until}"
            " WHERE status = 'In Progress' AND lease_expires_at IS NULL"
        )

        # -- inserting (source/store/dag.py) --------------------------------------------------------
        # created_at per row: PostgreSQL's now() is one value per transaction and would scramble the order.
        values = ", ".join(f":{c}" for c in INSERT_COLUMNS)
        self.insert_task = (
            f"INSERT INTO tasks ({', '.join(INSERT_COLUMNS)}, created_at, updated_at)"
            f" VALUES ({values}, {d.row_now}, {d.row_now})"
        )
        self.insert_task_if_absent = self.insert_task + " ON CONFLICT (id) DO NOTHING"
        self.insert_edge = "INSERT INTO task_dependencies (task_id, depends_on) VALUES (:task_id, :depends_on)"
        self.insert_edge_if_absent = self.insert_edge + " ON CONFLICT DO NOTHING"
        self.task_exists = "SELECT 1 FROM tasks WHERE id = :id"

        # -- claim and lifecycle (source/store/task_store.py) ---------------------------------------
        self.claim_sql = functools.lru_cache(maxsize=16)(d.claim_sql)  # built once per type count

        self.heartbeat = (
            f"UPDATE tasks SET lease_expires_at = {lease_until}, heartbeat_at = {now}, updated_at = {now},"
            f" progress = :progress, progress_message = :message WHERE {owned} RETURNING cancel_requested"
        )
        self.complete = (
            f"UPDATE tasks SET status = 'Complete', output_location = :output_location, result = :result,"
            f" progress = 1, lease_expires_at = NULL, generation_processed_at = {now}, updated_at = {now}"
            f" WHERE {owned} RETURNING parent_task_id, completes_parent"
        )
        self.fail = (
            f"UPDATE tasks SET status = 'Failed', error_message = :message, lease_expires_at = NULL,"
            f" generation_processed_at = {now}, updated_at = {now} WHERE {owned} RETURNING parent_task_id"
        )
        self.cancelled = (
            f"UPDATE tasks SET status = 'Cancelled', error_message = :message, lease_expires_at = NULL,"
            f" generation_processed_at = {now}, updated_at = {now} WHERE {owned} RETURNING parent_task_id"
        )
        self.retry_later = (
            f"UPDATE tasks SET status = 'Queued', error_message = :message, worker_id = NULL,"
            f" lease_expires_at = NULL, not_before = {not_before_at}, updated_at = {now} WHERE {owned}"
        )
        # Graceful shutdown: back to Queued without spending the attempt.
        self.hand_back = (
            f"UPDATE tasks SET status = 'Queued', attempts = attempts - 1, worker_id = NULL,"
            f" lease_expires_at = NULL, progress = NULL, progress_message = NULL, updated_at = {now}"
            f" WHERE {owned}"
        )
        # An orchestrator that spawned children waits without a worker or a lease.
        self.await_children = (
            f"UPDATE tasks SET awaiting_children = 1, worker_id = NULL, lease_expires_at = NULL,"
            f" progress_message = 'waiting for child tasks', updated_at = {now} WHERE {owned}"
        )
        self.expired_leases = (
            f"SELECT id, worker_id, attempts, max_attempts FROM tasks"
            f" WHERE status = 'In Progress' AND lease_expires_at < {now} LIMIT 100"
        )
        self.reclaim_expired = (
            f"UPDATE tasks SET status = 'Queued', worker_id = NULL, lease_expires_at = NULL, updated_at = {now},"
            f" error_message = :message WHERE id = :id AND status = 'In Progress' AND attempts = :attempt"
            f" AND lease_expires_at < {now}"
        )
        self.fail_expired = (
            f"UPDATE tasks SET status = 'Failed', lease_expires_at = NULL, updated_at = {now},"
            f" generation_processed_at = {now}, error_message = :message"
            f" WHERE id = :id AND status = 'In Progress' AND attempts = :attempt AND lease_expires_at < {now}"
            f" RETURNING parent_task_id"
        )
        # The orchestrator chain above a completing child: climb while each link completes its parent.
        self.parent_link = "SELECT parent_task_id, completes_parent, status FROM tasks WHERE id = :id"

        # -- the task graph: fan-in, propagation, cancel, retry, regenerate (source/store/dag.py) -----
        # Orchestrator fan-in: complete/fail the waiting parent (guarded on it still waiting).
        self.complete_parent = (
            f"UPDATE tasks SET status = 'Complete', output_location = :output_location, result = :result,"
            f" progress = 1, awaiting_children = 0, progress_message = NULL, generation_processed_at = {now},"
            f" updated_at = {now} WHERE id = :id AND status = 'In Progress' AND awaiting_children = 1"
        )
        self.end_parent = (
            f"UPDATE tasks SET status = :status, error_message = :message, awaiting_children = 0,"
            f" generation_processed_at = {now}, updated_at = {now}"
            f" WHERE id = :id AND status = 'In Progress' AND awaiting_children = 1 RETURNING parent_task_id"
        )
        # Propagation to waiting descendants (only Queued rows change).
        self.end_queued = (
            f"UPDATE tasks SET status = :status, error_message = :message, updated_at = {now},"
            f" generation_processed_at = {now} WHERE id = :id AND status = 'Queued' RETURNING parent_task_id"
        )
        self.task_type_of = "SELECT task_type FROM tasks WHERE id = :id"
        self.status_of = "SELECT status FROM tasks WHERE id = :id"
        self.child_outcome = "SELECT status, output_location, result, error_message FROM tasks WHERE id = :id"
        self.cancel_target = "SELECT status, task_type, parent_task_id, awaiting_children FROM tasks WHERE id = :id"
        self.retry_target = "SELECT status, parent_task_id FROM tasks WHERE id = :id"
        self.regenerate_target = "SELECT status, params, parent_task_id FROM tasks WHERE id = :id"
        self.children_by_dependant_on = "SELECT id FROM tasks WHERE dependant_on = :id"
        self.children_by_edges = "SELECT task_id FROM task_dependencies WHERE depends_on = :id"
        self.child_tasks = "SELECT id, status FROM tasks WHERE parent_task_id = :id"
        self.request_cancel_running = (
            f"UPDATE tasks SET cancel_requested = 1, updated_at = {now} WHERE id = :id AND status = 'In Progress'"
        )
        self.cancel_queued = (
            f"UPDATE tasks SET status = 'Cancelled', cancel_requested = 1, error_message = :message,"
            f" updated_at = {now}, generation_processed_at = {now} WHERE id = :id AND status = 'Queued'"
        )
        self.cancel_waiting_parent = (
            f"UPDATE tasks SET status = 'Cancelled', cancel_requested = 1, awaiting_children = 0,"
            f" error_message = :message, updated_at = {now}, generation_processed_at = {now}"
            f" WHERE id = :id AND status = 'In Progress' AND awaiting_children = 1"
        )
        self.requeue_for_retry = (
            f"UPDATE tasks SET status = 'Queued', attempts = 0, error_message = NULL, not_before = NULL,"
            f" cancel_requested = 0, worker_id = NULL, lease_expires_at = NULL, progress = NULL,"
            f" progress_message = NULL, output_location = NULL, result = NULL, updated_at = {now}"
            f" WHERE id = :id AND status IN ('Failed', 'Cancelled')"
        )
        self.rewait_parent = (
            f"UPDATE tasks SET status = 'In Progress', awaiting_children = 1, error_message = NULL,"
            f" cancel_requested = 0, generation_processed_at = NULL, updated_at = {now},"
            f" progress_message = 'waiting for child tasks' WHERE id = :id"
        )
        self.regenerate = (
            f"UPDATE tasks SET status = 'Queued', params = :params, attempts = 0, error_message = NULL,"
            f" not_before = NULL, cancel_requested = 0, worker_id = NULL, lease_expires_at = NULL,"
            f" progress = NULL, progress_message = NULL, result = NULL, updated_at = {now}"
            f" WHERE id = :id AND status IN ('Complete', 'Failed', 'Cancelled')"
        )
        self.requeue_complete = (
            f"UPDATE tasks SET status = 'Queued', attempts = 0, error_message = NULL, not_before = NULL,"
            f" worker_id = NULL, lease_expires_at = NULL, progress = NULL, progress_message = NULL,"
            f" result = NULL, updated_at = {now} WHERE id = :id AND status IN ('Complete', 'Failed', 'Cancelled')"
        )
        # -- the sweep: Queued rows that can never run (source/store/dag.py) -------------------------
        # Queued rows whose parent does not exist would wait forever: end them with a clear error.
        self.orphans = (
            "SELECT t.id, t.dependant_on FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on"
            " WHERE t.status = 'Queued' AND t.dependant_on IS NOT NULL AND p.id IS NULL LIMIT 100"
        )
        self.orphan_edges = (
            "SELECT d.task_id, d.depends_on FROM task_dependencies d JOIN tasks t ON t.id = d.task_id"
            " LEFT JOIN tasks q ON q.id = d.depends_on WHERE t.status = 'Queued' AND q.id IS NULL LIMIT 100"
        )
        # Rows whose parent ended Failed/Cancelled while they were inserted (direct SQL) also must not strand.
        self.stranded = (
            "SELECT t.id, p.id AS parent, p.status AS parent_status FROM tasks t JOIN tasks p ON p.id = t.dependant_on"
            " WHERE t.status = 'Queued' AND p.status IN ('Failed', 'Cancelled') LIMIT 100"
        )
        # Rows with a status word no worker knows ('Pending', 'queued'): nothing would ever pick them up.
        self.unknown_status = f"SELECT id, status FROM tasks WHERE status NOT IN ({STATUS_WORDS}) LIMIT 100"
        self.end_unknown_status = (
            f"UPDATE tasks SET status = 'Failed', error_message = :message, lease_expires_at = NULL,"
            f" updated_at = {now}, generation_processed_at = {now} WHERE id = :id AND status = :old_status"
            f" RETURNING parent_task_id"
        )
        # Queued rows waiting on Queued rows: the graph the sweep searches for cycles (walked in Python).
        self.waiting_edges = (
            "SELECT t.id, t.dependant_on FROM tasks t JOIN tasks p ON p.id = t.dependant_on"
            " WHERE t.status = 'Queued' AND p.status = 'Queued'"
            " UNION ALL SELECT d.task_id, d.depends_on FROM task_dependencies d JOIN tasks t ON t.id = d.task_id"
            " JOIN tasks q ON q.id = d.depends_on WHERE t.status = 'Queued' AND q.status = 'Queued'"
        )
        self.stranded_edges = (
            "SELECT t.id, q.id AS parent, q.status AS parent_status FROM task_dependencies d"
            " JOIN tasks t ON t.id = d.task_id JOIN tasks q ON q.id = d.depends_on"
            " WHERE t.status = 'Queued' AND q.status IN ('Failed', 'Cancelled') LIMIT 100"
        )
        # -- reading ------------------------------------------------------------------------------
        self.get = "SELECT * FROM tasks WHERE id = :id"
        self.count_by_status = "SELECT status, COUNT(*) FROM tasks GROUP BY status"
        self.dependencies_of = "SELECT depends_on FROM task_dependencies WHERE task_id = :id"
        self.output_of = "SELECT output_location FROM tasks WHERE id = :id AND status = 'Complete'"

        # -- output cache -------------------------------------------------------------------------
        self.cache_get = "SELECT output_location FROM output_cache WHERE cache_key = :key"
        self.cache_delete = "DELETE FROM output_cache WHERE cache_key = :key"
        self.cache_put = (
            "INSERT INTO output_cache (cache_key, output_location, task_id, created_at)"
            f" VALUES (:key, :location, :task_id, {now})"
            " ON CONFLICT (cache_key) DO UPDATE SET output_location = excluded.output_location,"
            " task_id = excluded.task_id"
        )

        # -- workers --------------------------------------------------------------------------------
        self.worker_upsert = (
            "INSERT INTO workers (id, host, pid, started_at, last_seen_at, current_task_id, version, status)"
            f" VALUES (:id, :host, :pid, {now}, {now}, NULL, :version, 'running')"
            " ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
            " started_at = excluded.started_at, last_seen_at = excluded.last_seen_at,"
            " current_task_id = NULL, version = excluded.version, status = 'running'"
        )
        self.worker_seen = (
            f"UPDATE workers SET last_seen_at = {now}, current_task_id = :task_id, status = :status WHERE id = :id"
        )
        self.notify = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')" if d.name == "postgresql" else None



    @staticmethod
    @functools.lru_cache(maxsize=32)
    def list_tasks(filters: tuple[str, ...]) -> str:
        """Newest first, filtered by equality on the named columns (each a `:column` parameter)."""
        unknown = set(filters) - set(LIST_FILTERS)
        if unknown:  # column names become SQL text: only these few ever may
            raise ValueError(f"cannot filter tasks by {sorted(unknown)}")
        clause = (" WHERE " + " AND ".join(f"{c} = :{c}" for c in filters)) if filters else ""
        return f"SELECT * FROM tasks{clause} ORDER BY created_at DESC, id LIMIT :limit"


def dialect_for(url: str) -> Dialect:
    return SQLITE if url.startswith("sqlite") else POSTGRES
