"""The task graph: inserting tasks with their parents, orchestrators' children, fan-in to a waiting
orchestrator, failure propagation, descendants, cancel, retry, regenerate and the sweep of rows that
can never run.

The graph is walked in Python, one guarded statement per row, so SQLite and PostgreSQL behave alike
(no recursive SQL or plpgsql). Every function runs inside the caller's transaction (`conn`) or opens
its own with `db.begin()`; all statements come from source/store/sql.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from source import task_model
from source.store.connection import Database, iso_now, text, to_json
from source.store.records import Claim, StoreError, parse_params
from source.task_context import ChildTask, child_task_id
from source.task_status import ENDED_BADLY, TERMINAL, TaskStatus

CANCELLED, COMPLETE, FAILED, IN_PROGRESS, QUEUED = (TaskStatus.CANCELLED, TaskStatus.COMPLETE, TaskStatus.FAILED,
                                                     TaskStatus.IN_PROGRESS, TaskStatus.QUEUED)


# ---------------------------------------------------------------------- inserting
def insert_row(db: Database, conn: Connection, *, task_id: str, task_type: str, params: Any, priority: int,
               depends_on: Sequence[str], project_id: str | None, max_attempts: int,
               timeout_seconds: float | None, parent_task_id: str | None = None,
               completes_parent: bool = False, if_absent: bool = False, idempotency_key: str | None = None,
               start_within: float | None = None) -> bool:
    """Insert one Queued task; the first parent goes in the seed's `dependant_on`, all of them (when
    more than one) in task_dependencies. Its model (affinity) is computed here, once. Returns False when
    if_absent found the id taken, or the project already has a task with this idempotency key."""
    row = {
        "id": task_id, "task_type": task_type,
        "params": params if isinstance(params, str) else json.dumps(params),
        "status": QUEUED.value, "dependant_on": depends_on[0] if depends_on else None, "project_id": project_id,
        "priority": int(priority), "max_attempts": int(max_attempts), "timeout_seconds": timeout_seconds,
        "parent_task_id": parent_task_id, "completes_parent": 1 if completes_parent else 0,
        "model": task_model.model_for_task(task_type, params), "idempotency_key": idempotency_key,
        "start_within": start_within, "start_by": iso_now(start_within) if start_within is not None else None,
    }
    statement = (db.sql.insert_task_idempotent if idempotency_key is not None else
                 db.sql.insert_task_if_absent if if_absent else db.sql.insert_task)
    inserted = conn.execute(text(statement), {**db.times(), **row}).rowcount != 0
    if inserted and len(depends_on) > 1:
        for parent in dict.fromkeys(depends_on):
            conn.execute(text(db.sql.insert_edge_if_absent), {"task_id": task_id, "depends_on": parent})
    return inserted


def exists(db: Database, conn: Connection, task_id: str) -> bool:
    return conn.execute(text(db.sql.task_exists), {"id": task_id}).first() is not None


def check_parents_exist(db: Database, conn: Connection, parents: Iterable[str]) -> None:
    """Parents must exist before their children are inserted: so no insert of ours can close a cycle."""
    for parent in parents:
        if not exists(db, conn, parent):
            raise StoreError(f"depends-on task {parent} does not exist")


def topological(children: Sequence[ChildTask]) -> list[ChildTask]:
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


def spawn_children(db: Database, claim: Claim, children: Sequence[ChildTask]) -> bool:
    """Insert an orchestrator's children and let it wait without a worker, in one transaction.
    Children have deterministic ids, so a re-run inserts nothing twice."""
    keys = [c.key for c in children]
    if len(set(keys)) != len(keys):
        raise StoreError("child task keys must be unique")
    if sum(1 for c in children if c.completes_parent) > 1:
        raise StoreError("at most one child task may complete the orchestrator")
    ids = {c.key: child_task_id(claim.id, c.key) for c in children}
    order = topological(children)
    parent_row = claim.row
    sql = db.sql

    with db.begin() as conn:
        if conn.execute(text(sql.await_children), {**claim.guard(), **db.times()}).rowcount != 1:
            return False
        for child in order:
            deps = [ids.get(d, d) for d in child.depends_on]
            external = [d for d in child.depends_on if d not in ids]
            check_parents_exist(db, conn, external)
            insert_row(
                db, conn, task_id=ids[child.key], task_type=child.task_type, params=child.params,
                priority=child.priority if child.priority is not None else parent_row.get("priority") or 0,
                depends_on=deps, project_id=parent_row.get("project_id"),
                max_attempts=child.max_attempts or parent_row.get("max_attempts") or 3,
                timeout_seconds=None, parent_task_id=claim.id, completes_parent=child.completes_parent,
                if_absent=True)
        # A re-run may find its children already finished.
        for child in children:
            row = conn.execute(text(sql.child_outcome), {"id": ids[child.key]}).first()
            if row is None:
                continue
            if child.completes_parent and row[0] == COMPLETE:
                conn.execute(text(sql.complete_parent),
                             {**db.times(), "id": claim.id, "output_location": row[1],
                              "result": row[2] if isinstance(row[2], str) or row[2] is None else json.dumps(row[2])})
            elif row[0] in ENDED_BADLY:
                message = f"child task {ids[child.key]} ({child.task_type}) {row[0].lower()}: {row[3] or ''}"
                end_parent(db, conn, claim.id, TaskStatus(row[0]), message)
    return True


# ---------------------------------------------------------------------- fan-in and propagation
def complete_parents(db: Database, conn: Connection, parent: str | None, completes_parent: Any,
                     output_location: str | None, result: dict | None, completed_by: str) -> None:
    """A child that completes its orchestrator completed: complete the orchestrator, and so on up."""
    while parent and completes_parent:
        conn.execute(text(db.sql.complete_parent),
                     {**db.times(), "id": parent, "output_location": output_location,
                      "result": to_json({**(result or {}), "completed_by": completed_by})})
        up = conn.execute(text(db.sql.parent_link), {"id": parent}).first()
        if up is None or up[2] != COMPLETE:
            break
        parent, completes_parent = up[0], up[1]


def type_of(db: Database, conn: Connection, task_id: str) -> str:
    return conn.execute(text(db.sql.task_type_of), {"id": task_id}).scalar()


def end_parent(db: Database, conn: Connection, parent_id: str, status: TaskStatus, message: str) -> None:
    row = conn.execute(text(db.sql.end_parent),
                       {**db.times(), "id": parent_id, "status": status.value, "message": message}).first()
    if row is not None:
        propagate_end(db, conn, parent_id, type_of(db, conn, parent_id), status, message, row[0])


# Orchestrators whose children are independent pieces of work: when one child fails, the orchestrator fails
# naming it, but the siblings that do not depend on it keep running, so a retry of the failed child redoes
# only that child and what depends on it (a storyboard: one bad clip must not cost the other generations).
KEEP_CHILDREN_ON_FAILURE = frozenset({"storyboard"})


def propagate_end(db: Database, conn: Connection, task_id: str, task_type: str, status: TaskStatus, message: str,
                  parent_task_id: str | None) -> None:
    """A task ended Failed or Cancelled: nothing waiting on it may stay Queued forever.
    Dependents end with the same status and an error naming it; a waiting orchestrator fails naming
    its child; an orchestrator's own unfinished children are cancelled (unless it failed and is one of
    KEEP_CHILDREN_ON_FAILURE)."""
    sql = db.sql
    work = [(task_id, task_type, TaskStatus(status), message, parent_task_id)]
    while work:
        tid, ttype, st, why, parent = work.pop()
        if st not in ENDED_BADLY:
            continue
        word = "failed" if st == FAILED else "was cancelled"
        children = [r[0] for r in conn.execute(text(sql.children_by_dependant_on), {"id": tid})]
        children += [r[0] for r in conn.execute(text(sql.children_by_edges), {"id": tid})]
        for child in dict.fromkeys(children):
            child_msg = f"not run: task {tid} ({ttype}) that it depends on {word}: {why}"
            row = conn.execute(text(sql.end_queued),
                               {**db.times(), "id": child, "status": st.value, "message": child_msg[:2000]}).first()
            if row is not None:
                work.append((child, type_of(db, conn, child), st, child_msg, row[0]))
        if parent:
            parent_msg = f"child task {tid} ({ttype}) {word}: {why}"
            row = conn.execute(text(sql.end_parent),
                               {**db.times(), "id": parent, "status": st.value, "message": parent_msg[:2000]}).first()
            if row is not None:
                work.append((parent, type_of(db, conn, parent), st, parent_msg, row[0]))
        if st == FAILED and ttype in KEEP_CHILDREN_ON_FAILURE:
            continue  # its other children run on (what depended on the failed one already ended above)
        for child, child_status in conn.execute(text(sql.child_tasks), {"id": tid}).all():
            if child_status == QUEUED:
                child_msg = f"not run: its orchestrator {tid} ({ttype}) {word}: {why}"
                row = conn.execute(text(sql.end_queued),
                                   {**db.times(), "id": child, "status": CANCELLED.value,
                                    "message": child_msg[:2000]}).first()
                if row is not None:
                    work.append((child, type_of(db, conn, child), CANCELLED, child_msg, None))
            elif child_status == IN_PROGRESS:
                conn.execute(text(sql.request_cancel_running), {**db.times(), "id": child})


def descendants(db: Database, conn: Connection, task_id: str) -> list[str]:
    """Every task that depends on task_id, directly or not (breadth first; each once)."""
    seen: dict[str, None] = {}
    frontier = [task_id]
    while frontier:
        nxt = []
        for tid in frontier:
            kids = [r[0] for r in conn.execute(text(db.sql.children_by_dependant_on), {"id": tid})]
            kids += [r[0] for r in conn.execute(text(db.sql.children_by_edges), {"id": tid})]
            for k in kids:
                if k not in seen and k != task_id:
                    seen[k] = None
                    nxt.append(k)
        frontier = nxt
    return list(seen)


# ---------------------------------------------------------------------- user actions
def request_cancel(db: Database, task_id: str) -> str:
    """Cancel: a Queued task (or a waiting orchestrator) ends Cancelled now; a running one is asked to
    stop. Returns the task's status afterwards."""
    message = "cancelled on request"
    sql = db.sql
    with db.begin() as conn:
        row = conn.execute(text(sql.cancel_target), {"id": task_id}).first()
        if row is None:
            raise StoreError(f"no task with id {task_id}")
        status, task_type, parent, awaiting = row
        if status == QUEUED:
            conn.execute(text(sql.cancel_queued), {**db.times(), "id": task_id, "message": message})
            propagate_end(db, conn, task_id, task_type, CANCELLED, message, parent)
            return CANCELLED
        if status == IN_PROGRESS and awaiting:
            conn.execute(text(sql.cancel_waiting_parent), {**db.times(), "id": task_id, "message": message})
            propagate_end(db, conn, task_id, task_type, CANCELLED, message, parent)
            return CANCELLED
        if status == IN_PROGRESS:
            conn.execute(text(sql.request_cancel_running), {**db.times(), "id": task_id})
            return IN_PROGRESS
        return status


