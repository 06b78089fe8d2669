#!/usr/bin/env python3
"""Queue benchmark: prints one JSON object.

- noop throughput (claim to complete, tasks/s) with 1, 2, 4 worker processes on SQLite and PostgreSQL,
  against a bare SQL claim/complete loop in as many processes (the reference), with our ratio to it;
- enqueue-to-start latency p50/p99 with an idle worker (PostgreSQL NOTIFY, SQLite change detection,
  and polling only);
- claim time with 1k and 100k finished rows in the table.

PostgreSQL runs a throwaway cluster with durable commits (fsync on), as in production.
Targets (issue 2): worker >= 25% of the bare loop; PostgreSQL pickup p50 <= 20 ms with NOTIFY;
claim time at 100k rows <= 1.5x that at 1k.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa

from source.store.task_store import TaskStore, normalise_db_url
from tests.pg_cluster import PgCluster
from tests.table_fill import insert_finished_rows
from tests.worker_process import WorkerProcess, all_events, wait_until


def ts(event: dict) -> float:
    return datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def worker_throughput(url: str, n_tasks: int, n_workers: int, workdir: Path) -> float:
    """Steady state: the workers are started and idle before the tasks arrive (as the bare loop's
    processes are running before they claim), so interpreter start-up is not counted and starting
    processes do not compete for the CPU with the ones already working. Measured from the first claim
    to the last completion."""
    store = TaskStore(url)
    workers = [WorkerProcess(url, workdir, "--poll-interval", "0.2", worker_id=f"tp{n_workers}-{i}")
               for i in range(n_workers)]
    try:
        for w in workers:
            w.wait_for_event("worker_started", timeout=120)
        time.sleep(0.5)
        store.add_tasks([dict(task_type="noop", params={}) for _ in range(n_tasks)])
        wait_until(lambda: store.count_by_status().get("Complete", 0) == n_tasks, timeout=600,
                   what=f"{n_tasks} tasks completed")
        for w in workers:
            w.signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)
    finally:
        for w in workers:
            w.stop()
    claimed = [ts(e) for e in all_events(workers, "task_claimed")]
    completed = [ts(e) for e in all_events(workers, "task_completed")]
    assert len(completed) == n_tasks, f"{len(completed)} of {n_tasks} completed"
    store.close()
    return n_tasks / (max(completed) - min(claimed))


def _bare_loop(url: str, counter) -> None:
    """The reference: the smallest correct claim + complete, straight on the driver, two short
    transactions per task."""
    done = 0
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(sa.engine.make_url(url).database, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        claim = ("UPDATE tasks SET status = 'In Progress' WHERE id = (SELECT id FROM tasks WHERE status = 'Queued'"
                 " ORDER BY created_at LIMIT 1) RETURNING id")
        complete = "UPDATE tasks SET status = 'Complete' WHERE id = ? AND status = 'In Progress'"
        while True:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(claim).fetchone()
            conn.execute("COMMIT")
            if row is None:
                break
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(complete, (row[0],))
            conn.execute("COMMIT")
            done += 1
    else:
        import psycopg

        conninfo = sa.engine.make_url(normalise_db_url(url)).set(drivername="postgresql").render_as_string(False)
        claim = ("UPDATE tasks SET status = 'In Progress' WHERE id = (SELECT id FROM tasks WHERE status = 'Queued'"
                 " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id")
        complete = "UPDATE tasks SET status = 'Complete' WHERE id = %s AND status = 'In Progress'"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while True:
                row = conn.execute(claim).fetchone()
                if row is None:
                    break
                conn.execute(complete, (row[0],))
                done += 1
    with counter.get_lock():
        counter.value += done


def bare_throughput(url: str, n_tasks: int, n_procs: int) -> float:
    store = TaskStore(url)
    store.add_tasks([dict(task_type="noop", params={}) for _ in range(n_tasks)])
    store.close()
    counter = mp.Value("i", 0)
    procs = [mp.Process(target=_bare_loop, args=(url, counter)) for _ in range(n_procs)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    assert counter.value == n_tasks
    return n_tasks / elapsed


def pickup_latency(url: str, workdir: Path, samples: int, *args: str) -> dict:
    store = TaskStore(url)
    w = WorkerProcess(url, workdir, *args, worker_id=f"lat-{'-'.join(a.strip('-') for a in args)}")
    w.wait_for_event("worker_started")
    time.sleep(1.0)
    latencies = []
    for _ in range(samples):
        t_insert = time.time()
        tid = store.add_task("noop", {})
        started = w.wait_for_event("task_claimed", lambda e, tid=tid: e["task_id"] == tid, timeout=30)
        latencies.append((ts(started) - t_insert) * 1000)
        time.sleep(0.05)
    w.stop()
    store.close()
    latencies.sort()
    return {"p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
            "samples": samples}


def claim_times(small_url: str, big_url: str, samples: int = 400) -> tuple[float, float]:
    """Median ms of one claim with 1k and with 100k Complete rows in the table. The two tables are
    claimed from alternately, so a change in the machine's speed during the run hits both alike."""
    stores = []
    for url, finished in ((small_url, 1_000), (big_url, 100_000)):
        store = TaskStore(url)
        insert_finished_rows(store, finished)
        store.add_tasks([dict(task_type="noop", params={}, depends_on=[f"done-{i + 1}"] if i % 2 else [])
                         for i in range(samples)])
        stores.append(store)
    times: list[list[float]] = [[], []]
    for _ in range(samples):
        for store, out in zip(stores, times):
            t0 = time.perf_counter()
            claim = store.claim("bench", 60)
            out.append((time.perf_counter() - t0) * 1000)
            store.complete(claim, None)
    for store in stores:
        store.close()
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=1000, help="tasks per throughput run")
    ap.add_argument("--latency-samples", type=int, default=40)
    args = ap.parse_args()

    cluster = PgCluster(durable=True).start()
    out: dict = {"machine": "2 cores, no GPU", "postgres": "local PG 15, durable commits (fsync on)",
                 "sqlite": "WAL, synchronous=NORMAL", "throughput_tasks_per_s": {}, "pickup_latency": {},
                 "claim_ms": {}}
    n = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)

            def fresh(backend: str) -> str:
                nonlocal n
                n += 1
                if backend == "sqlite":
                    return f"sqlite:///{tmp / f'bench{n}.db'}"
                return cluster.create_database(f"bench{n}")

            for backend in ("sqlite", "postgresql"):
                rows = {}
                for k in (1, 2, 4):
                    ours = worker_throughput(fresh(backend), args.tasks, k, tmp / f"logs{n}")
                    bare = bare_throughput(fresh(backend), args.tasks, k)
                    rows[f"{k}_workers"] = {"worker": round(ours, 1), "bare_sql_loop": round(bare, 1),
                                            "ratio": round(ours / bare, 3)}
                out["throughput_tasks_per_s"][backend] = rows
                one_k, hundred_k = claim_times(fresh(backend), fresh(backend))
                out["claim_ms"][backend] = {"1k_finished": round(one_k, 3), "100k_finished": round(hundred_k, 3),
                                            "ratio_100k_to_1k": round(hundred_k / one_k, 3)}
            s = args.latency_samples
            out["pickup_latency"]["postgresql_notify"] = pickup_latency(fresh("postgresql"), tmp / "l1", s,
                                                                        "--poll-interval", "5")
            out["pickup_latency"]["postgresql_polling_0.5s"] = pickup_latency(fresh("postgresql"), tmp / "l2", s,
                                                                              "--no-listen", "--poll-interval", "0.5")
            out["pickup_latency"]["sqlite_change_detection"] = pickup_latency(fresh("sqlite"), tmp / "l3", s,
                                                                              "--poll-interval", "5")
            out["pickup_latency"]["sqlite_polling_0.5s"] = pickup_latency(fresh("sqlite"), tmp / "l4", s,
                                                                          "--no-listen", "--poll-interval", "0.5")
    finally:
        cluster.destroy()
    worst_ratio = min(r["ratio"] for b in out["throughput_tasks_per_s"].values() for r in b.values())
    out["targets"] = {
        "worker_vs_bare_ratio_min": worst_ratio, "worker_vs_bare_target": 0.25,
        "pg_notify_p50_ms": out["pickup_latency"]["postgresql_notify"]["p50_ms"], "pg_notify_p50_target_ms": 20,
        "claim_100k_vs_1k": {b: v["ratio_100k_to_1k"] for b, v in out["claim_ms"].items()},
        "claim_ratio_target": 1.5,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
