#!/usr/bin/env python3
"""HTTP API benchmark: prints one JSON object.

- create throughput (POST /v1/tasks, one keep-alive client) against inserting the same tasks with
  TaskStore.add_task in this process (the reference: what the API adds is HTTP, auth and validation);
- status throughput (GET /v1/tasks/{id}) against TaskStore.get;
- the webhook trigger's cost on the worker's hot path: claim + complete per second on a table with the
  outbox trigger (no task has a webhook) against the same on a table without it, alternating rounds;
- event latency p50/p99: from a state change committed in this process (claim, progress, complete) to
  the SSE event's arrival at a client.

Runs a real serve.py on 127.0.0.1 over a fresh SQLite file (or --db URL, e.g. a PostgreSQL database).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from source.store.api_store import ApiStore
from source.store.task_store import TaskStore
from tests.api_server import ApiServer


def rate(n: int, fn) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def listen(client: httpx.Client, task_id: str, arrivals: list, ready: threading.Event) -> None:
    """Read a task's event stream, noting when each event arrives."""
    with client.stream("GET", f"/v1/tasks/{task_id}/events", timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("retry:"):
                ready.set()
            if line.startswith("event:"):
                arrivals.append((line.split(":", 1)[1].strip(), time.perf_counter()))
                ready.set()


def event_latencies(client: httpx.Client, store: TaskStore, rounds: int) -> list[float]:
    """For each round: a queued task, a stream on it, then claim + complete committed here; the time
    from each commit to the matching event."""
    out: list[float] = []
    for r in range(rounds):
        task_id = client.post("/v1/tasks", json={"task_type": "noop", "params": {"r": r}}).json()["id"]
        arrivals: list[tuple[str, float]] = []
        ready = threading.Event()

        reader = threading.Thread(target=listen, args=(client, task_id, arrivals, ready))
        reader.start()
        ready.wait(10)
        time.sleep(0.3)  # the stream has sent the Queued state; now change it
        claim = store.claim("bench", 60)
        while claim is not None and claim.id != task_id:  # a leftover: finish it and take the next
            store.complete(claim, None)
            claim = store.claim("bench", 60)
        started_at = time.perf_counter()
        time.sleep(0.6)
        store.complete(claim, None)
        done_at = time.perf_counter()
        reader.join(30)
        state_arrival = [t for k, t in arrivals if k == "state" and t > started_at]
        if state_arrival:
            out.append(state_arrival[0] - started_at)
        out += [t - done_at for k, t in arrivals if k == "end"]
    return out


def hot_path_rate(db_url: str, n: int) -> float:
    store = TaskStore(db_url)
    try:
        store.add_tasks([{"task_type": "noop", "params": {}} for _ in range(n)])
        started = time.perf_counter()
        while (claim := store.claim("bench", 60)) is not None:
            store.complete(claim, None)
        return n / (time.perf_counter() - started)
    finally:
        store.close()


def trigger_overhead(base: Path, n: int, rounds: int = 3) -> dict:
    """SQLite files side by side: one with the API's tables and trigger, one without."""
    with_trigger, without = [], []
    for r in range(rounds):
        plain, hooked = f"sqlite:///{base / f'plain{r}.db'}", f"sqlite:///{base / f'hooked{r}.db'}"
        store = TaskStore(hooked)
        ApiStore(store)  # creates the outbox tables and the trigger
        store.close()
        without.append(hot_path_rate(plain, n))
        with_trigger.append(hot_path_rate(hooked, n))
    return {"claim_complete_per_s_with_trigger": round(statistics.median(with_trigger), 1),
            "claim_complete_per_s_without": round(statistics.median(without), 1),
            "ratio": round(statistics.median(with_trigger) / statistics.median(without), 3)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=None)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--event-rounds", type=int, default=15)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    db_url = args.db or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    store = TaskStore(db_url)
    key = ApiStore(store).create_key("bench")[1]
    log = Path(tmp.name) / "serve.log"
    server = ApiServer(db_url, log, "--no-webhooks")
    try:
        client = server.client(key)
        client.get("/v1/tasks")  # warm: imports, first connection
        client.post("/v1/tasks", json={"task_type": "noop", "params": {}})
        ids: list[str] = []
        api_create = rate(args.n, lambda i: ids.append(
            client.post("/v1/tasks", json={"task_type": "noop", "params": {"i": i}}).json()["id"]))
        ref_create = rate(args.n, lambda i: store.add_task("noop", {"i": i}, project_id="bench"))
        api_status = rate(args.n, lambda i: client.get(f"/v1/tasks/{ids[i]}").raise_for_status())
        ref_status = rate(args.n, lambda i: store.get(ids[i]))
        latencies = event_latencies(client, store, args.event_rounds)
        overhead = trigger_overhead(Path(tmp.name), args.n)
        result = {
            "backend": "sqlite" if db_url.startswith("sqlite") else "postgresql", "n": args.n,
            "create_per_s": round(api_create, 1), "reference_insert_per_s": round(ref_create, 1),
            "create_ratio_to_reference": round(api_create / ref_create, 3),
            "status_per_s": round(api_status, 1), "reference_get_per_s": round(ref_status, 1),
            "status_ratio_to_reference": round(api_status / ref_status, 3),
            "event_latency_ms": {"n": len(latencies), "p50": round(statistics.median(latencies) * 1000, 1),
                                 "p99": round(percentile(latencies, 0.99) * 1000, 1)} if latencies else None,
            "webhook_trigger_sqlite": overhead,
        }
        print(json.dumps(result))
    finally:
        server.stop()
        store.close()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