def retry(db: Database, task_id: str) -> list[str]:
    """Re-queue a Failed/Cancelled task and its Failed/Cancelled descendants (Complete work is never
    redone). An orchestrator that failed because of it waits again, and its other children that were
    ended with it are re-queued. Returns the ids re-queued."""
    sql = db.sql
    with db.begin() as conn:
        row = conn.execute(text(sql.retry_target), {"id": task_id}).first()
        if row is None:
            raise StoreError(f"no task with id {task_id}")
        if row[0] not in ENDED_BADLY:
            raise StoreError(f"task {task_id} is {row[0]}; only Failed or Cancelled tasks can be retried")
        requeued: list[str] = []
        orchestrators = set()
        targets = [task_id]
        # An orchestrator retried after it spawned children: retry its ended children instead.
        kids = conn.execute(text(sql.child_tasks), {"id": task_id}).all()
        if kids:
            orchestrators.add(task_id)
            targets = [k for k, st in kids if st in ENDED_BADLY]
        elif row[1]:
            orchestrators.add(row[1])
        for parent in list(orchestrators):
            prow = conn.execute(text(sql.status_of), {"id": parent}).first()
            if prow and prow[0] in ENDED_BADLY:
                conn.execute(text(sql.rewait_parent), {**db.times(), "id": parent})
                targets += [k for k, st in conn.execute(text(sql.child_tasks), {"id": parent}).all()
                            if st in ENDED_BADLY]
        for target in dict.fromkeys(targets):
            for tid in [target, *descendants(db, conn, target)]:
                if conn.execute(text(sql.requeue_for_retry), {**db.times(), "id": tid}).rowcount:
                    requeued.append(tid)
        return list(dict.fromkeys(requeued))


