#!/usr/bin/env python3
"""Fleet benchmark (issue 11): model affinity against strict FIFO, in one run. Prints one JSON object.

2 worker processes drain 60 `generate` tasks at 64x64 spread over 3 tiny models (catalog entries
`fleet-a/b/c`, each a separately loaded copy of the tiny text-to-video model), inserted in a random order
fixed by --seed. Once with `--affinity-max-wait 0` (the old claim: strict priority + age, the reference)
and once with the default affinity (cut-off 300 s), each on a fresh database. For each: model loads
(the workers' model_loaded events), wall time, and the longest wait (claim time - insert time).

Target: affinity loads <= 1/4 of FIFO's, and no wait longer than the cut-off plus one task's run time.

    python bench/fleet_bench.py [--tasks 60] [--seed 11] [--db postgresql]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa

from source.store.task_store import TaskStore
from tests.pg_cluster import PgCluster
from tests.worker_process import WorkerProcess, all_events

MODELS = ("fleet-a", "fleet-b", "fleet-c")
CUTOFF = 300.0


def _seconds(value) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=None).timestamp()


def run_mode(url: str, work: Path, order: list[str], catalog: Path, max_wait: float, name: str) -> dict:
    store = TaskStore(url)
    ids = store.add_tasks([dict(task_type="generate", params={
        "model": model, "prompt": f"bench {i}", "seed": i, "resolution": "64x64", "video_length": 5,
        "num_inference_steps": 2}) for i, model in enumerate(order)])
    started = time.perf_counter()
    workers = [WorkerProcess(url, work / f"logs-{name}", "--poll-interval", "0.2", "--exit-when-idle",
                             "--affinity-max-wait", str(max_wait), worker_id=f"{name}-{i}",
                             env={"HEADLESS_MODEL_CACHE": str(work / "models-cache"),
                                  "HEADLESS_MODEL_CATALOG": str(catalog)}) for i in range(2)]
    try:
        for w in workers:
            if w.wait(3600) != 0:
                raise SystemExit(f"worker {w.worker_id} failed: {w.stderr_tail()}")
    finally:
        for w in workers:
            w.stop()
    wall = time.perf_counter() - started
    counts = store.count_by_status()
    with store.read() as conn:
        rows = conn.execute(sa.text("SELECT created_at, generation_started_at, generation_processed_at FROM tasks"))
        times = [(_seconds(c), _seconds(s), _seconds(e)) for c, s, e in rows]
    store.close()
    loads = all_events(workers, "model_loaded")
    longest_run = max(e - s for _, s, e in times)
    return {"tasks": len(ids), "statuses": counts, "model_loads": len(loads),
            "loads_per_worker": {w.worker_id: len(w.events("model_loaded")) for w in workers},
            "wall_s": round(wall, 2), "longest_wait_s": round(max(s - c for c, s, _ in times), 2),
            "longest_task_s": round(longest_run, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=60)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = p.parse_args()
    rng = random.Random(args.seed)
    order = [MODELS[i % len(MODELS)] for i in range(args.tasks)]
    rng.shuffle(order)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = Path(tmp)
        catalog = work / "catalog.json"
        catalog.write_text(json.dumps({m: {"base": "tiny-t2v"} for m in MODELS}))
        # the tiny model is built once into the shared cache, not timed
        import os

        cache = os.environ.get("HEADLESS_MODEL_CACHE")
        (work / "models-cache").symlink_to(Path(cache).resolve()) if cache else (work / "models-cache").mkdir()
        cluster = PgCluster().start() if args.db == "postgresql" else None
        try:
            results = {}
            for name, max_wait in (("fifo", 0.0), ("affinity", CUTOFF)):
                url = cluster.create_database(name) if cluster else f"sqlite:///{work / name}.db"
                results[name] = run_mode(url, work, order, catalog, max_wait, name)
        finally:
            if cluster:
                cluster.destroy()
    fifo, aff = results["fifo"], results["affinity"]
    print(json.dumps({
        "bench": "fleet", "database": args.db, "workers": 2, "tasks": args.tasks, "models": len(MODELS),
        "seed": args.seed, "fifo": fifo, "affinity": aff,
        "load_ratio": round(aff["model_loads"] / max(1, fifo["model_loads"]), 3),
        "targets": {"affinity_loads_at_most_quarter_of_fifo": aff["model_loads"] * 4 <= fifo["model_loads"],
                    "longest_wait_within_cutoff_plus_one_task":
                        aff["longest_wait_s"] <= CUTOFF + aff["longest_task_s"]},
    }, indent=2))


if __name__ == "__main__":
    main()
