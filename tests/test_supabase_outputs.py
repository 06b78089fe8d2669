"""Publishing outputs to Supabase Storage (the seed's Supabase mode): output_location becomes a public URL
and tasks on other machines read it from there.

The storage side is `tests/storage_server.py`, a local stand-in speaking the Storage REST calls we use
(there is no network here); the worker side is real supabase-py, real worker processes and, for the
two-machine case, a real PostgreSQL database."""

from __future__ import annotations

import urllib.request

import av
import numpy as np
import pytest
from PIL import Image

from source.storage import Storage
from source.store.task_store import TaskStore
from source.supabase_outputs import SupabaseOutputs, SupabaseStorageConfig
from source.task_context import TransientError
from tests.storage_server import StorageStandIn
from tests.worker_process import WorkerProcess

KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.dGVzdC1zaWduYXR1cmU"
FAST = ["--poll-interval", "0.2", "--retry-base-seconds", "0.2"]


@pytest.fixture
def storage_service():
    service = StorageStandIn(KEY)
    yield service
    service.close()


def test_publish_uploads_content_addressed_and_returns_the_public_url(storage_service, tmp_path):
    clip = tmp_path / "segment_abc.mp4"
    clip.write_bytes(b"\x00video" * 5000)
    outputs = SupabaseOutputs(SupabaseStorageConfig(url=storage_service.url, key=KEY))
    url = outputs.publish(clip, "project 7")
    assert url.startswith(f"{storage_service.url}/storage/v1/object/public/image_uploads/project_7/segment_abc-")
    assert urllib.request.urlopen(url).read() == clip.read_bytes()
    assert storage_service.uploads[-1]["content_type"] == "video/mp4"
    assert storage_service.uploads[-1]["upsert"] == "true"
    assert outputs.publish(clip, "project 7") == url  # same content, same name (re-upload overwrites)
    clip.write_bytes(b"regenerated")
    assert outputs.publish(clip, "project 7") != url  # new content, new URL: no stale cached copies
    assert "/system/" in outputs.publish(clip, None)


def test_refused_and_failed_uploads_are_transient_with_a_clear_reason(storage_service, tmp_path):
    clip = tmp_path / "x.png"
    clip.write_bytes(b"png")
    with pytest.raises(TransientError, match="refused.*bucket 'nope'"):
        SupabaseOutputs(SupabaseStorageConfig(url=storage_service.url, key=KEY, bucket="nope")).publish(clip)
    with pytest.raises(TransientError, match="refused"):
        SupabaseOutputs(SupabaseStorageConfig(url=storage_service.url, key=KEY + "x")).publish(clip)
    with pytest.raises(TransientError, match="upload of x.png to Supabase Storage failed"):
        SupabaseOutputs(SupabaseStorageConfig(url="http://127.0.0.1:9", key=KEY)).publish(clip)


def test_configuration_from_flags_and_the_seed_environment(monkeypatch):
    from source.settings import reset  # settings are read once: read them again after each change

    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY", "SUPABASE_ANON_KEY",
                 "SUPABASE_KEY", "SUPABASE_VIDEO_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    assert SupabaseStorageConfig.from_environment() is None  # not configured: outputs stay local
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co/")
    reset()
    with pytest.raises(ValueError, match="no key"):
        SupabaseStorageConfig.from_environment()
    monkeypatch.setenv("SUPABASE_ANON_KEY", "anon")
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "service")
    reset()
    config = SupabaseStorageConfig.from_environment()
    assert (config.url, config.key, config.bucket) == ("https://abc.supabase.co", "service", "image_uploads")
    assert SupabaseStorageConfig.from_environment(bucket="videos", key="k").bucket == "videos"


def rife_params(frames: int = 5) -> dict:
    return {"input_image_path1": "samples/images/chelsea.png", "input_image_path2": "samples/images/coffee.png",
            "frames": frames, "resolution": "64x48", "fps": 8}


