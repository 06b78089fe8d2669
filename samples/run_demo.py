#!/usr/bin/env python3
"""`make demo`: a three-image travel on the tiny models, on the embedded SQLite default.

Queues samples/payloads/travel_seed_format.json (the seed's payload, unchanged) into demo/tasks.db, runs a
worker until the queue is drained, prints the task table and where the final video is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from source.media.video_io import probe_video  # noqa: E402
from source.store.task_store import TaskStore  # noqa: E402

DEMO = REPO / "demo"
PAYLOAD = REPO / "samples" / "payloads" / "travel_seed_format.json"


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    db = f"sqlite:///{DEMO / 'tasks.db'}"
    payload = json.loads(PAYLOAD.read_text())
    store = TaskStore(db)
    task_id = store.add_task(payload["task_type"], payload["params"], project_id="demo")
    print(f"queued {payload['task_type']} {task_id} from {PAYLOAD.relative_to(REPO)}")

    started = time.monotonic()
    with open(DEMO / "worker.log", "w") as log:
        worker = subprocess.run([sys.executable, str(REPO / "headless.py"), "--db", db, "--exit-when-idle",
                                 "--poll-interval", "0.2", "--worker-id", "demo-worker"],
                                cwd=REPO, stderr=log, stdout=log)
    elapsed = time.monotonic() - started
    subprocess.run([sys.executable, str(REPO / "add_task.py"), "list", "--db", db, "--limit", "20"], cwd=REPO)

    row = store.get(task_id)
    store.close()
    if worker.returncode != 0 or row["status"] != "Complete":
        print(f"demo failed: orchestrator is {row['status']}: {row.get('error_message')}\n"
              f"worker exit code {worker.returncode}; log: {DEMO / 'worker.log'}")
        return 1
    video = DEMO / "public" / row["output_location"]
    info = probe_video(video)
    print(f"\nfinal video: {video}\n  {info.frames} frames, {info.width}x{info.height} @ {info.fps:g} fps; "
          f"worker ran for {elapsed:.1f} s (log: {DEMO / 'worker.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
