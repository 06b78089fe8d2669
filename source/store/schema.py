"""Creating the tables, or migrating a seed-era (Headless-Wan2GP) `tasks` table in place.

No row is lost: missing columns are added with defaults, the seed's `depends_on` is renamed to
`dependant_on`, and seed rows left In Progress get a lease so they are reclaimed. Safe to run from many
workers at once (SQLite: one writer at a time; PostgreSQL: an advisory lock).

Seed-era orchestrators are the exception: the seed's SQLite mode never completed a travel orchestrator (the
Supabase edge function did), so they sit In Progress with their stitch Complete. Reclaiming them would
generate the whole travel again; end_seed_orchestrators completes each with its final child's output, or,
when that child is unfinished, failed or missing, fails it (and its unfinished children) saying how to
resubmit. Nothing is re-run without the user asking.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from source import task_model
from source.store import sql as q
from source.store.connection import Database, text, to_json
from source.store.records import parse_params
from source.task_status import TaskStatus

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
            if existed:  # before the leases below: they would make these orchestrators reclaimable
                end_seed_orchestrators(db, conn)
            for table, name, statement in sql.other_add_columns:
                if name not in {r[0] for r in conn.execute(text(sql.columns_of_table), {"table": table})}:
                    conn.exec_driver_sql(statement)
            for name, model in task_model.name_pairs().items():  # aliases for the direct-SQL trigger
                conn.execute(text(sql.model_name_put), {"name": name, "model": model})
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


def _params(raw: Any) -> dict[str, Any]:
    try:
        params = parse_params(raw)
    except ValueError:  # a row we cannot read links nothing
        return {}
    return params if isinstance(params, dict) else {}


def end_seed_orchestrators(db: Database, conn: Connection) -> list[tuple[str, str]]:
    """Complete or fail the seed-era orchestrators left In Progress; returns (id, new status) of each.

    A seed orchestrator is one of ours only if it waits on children of ours (awaiting_children, parent_task_id);
    the others are the seed's when they have no lease (never claimed by our worker) or the seed's children
    point at them (`orchestrator_task_id_ref`, or `orchestrator_run_id` = its run id)."""
    sql = db.sql
    orchestrators = conn.execute(text(sql.seed_orchestrators)).all()
    if not orchestrators:
        return []
    children: dict[str, list[Any]] = {}
    by_run: dict[str, list[Any]] = {}
    for row in conn.execute(text(sql.seed_children)).all():
        params = _params(row[4])
        ref, run = params.get("orchestrator_task_id_ref"), params.get("orchestrator_run_id")
        if isinstance(ref, str):
            children.setdefault(ref, []).append(row)
        elif isinstance(run, str):
            by_run.setdefault(run, []).append(row)
    ended = []
    for task_id, task_type, raw_params, lease in orchestrators:
        params = _params(raw_params)
        details = params.get("orchestrator_details") if isinstance(params.get("orchestrator_details"), dict) else {}
        run_id = details.get("run_id") or params.get("run_id") or task_id
        mine = children.get(task_id, []) + by_run.get(str(run_id), [])
        if lease is not None and not mine:
            continue  # claimed by one of our workers, which is running it now
        final_type = q.SEED_ORCHESTRATOR_FINAL_CHILD[task_type]
        final = [c for c in mine if c[1] == final_type and c[2] == TaskStatus.COMPLETE and c[3]]
        if final:
            conn.execute(text(sql.complete_seed_orchestrator), {
                **db.times(), "id": task_id, "output_location": final[0][3],
                "result": to_json({"completed_by_migration": True, "final_task_id": final[0][0],
                                   "note": "seed-era orchestrator: the seed left it In Progress after its "
                                           f"{final_type} completed"})})
            ended.append((task_id, TaskStatus.COMPLETE.value))
            continue
        states = ", ".join(f"{c[1]} {c[0]} {c[2]}" for c in mine[:6]) or "none found"
        message = (f"seed-era orchestrator left In Progress by the seed worker with its work unfinished (children: "
                   f"{states}); it is not re-run automatically. To generate it again: add_task.py retry {task_id}")
        conn.execute(text(sql.fail_seed_task), {**db.times(), "id": task_id, "message": message[:2000]})
        for child in mine:
            if child[2] in (TaskStatus.QUEUED, TaskStatus.IN_PROGRESS):
                conn.execute(text(sql.fail_seed_task), {**db.times(), "id": child[0], "message": (
                    f"part of seed-era orchestrator {task_id}, which was ended unfinished at migration; "
                    f"not run. To generate it again: add_task.py retry {task_id}")})
        ended.append((task_id, TaskStatus.FAILED.value))
    if ended:
        log.info("seed-era orchestrators ended at migration: %s", ", ".join(f"{i} {s}" for i, s in ended))
    return ended
