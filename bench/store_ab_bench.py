#!/usr/bin/env python3
"""Store hot path, this working tree against a git ref (default `main`), in the same run: prints JSON.

Each measurement runs in a fresh process on a fresh database, alternating ref and tree round by round so
that a machine whose speed drifts (shared CPUs) affects both alike; the medians are reported with the
tree's ratio to the ref (above 1.0: the tree is slower). Measured per backend (SQLite file, throwaway
PostgreSQL cluster):
- insert_us: add_tasks of N tasks, per task;
- drain_us: claim, then complete_and_claim until the queue is empty (what a busy worker does), per task;
- sweep_ms: one sweep_stranded() with N Queued tasks waiting in chains of 10 (the worker runs it every 5 s).

    bench/store_ab_bench.py [--ref main] [--tasks 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pg_cluster import PgCluster

# Runs inside the measured checkout (its own source/ on sys.path); prints one JSON line.
MEASURE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from source.store.task_store import TaskStore
url, n = sys.argv[2], int(sys.argv[3])
store = TaskStore(url)
t0 = time.perf_counter()
store.add_tasks([dict(task_type="noop", params={"i": i}) for i in range(n)])
t1 = time.perf_counter()
claim = store.claim("w", 60)
while claim is not None:
    _, claim = store.complete_and_claim(claim, None, None, worker_id="w", lease_seconds=60)
t2 = time.perf_counter()
specs = []
for i in range(n):
    specs.append(dict(task_type="noop", params={}, task_id=f"c{i}", depends_on=[f"c{i - 1}"] if i % 10 else []))
store.add_tasks(specs)
store.claim("w", 60, ["nothing"])  # warm the connection, as a worker's would be
t3 = time.perf_counter()
store.sweep_stranded()
t4 = time.perf_counter()
print(json.dumps({"insert_us": (t1 - t0) / n * 1e6, "drain_us": (t2 - t1) / n * 1e6, "sweep_ms": (t4 - t3) * 1e3}))
store.close()
"""


def measure(checkout: Path, url: str, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(checkout), url, str(n)], check=True,
                         capture_output=True, text=True, cwd=str(checkout)).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="main")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="store-ab-"))
    ref_dir = work / "ref"
    ref_dir.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", args.ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(ref_dir)], input=archive, check=True)
    sides = {"ref": ref_dir, "tree": REPO}
    cluster = PgCluster(durable=True).start()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        count = 0
        for _ in range(args.rounds):
            for backend in ("sqlite", "postgresql"):
                for side, checkout in sides.items():
                    count += 1
                    url = (f"sqlite:///{work / f'db{count}.sqlite'}" if backend == "sqlite"
                           else cluster.create_database(f"ab{count}"))
                    results.setdefault(backend, {}).setdefault(side, []).append(measure(checkout, url, args.tasks))
    finally:
        cluster.destroy()
    report: dict[str, object] = {"ref": args.ref, "tasks": args.tasks, "rounds": args.rounds}
    for backend, by_side in results.items():
        report[backend] = {}
        for metric in ("insert_us", "drain_us", "sweep_ms"):
            ref = statistics.median(r[metric] for r in by_side["ref"])
            tree = statistics.median(r[metric] for r in by_side["tree"])
            report[backend][metric] = {"ref": round(ref, 3), "tree": round(tree, 3), "ratio": round(tree / ref, 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