def regenerate(db: Database, task_id: str, params_patch: dict[str, Any]) -> list[str]:
    """Run one finished task again with changed params (e.g. a segment's prompt or seed), and re-run
    its descendants (e.g. the stitch); its orchestrator waits for them again. Returns the ids re-queued."""
    sql = db.sql
    with db.begin() as conn:
        row = conn.execute(text(sql.regenerate_target), {"id": task_id}).first()
        if row is None:
            raise StoreError(f"no task with id {task_id}")
        if row[0] not in TERMINAL:
            raise StoreError(f"task {task_id} is {row[0]}; wait until it ends before regenerating it")
        params = parse_params(row[1])
        if not isinstance(params, dict):
            raise StoreError(f"task {task_id} has params that are not a JSON object")
        params.update(params_patch)
        conn.execute(text(sql.regenerate), {**db.times(), "id": task_id, "params": json.dumps(params)})
        requeued = [task_id]
        for tid in descendants(db, conn, task_id):
            if conn.execute(text(sql.requeue_complete), {**db.times(), "id": tid}).rowcount:
                requeued.append(tid)
        if row[2]:
            conn.execute(text(sql.rewait_parent), {**db.times(), "id": row[2]})
        return requeued


# ---------------------------------------------------------------------- the sweep
def sweep_stranded(db: Database) -> list[dict[str, Any]]:
    """Rows that can never run, e.g. inserted by other apps with SQL, end with a clear error: Queued rows
    whose parent does not exist or already ended Failed/Cancelled, rows with a status word no worker
    knows, and dependency cycles (each task in one fails naming the cycle; what waits on it follows)."""
    sql = db.sql
    done = []
    with db.begin() as conn:
        for task_id, word in conn.execute(text(sql.unknown_status)).all():
            message = (f"unknown status {word!r}: a task's status is one of {', '.join(s.value for s in TaskStatus)}"
                       "; no worker would ever run it")
            row = conn.execute(text(sql.end_unknown_status),
                               {**db.times(), "id": task_id, "old_status": word, "message": message}).first()
            if row is not None:
                propagate_end(db, conn, task_id, type_of(db, conn, task_id), FAILED, message, row[0])
                done.append({"task_id": task_id, "reason": message})
        for cycle in find_cycles(conn.execute(text(sql.waiting_edges)).all()):
            message = f"dependency cycle {' -> '.join([*cycle, cycle[0]])}: no task in it can ever run"
            ended = []  # every member first, so each names the cycle itself rather than its neighbour
            for task_id in cycle:
                row = conn.execute(text(sql.end_queued),
                                   {**db.times(), "id": task_id, "status": FAILED.value, "message": message}).first()
                if row is not None:
                    ended.append((task_id, row[0]))
                    done.append({"task_id": task_id, "reason": message})
            for task_id, parent in ended:
                propagate_end(db, conn, task_id, type_of(db, conn, task_id), FAILED, message, parent)
        missing = conn.execute(text(sql.orphans)).all() + conn.execute(text(sql.orphan_edges)).all()
        for task_id, parent in missing:
            message = f"depends on task {parent}, which does not exist"
            if conn.execute(text(sql.end_queued),
                            {**db.times(), "id": task_id, "status": FAILED.value, "message": message}).first():
                propagate_end(db, conn, task_id, type_of(db, conn, task_id), FAILED, message, None)
                done.append({"task_id": task_id, "reason": message})
        for task_id, start_by in conn.execute(text(sql.expired_unstarted), db.times()).all():
            message = f"expired before it started: not claimed by its start_by time {start_by}"
            row = conn.execute(text(sql.end_queued),
                               {**db.times(), "id": task_id, "status": FAILED.value, "message": message}).first()
            if row is not None:
                propagate_end(db, conn, task_id, type_of(db, conn, task_id), FAILED, message, row[0])
                done.append({"task_id": task_id, "reason": message})
        ended = conn.execute(text(sql.stranded)).all() + conn.execute(text(sql.stranded_edges)).all()
        for task_id, parent, parent_status in ended:
            status = TaskStatus(parent_status)
            word = "failed" if status == FAILED else "was cancelled"
            message = f"not run: task {parent} that it depends on {word}"
            if conn.execute(text(sql.end_queued),
                            {**db.times(), "id": task_id, "status": status.value, "message": message}).first():
                propagate_end(db, conn, task_id, type_of(db, conn, task_id), status, message, None)
                done.append({"task_id": task_id, "reason": message})
    return done


def find_cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The cycles of a waits-on graph given as (task, parent) edges, each once, each as the list of its
    tasks in waiting order. Tasks that merely wait on a cycle are not in it (they end by propagation)."""
    parents: dict[str, list[str]] = {}
    for task, parent in edges:
        parents.setdefault(task, []).append(parent)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []
    for start in sorted(parents):
        if state.get(start):
            continue
        path: list[str] = []
        stack = [(start, iter(parents.get(start, ())))]
        state[start] = 1
        path.append(start)
        while stack:  # iterative DFS: a chain of thousands of waiting tasks must not hit the recursion limit
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):])
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(parents.get(nxt, ()))))
    return cycles
