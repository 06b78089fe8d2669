"""add_task.py stages the local files a payload names: the real CLI, run as a subprocess from
another working directory, then a real worker completes the tasks, on SQLite and on PostgreSQL (with a
shared --output-dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from source.store.task_store import TaskStore, parse_params
from tests.storage_server import StorageStandIn
from tests.worker_process import REPO, WorkerProcess


def cli(cwd: Path, db_url: str, *args: str, shared: Path | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    extra = ["--output-dir", str(shared)] if shared is not None and not db_url.startswith("sqlite") else []
    return subprocess.run([sys.executable, str(REPO / "add_task.py"), "--db", db_url, *args, *extra], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def photo(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((48, 64, 3), value, np.uint8)
    pixels[:, : 8 * (1 + value % 5)] = 255 - value  # distinct content per value
    Image.fromarray(pixels).save(path)
    return path


def staged_files(db_url: str, tmp_path: Path, shared: Path) -> list[Path]:
    root = (tmp_path / "public" / "files" if db_url.startswith("sqlite") else shared) / "inputs"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def run_worker_until_idle(db_url: str, tmp_path: Path, shared: Path, name: str) -> None:
    w = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", "--exit-when-idle",
                      "--output-dir", str(shared), worker_id=name)
    try:
        assert w.wait(180) == 0, w.stderr_tail()
    finally:
        w.stop()


def test_cli_stages_local_files_and_a_worker_completes_the_tasks(db_url, tmp_path):
    home, shared = tmp_path / "home", tmp_path / "shared"  # the user's folder; the workers' shared folder
    a, b, c = photo(home / "pics" / "cat.png", 40), photo(home / "pics" / "dog.png", 90), photo(
        tmp_path / "elsewhere" / "owl.png", 160)
    rife = {"frames": 3, "resolution": "64x48", "fps": 8}

    # A relative path (against the CLI's working directory) and an absolute one.
    done = cli(home, db_url, "--type", "rife_interpolate_images", "--params",
               json.dumps({**rife, "input_image_path1": "pics/cat.png", "input_image_path2": str(b)}), shared=shared)
    assert done.returncode == 0, done.stderr
    first = done.stdout.strip()
    store = TaskStore(db_url)
    params = parse_params(store.get(first)["params"])
    copies = staged_files(db_url, tmp_path, shared)
    assert len(copies) == 2 and {p.read_bytes() for p in copies} == {a.read_bytes(), b.read_bytes()}
    for key, original in (("input_image_path1", a), ("input_image_path2", b)):
        assert params[key] != str(original) and params["_staged_from"][params[key]] == str(original)
        assert Path(params[key]).name in {p.name for p in copies}

    # A missing file: refused at once, one line naming the key and the path; nothing inserted.
    before = len(store.list_tasks(limit=100))
    refused = cli(home, db_url, "--type", "rife_interpolate_images", "--params",
                  json.dumps({**rife, "input_image_path1": "pics/cat.png", "input_image_path2": "pics/gone.png"}),
                  shared=shared)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "input_image_path2" in refused.stderr and "pics/gone.png" in refused.stderr
    assert len(store.list_tasks(limit=100)) == before
    if not db_url.startswith("sqlite"):  # no shared folder named: refused, not staged where no worker looks
        refused = cli(home, db_url, "--type", "rife_interpolate_images", "--params",
                      json.dumps({**rife, "input_image_path1": "pics/cat.png", "input_image_path2": str(b)}),
                      env={"HEADLESS_OUTPUT_DIR": ""})
        assert refused.returncode != 0 and "--output-dir" in refused.stderr, refused.stderr
        assert not (home / "outputs").exists() and len(store.list_tasks(limit=100)) == before
    assert cli(home, db_url, "--type", "noop", "--params", "{}").returncode == 0  # no files: no folder needed
    assert not (home / "outputs").exists()
    before += 1

    # --jsonl: the same files again (content hash: nothing copied twice) and a new one.
    lines = home / "batch.jsonl"
    lines.write_text("\n".join(json.dumps({"task_type": "rife_interpolate_images", "params": {
        **rife, "input_image_path1": one, "input_image_path2": two}}) for one, two in
        (("pics/dog.png", "pics/cat.png"), ("pics/cat.png", str(c)))) + "\n")
    done = cli(home, db_url, "--jsonl", "batch.jsonl", shared=shared)
    assert done.returncode == 0, done.stderr
    batch = done.stdout.split()
    assert len(batch) == 2 and len(staged_files(db_url, tmp_path, shared)) == 3

    run_worker_until_idle(db_url, tmp_path, shared, "W1")  # started from the repository, not from home
    for task_id in (first, *batch):
        row = store.get(task_id)
        assert row["status"] == "Complete", row

    # regenerate with a changed local file: staged the same way, the earlier record kept.
    done = cli(home, db_url, "regenerate", first, "--params", json.dumps({"input_image_path2": "../elsewhere/owl.png"}),
               shared=shared)
    assert done.returncode == 0, done.stderr
    params = parse_params(store.get(first)["params"])
    assert params["_staged_from"][params["input_image_path2"]] == str(c.resolve())
    assert params["_staged_from"][params["input_image_path1"]] == str(a)
    assert len(staged_files(db_url, tmp_path, shared)) == 3
    refused = cli(home, db_url, "regenerate", first, "--params", json.dumps({"input_image_path1": "no/such.png"}),
                  shared=shared)
    assert refused.returncode != 0 and "input_image_path1" in refused.stderr and "no/such.png" in refused.stderr
    run_worker_until_idle(db_url, tmp_path, shared, "W2")
    assert store.get(first)["status"] == "Complete"
    store.close()


def test_cli_stages_the_seed_travel_images_urls_and_outputs_stay(tmp_path):
    """The seed's travel shape (orchestrator_details.input_image_paths_resolved) is staged by the same walker;
    a URL and a path the worker's storage already resolves (another task's output) are left alone."""
    db_url = f"sqlite:///{tmp_path / 'tasks.db'}"
    payload = json.loads((REPO / "samples" / "payloads" / "travel_seed_format.json").read_text())
    details = payload["params"]["orchestrator_details"]
    (tmp_path / "public" / "files").mkdir(parents=True)
    photo(tmp_path / "public" / "files" / "earlier_output.png", 7)
    details["input_image_paths_resolved"][1] = "files/earlier_output.png"
    details["input_image_paths_resolved"][2] = "https://example.com/coffee.png"
    line = tmp_path / "travel.jsonl"
    line.write_text(json.dumps(payload) + "\n")
    done = cli(REPO, db_url, "--jsonl", str(line))
    assert done.returncode == 0, done.stderr
    store = TaskStore(db_url)
    params = parse_params(store.get(done.stdout.strip())["params"])
    images = params["orchestrator_details"]["input_image_paths_resolved"]
    assert images[0].startswith("files/inputs/") and images[1:] == ["files/earlier_output.png",
                                                                    "https://example.com/coffee.png"]
    assert params["_staged_from"] == {images[0]: str(REPO / "samples" / "images" / "astronaut.png")}

    # A plain generation: nested file fields (loras[].path, image_refs[]) found through the bridge's model.
    lora = tmp_path / "styles" / "ink.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(b"not really weights")
    photo(tmp_path / "styles" / "ref.png", 200)
    generate = {"model": "t2v", "prompt": "a cat", "image_refs": ["ref.png"],
                "loras": [{"path": "ink.safetensors", "multiplier": 0.5}]}
    done = cli(tmp_path / "styles", db_url, "--type", "generate", "--params", json.dumps(generate))
    assert done.returncode == 0, done.stderr
    params = parse_params(store.get(done.stdout.strip())["params"])
    assert params["loras"][0]["path"].startswith("files/inputs/") and params["loras"][0]["multiplier"] == 0.5
    assert params["image_refs"][0].startswith("files/inputs/") and params["prompt"] == "a cat"
    assert sorted(params["_staged_from"].values()) == [str(lora), str(tmp_path / "styles" / "ref.png")]
    store.close()


def test_cli_uploads_local_files_to_supabase_storage_and_a_worker_reads_them(sqlite_url, tmp_path):
    """With a Supabase project configured, files are uploaded and the params name their public URLs."""
    key = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.dGVzdC1zaWduYXR1cmU"
    service = StorageStandIn(key)
    env = {"SUPABASE_URL": service.url, "SUPABASE_SERVICE_ROLE_KEY": key}
    home = tmp_path / "home"
    a, b = photo(home / "cat.png", 30), photo(home / "dog.png", 120)
    try:
        params = {"frames": 3, "resolution": "64x48", "fps": 8, "input_image_path1": "cat.png",
                  "input_image_path2": "dog.png"}
        done = cli(home, sqlite_url, "--type", "rife_interpolate_images", "--params", json.dumps(params), env=env)
        assert done.returncode == 0, done.stderr
        store = TaskStore(sqlite_url)
        stored = parse_params(store.get(done.stdout.strip())["params"])
        public = f"{service.url}/storage/v1/object/public/image_uploads/inputs/"
        for key_name, original in (("input_image_path1", a), ("input_image_path2", b)):
            url = stored[key_name]
            assert url.startswith(public) and stored["_staged_from"][url] == str(original)
        assert sorted(u["name"] for u in service.uploads) == sorted(
            stored[k][len(public) - len("inputs/"):] for k in ("input_image_path1", "input_image_path2"))
        assert not (tmp_path / "public" / "files" / "inputs").exists()  # uploaded, not copied
        w = WorkerProcess(sqlite_url, tmp_path / "logs", "--poll-interval", "0.2", "--exit-when-idle",
                          "--allow-private-urls", worker_id="S", env=env)  # the stand-in is on 127.0.0.1
        try:
            assert w.wait(180) == 0, w.stderr_tail()
        finally:
            w.stop()
        row = store.get(done.stdout.strip())
        assert row["status"] == "Complete", row["error_message"]
        store.close()
    finally:
        service.close()