def test_two_machines_share_outputs_through_storage(pg_url, storage_service, tmp_path):
    """Machine A makes a video, machine B (another output folder, which cannot read A's) extracts its
    last frame: B fetches A's output from its public URL, and both results are URLs."""
    store = TaskStore(pg_url)
    video = store.add_task("rife_interpolate_images", rife_params(), project_id="proj")
    frame = store.add_task("extract_frame", {"input_video_task_id": video, "frame_index": -1},
                           depends_on=[video], project_id="proj")
    env = {"SUPABASE_URL": storage_service.url, "SUPABASE_SERVICE_ROLE_KEY": KEY}
    a = WorkerProcess(pg_url, tmp_path / "logs", *FAST, "--exit-when-idle", "--task-types", "rife_interpolate_images",
                      "--output-dir", str(tmp_path / "machine_a"), worker_id="A", env=env)
    # B downloads A's output from the stand-in on 127.0.0.1: a loopback address, so it must opt in.
    b = WorkerProcess(pg_url, tmp_path / "logs", *FAST, "--exit-when-idle", "--task-types", "extract_frame",
                      "--output-dir", str(tmp_path / "machine_b"), "--allow-private-urls", worker_id="B", env=env)
    try:
        assert a.wait(180) == 0, a.stderr_tail()
        assert b.wait(180) == 0, b.stderr_tail()
    finally:
        a.stop()
        b.stop()
    public = f"{storage_service.url}/storage/v1/object/public/image_uploads/proj/"
    video_row, frame_row = store.get(video), store.get(frame)
    assert video_row["status"] == "Complete" and frame_row["status"] == "Complete", frame_row["error_message"]
    assert video_row["output_location"].startswith(public) and video_row["output_location"].endswith(".mp4")
    assert frame_row["output_location"].startswith(public) and frame_row["output_location"].endswith(".png")
    assert [e["url"] for e in a.events("output_published")] == [video_row["output_location"]]
    assert [e["url"] for e in b.events("output_published")] == [frame_row["output_location"]]
    # B read A's video from storage: it is in B's download cache, and equals what A uploaded
    downloaded = list((tmp_path / "machine_b" / ".downloads").glob("*.mp4"))
    assert len(downloaded) == 1
    assert downloaded[0].read_bytes() == urllib.request.urlopen(video_row["output_location"]).read()
    with av.open(str(downloaded[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5
    png = tmp_path / "frame.png"
    png.write_bytes(urllib.request.urlopen(frame_row["output_location"]).read())
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape == (48, 64, 3) and np.abs(image - frames[-1]).mean() < 2
    store.close()


def test_a_failed_upload_is_retried_and_a_missing_key_stops_the_worker(sqlite_url, storage_service, tmp_path):
    store = TaskStore(sqlite_url)
    tid = store.add_task("rife_interpolate_images", rife_params(3))
    storage_service.fail_next_uploads = 1
    w = WorkerProcess(sqlite_url, tmp_path / "logs", *FAST, "--exit-when-idle", worker_id="W",
                      env={"SUPABASE_URL": storage_service.url, "SUPABASE_SERVICE_ROLE_KEY": KEY})
    assert w.wait(120) == 0, w.stderr_tail()
    row = store.get(tid)
    assert row["status"] == "Complete" and row["attempts"] == 2
    assert row["output_location"].startswith(storage_service.url)
    retry = w.events("task_retry_scheduled")
    assert len(retry) == 1 and "Supabase Storage refused the upload" in retry[0]["error"]
    assert KEY not in w.log_file.read_text() and KEY not in w.stderr()
    # the local file stays where SQLite mode puts it
    local = Storage.for_database(sqlite_url).files_dir
    assert any(p.suffix == ".mp4" for p in local.iterdir())

    bad = WorkerProcess(sqlite_url, tmp_path / "logs", *FAST, "--exit-when-idle", worker_id="NoKey",
                        env={"SUPABASE_URL": storage_service.url, "SUPABASE_SERVICE_ROLE_KEY": "",
                             "SUPABASE_SERVICE_KEY": "", "SUPABASE_ANON_KEY": "", "SUPABASE_KEY": ""})
    assert bad.wait(60) == 2
    stopped = bad.events("worker_stopped")
    assert stopped and stopped[-1]["reason"] == "output storage misconfigured" and "no key" in stopped[-1]["error"]
    store.close()
