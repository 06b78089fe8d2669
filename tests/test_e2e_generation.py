"""The `generate` task type end to end through real worker processes (headless.py), on tiny random-weight
models with real video files: every mode, the warm engine, determinism, LoRAs, cancelling a running
generation, the output cache shared through the database, bad input, and a fatal fault."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from source.media.images import save_png
from source.media.video_io import probe_video, read_frames, write_video
from source.store.task_store import TaskStore, parse_params
from tests.worker_process import WorkerProcess, wait_until

SIZE = 32
FRAMES = 5
BASE: dict[str, Any] = dict(prompt="a red square drifting", resolution=f"{SIZE}x{SIZE}", video_length=FRAMES,
                            num_inference_steps=2, seed=7)
SIDECAR_KEYS = {"params", "effective", "seed", "adjustments", "inputs", "loras", "model", "versions", "timings",
                "cache_key", "output", "cache_hit", "engine", "task_id"}


# -- helpers -------------------------------------------------------------------------------------------
@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """Start / end / reference images and VACE guide + mask videos in an input root."""
    d = tmp_path / "inputs"
    d.mkdir()
    start = np.zeros((SIZE, SIZE, 3), np.uint8)
    start[4:20, 4:20] = (220, 40, 40)
    end = np.zeros((48, 40, 3), np.uint8)  # another size and aspect: fitted to the target
    end[20:44, 10:36] = (40, 40, 220)
    ref = np.full((SIZE, SIZE, 3), (30, 180, 60), np.uint8)
    save_png(start, d / "start.png")
    save_png(end, d / "end.png")
    save_png(ref, d / "ref.png")
    write_video([np.full((SIZE, SIZE, 3), 20 + 30 * i, np.uint8) for i in range(FRAMES)], d / "guide.mp4")
    mask = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask[:, SIZE // 2:] = 255  # generate the right half, keep the left half of the guide
    write_video([mask] * FRAMES, d / "mask.mp4")
    return {"root": d, "start": d / "start.png", "end": d / "end.png", "ref": d / "ref.png",
            "guide": d / "guide.mp4", "mask": d / "mask.mp4"}


def start_worker(db_url: str, tmp_path: Path, inputs: dict[str, Path], tag: str, *extra: str,
                 env: dict | None = None) -> WorkerProcess:
    args = ["--exit-when-idle", "--poll-interval", "0.2", "--input-root", str(inputs["root"]),
            "--output-dir", str(tmp_path / "outputs"), *extra]
    return WorkerProcess(db_url, tmp_path / "logs", *args, worker_id=tag, env=env)


def run_worker(db_url: str, tmp_path: Path, inputs: dict[str, Path], tag: str, *extra: str,
               env: dict | None = None, timeout: float = 300) -> WorkerProcess:
    w = start_worker(db_url, tmp_path, inputs, tag, *extra, env=env)
    try:
        code = w.wait(timeout)
    finally:
        w.stop()
    assert code == 0, w.stderr_tail()
    return w


def output_file(db_url: str, location: str) -> Path:
    if db_url.startswith("sqlite"):
        return Path(db_url[len("sqlite:///"):]).parent / "public" / location
    return Path(location)


def finished(store: TaskStore, db_url: str, tid: str, frames: int = FRAMES, size: int = SIZE) -> dict[str, Any]:
    """A Complete generate task: its video has the requested shape and its sidecar is complete."""
    row = store.get(tid)
    assert row["status"] == "Complete", row["error_message"]
    result = parse_params(row["result"])
    video = output_file(db_url, row["output_location"])
    info = probe_video(video)
    assert (info.frames, info.width, info.height) == (frames, size, size)
    assert (result["frames"], result["width"], result["height"]) == (frames, size, size)
    sidecar_path = output_file(db_url, result["sidecar"])
    assert sidecar_path == video.with_suffix(".json")
    side = json.loads(sidecar_path.read_text())
    assert SIDECAR_KEYS <= set(side), SIDECAR_KEYS - set(side)
    assert side["seed"] == result["seed"] and side["task_id"] == tid
    assert side["model"]["name"] and side["model"]["revision"]
    assert {"torch", "diffusers", "transformers", "python"} <= set(side["versions"])
    assert side["timings"]["total_s"] >= 0
    assert side["output"]["frames"] == frames and (side["effective"]["width"], side["effective"]["height"]) == (size, size)
    return {"row": row, "result": result, "video": video, "sidecar": side}


def frames_of(path: Path) -> np.ndarray:
    return np.stack(read_frames(path))


def step_done(message: str | None) -> int:
    """k from a progress message 'step k of N' (-1 otherwise)."""
    m = re.match(r"step (\d+) of \d+", message or "")
    return int(m.group(1)) if m else -1


def gen(model: str, **kw: Any) -> dict[str, Any]:
    return {**BASE, "model": model, **kw}


# -- 1. every mode through one worker -----------------------------------------------------------------
def test_each_mode_through_one_worker(db_url, tmp_path, inputs, tiny_models):
    store = TaskStore(db_url)
    i = inputs
    tasks = {
        "tiny-t2v": store.add_task("generate", gen("tiny-t2v")),
        "tiny-i2v": store.add_task("generate", gen("tiny-i2v", image_start=str(i["start"]))),
        "tiny-flf2v": store.add_task("generate", gen("tiny-flf2v", image_start=str(i["start"]),
                                                     image_end=str(i["end"]))),
        "tiny-vace": store.add_task("generate", gen("tiny-vace", video_guide=str(i["guide"]),
                                                    video_mask=str(i["mask"]), image_refs=[str(i["ref"])])),
        "tiny-i2v22": store.add_task("generate", gen("tiny-i2v22", image_start=str(i["start"]))),
    }
    w = run_worker(db_url, tmp_path, inputs, "modes")
    expected_inputs = {"tiny-t2v": set(), "tiny-i2v": {"image_start"}, "tiny-flf2v": {"image_start", "image_end"},
                       "tiny-vace": {"video_guide", "video_mask", "image_refs[0]"}, "tiny-i2v22": {"image_start"}}
    for model, tid in tasks.items():
        out = finished(store, db_url, tid)
        side, result = out["sidecar"], out["result"]
        assert side["model"]["name"] == model
        assert result["seed"] == 7 and side["params"]["seed"] == 7 and not result["cache_hit"]
        assert side["effective"]["num_inference_steps"] == 2 and side["params"]["prompt"] == BASE["prompt"]
        assert set(side["inputs"]) == expected_inputs[model]
        for h in side["inputs"].values():
            assert len(h["sha256"]) == 64 and h["ref"]
        if model == "tiny-i2v22":
            assert side["effective"]["guidance_scale_2"] is not None
    # the VACE inputs really were used: the sidecar hashes are those of the files given
    from source.files import sha256_file as sha256_of

    vace = json.loads(finished(store, db_url, tasks["tiny-vace"])["video"].with_suffix(".json").read_text())
    assert vace["inputs"]["video_guide"]["sha256"] == sha256_of(inputs["guide"])
    assert vace["inputs"]["video_mask"]["sha256"] == sha256_of(inputs["mask"])
    # one load per model, each logged
    assert sorted(e["model"] for e in w.events("model_loaded")) == sorted(tasks)
    assert len(w.events("task_completed")) == 5 and not w.events("task_failed")
    store.close()


# -- 2. warm engine ------------------------------------------------------------------------------------
def test_warm_engine_loads_once_per_model_switch(sqlite_url, tmp_path, inputs, tiny_models):
    store = TaskStore(sqlite_url)
    # claim order is priority first: three t2v tasks, then i2v, then t2v again
    t2v = [store.add_task("generate", gen("tiny-t2v", seed=s, use_cache=False), priority=10) for s in (1, 2, 3)]
    i2v = store.add_task("generate", gen("tiny-i2v", image_start=str(inputs["start"]), use_cache=False), priority=5)
    back = store.add_task("generate", gen("tiny-t2v", seed=4, use_cache=False), priority=1)
    w = run_worker(sqlite_url, tmp_path, inputs, "warm")
    for tid in [*t2v, i2v, back]:
        finished(store, sqlite_url, tid)
    order = [e["task_id"] for e in w.events("task_claimed")]
    assert order == [*t2v, i2v, back]
    loads = w.events("model_loaded")
    assert [e["model"] for e in loads] == ["tiny-t2v", "tiny-i2v", "tiny-t2v"], loads
    # each load happened inside the task that needed it: the 2nd and 3rd t2v task loaded nothing
    loaded_in = [e["task_id"] for e in loads]
    assert loaded_in == [t2v[0], i2v, back]
    store.close()


# -- 3. determinism ------------------------------------------------------------------------------------
def test_same_fixed_seed_gives_identical_frames(sqlite_url, tmp_path, inputs, tiny_models):
    store = TaskStore(sqlite_url)
    p = gen("tiny-t2v", seed=123, use_cache=False)
    a, b = store.add_task("generate", p), store.add_task("generate", p)
    c = store.add_task("generate", dict(p, seed=124))
    w = run_worker(sqlite_url, tmp_path, inputs, "det")
    fa, fb, fc = (frames_of(finished(store, sqlite_url, t)["video"]) for t in (a, b, c))
    assert fa.shape == (FRAMES, SIZE, SIZE, 3)
    assert np.array_equal(fa, fb), "same seed and params must give the same frames"
    assert not np.array_equal(fa, fc), "another seed must give other frames"
    assert not w.events("cache_hit"), "use_cache false really regenerates"
    store.close()


# -- 4. LoRAs ------------------------------------------------------------------------------------------
def test_lora_changes_output_and_zero_multiplier_does_not(sqlite_url, tmp_path, inputs, tiny_loras):
    store = TaskStore(sqlite_url)
    lora = str(tiny_loras["t2v_wan"])  # in the model cache: a trusted LoRA folder
    p = gen("tiny-t2v", seed=31, use_cache=False)
    base = store.add_task("generate", p, priority=4)
    with_lora = store.add_task("generate", dict(p, loras=[{"path": lora, "multiplier": 1.0}]), priority=3)
    # the seed worker's spelling: additional_loras {path: strength}
    zero = store.add_task("generate", dict(p, additional_loras={lora: 0.0}), priority=2)
    again = store.add_task("generate", p, priority=1)  # after a LoRA task: the LoRA must be off again
    w = run_worker(sqlite_url, tmp_path, inputs, "lora")
    fb, fl, fz, fa = (frames_of(finished(store, sqlite_url, t)["video"]) for t in (base, with_lora, zero, again))
    assert not np.array_equal(fb, fl), "a LoRA at multiplier 1 must change the output"
    assert np.array_equal(fb, fz), "a LoRA at multiplier 0 must give the output without it"
    assert np.array_equal(fb, fa), "an unrequested LoRA must be off"
    side = finished(store, sqlite_url, with_lora)["sidecar"]
    assert side["loras"][0]["multiplier"] == 1.0 and len(side["loras"][0]["sha256"]) == 64
    assert finished(store, sqlite_url, zero)["sidecar"]["loras"][0]["multiplier"] == 0.0
    assert len(w.events("model_loaded")) == 1, "LoRAs never reload the base model"
    store.close()


# -- 5. cancel a running generation --------------------------------------------------------------------
def test_cancel_while_generating(sqlite_url, tmp_path, inputs, tiny_models):
    store = TaskStore(sqlite_url)
    # 200 steps of 65 frames at 256x256: long enough (seconds) that the cancel lands mid-generation on any
    # machine (at 64x64 and 9 frames a quiet machine finished all 200 steps within the cancel's round trip)
    tid = store.add_task("generate", gen("tiny-t2v", resolution="256x256", video_length=65, num_inference_steps=200,
                                         use_cache=False))
    w = start_worker(sqlite_url, tmp_path, inputs, "cancel")
    try:
        w.wait_for_event("task_claimed", lambda e: e["task_id"] == tid, timeout=120)
        # some denoising steps have run (the progress message is written to the row)
        wait_until(lambda: step_done(store.get(tid)["progress_message"]) >= 1, timeout=120,
                   what="step progress")
        assert step_done(store.get(tid)["progress_message"]) < 200
        assert store.request_cancel(tid) == "In Progress"
        t0 = time.monotonic()
        w.wait_for_event("task_cancelled", lambda e: e["task_id"] == tid, timeout=30)
        took = time.monotonic() - t0
        assert w.wait(60) == 0, w.stderr_tail()
    finally:
        w.stop()
    assert took < 10, f"cancel took {took:.1f}s"
    row = store.get(tid)
    assert row["status"] == "Cancelled" and row["output_location"] is None
    files = [p for p in (tmp_path / "public").rglob("*") if p.is_file()] if (tmp_path / "public").exists() else []
    assert not [p for p in files if p.suffix in (".mp4", ".json")], files
    assert not w.events("task_completed")
    store.close()


# -- 6. output cache shared through the database -------------------------------------------------------
def test_output_cache_is_shared_through_the_database(db_url, tmp_path, inputs, tiny_models):
    store = TaskStore(db_url)
    p = gen("tiny-t2v", seed=21)
    first = store.add_task("generate", p)
    a = run_worker(db_url, tmp_path, inputs, "cacheA")
    one = finished(store, db_url, first)
    assert not one["result"]["cache_hit"] and [e["model"] for e in a.events("model_loaded")] == ["tiny-t2v"]
    cached_location = store.cache_get(one["sidecar"]["cache_key"])
    assert cached_location, "a fixed-seed result is recorded in the database's output cache"
    assert output_file(db_url, cached_location).read_bytes() == one["video"].read_bytes()

    # another worker process: the identical task is a cache hit, without loading any model
    second = store.add_task("generate", p)
    b = run_worker(db_url, tmp_path, inputs, "cacheB")
    two = finished(store, db_url, second)
    assert two["result"]["cache_hit"] and two["sidecar"]["cache_hit"] is True
    assert two["sidecar"]["cached_from"] == cached_location
    assert two["video"] != one["video"] and two["video"].read_bytes() == one["video"].read_bytes()
    assert [e["task_id"] for e in b.events("cache_hit")] == [second]
    assert not b.events("model_loaded"), "a cache hit loads no model"

    # a random seed is never cached (nor looked up); use_cache false opts out
    rnd = [store.add_task("generate", dict(p, seed=-1), priority=5) for _ in range(2)]
    opt_out = store.add_task("generate", dict(p, use_cache=False), priority=1)
    c = run_worker(db_url, tmp_path, inputs, "cacheC")
    assert not c.events("cache_hit")
    outs = [finished(store, db_url, t) for t in rnd]
    for out in outs:
        assert not out["result"]["cache_hit"] and 0 <= out["result"]["seed"] < 2 ** 31
        assert store.cache_get(out["sidecar"]["cache_key"]) is None
    assert outs[0]["result"]["seed"] != outs[1]["result"]["seed"]
    no = finished(store, db_url, opt_out)
    assert not no["result"]["cache_hit"] and no["sidecar"]["cache_key"] == one["sidecar"]["cache_key"]
    assert np.array_equal(frames_of(no["video"]), frames_of(one["video"]))  # regenerated, same pixels
    assert [e["model"] for e in c.events("model_loaded")] == ["tiny-t2v"]
    store.close()


# -- 7. bad input --------------------------------------------------------------------------------------
def test_bad_input_fails_clearly_and_the_worker_goes_on(sqlite_url, tmp_path, inputs, tiny_models):
    store = TaskStore(sqlite_url)
    bad = {
        "unknown model": (store.add_task("generate", gen("no-such-model"), priority=9), "unknown model"),
        "resolution": (store.add_task("generate", gen("tiny-t2v", resolution="64 by 64"), priority=8),
                       "'WIDTHxHEIGHT'"),
        "missing image": (store.add_task("generate", gen("tiny-i2v", image_start=str(inputs["root"] / "nope.png")),
                                         priority=7), "image_start not found"),
        "outside roots": (store.add_task("generate", gen("tiny-i2v", image_start="/etc/hostname"), priority=6),
                          "outside the allowed input folders"),
        "no image": (store.add_task("generate", gen("tiny-i2v"), priority=5), "give image_start"),
    }
    good = store.add_task("generate", gen("tiny-t2v"), priority=0)
    w = run_worker(sqlite_url, tmp_path, inputs, "bad")
    for what, (tid, needle) in bad.items():
        row = store.get(tid)
        assert row["status"] == "Failed", (what, row["status"])
        assert needle in row["error_message"], (what, row["error_message"])
        assert row["attempts"] == 1, f"{what}: invalid input is not retried"
    assert "no-such-model" in store.get(bad["unknown model"][0])["error_message"]
    assert "nope.png" in store.get(bad["missing image"][0])["error_message"]
    finished(store, sqlite_url, good)
    assert len(w.events("task_failed")) == len(bad) and not w.events("task_retry_scheduled")
    store.close()


# -- 8. a fatal fault ----------------------------------------------------------------------------------
def test_cuda_device_unavailable_is_fatal_and_a_healthy_worker_takes_over(sqlite_url, tmp_path, inputs,
                                                                          tiny_models):
    """HEADLESS_DEVICE=cuda in a process that sees no GPU (CUDA_VISIBLE_DEVICES empty) is a poisoned process,
    not a bad task: the task goes back to the queue (the attempt counts) and the worker exits 3."""
    store = TaskStore(sqlite_url)
    tid = store.add_task("generate", gen("tiny-t2v", seed=41), max_attempts=3)
    sick = start_worker(sqlite_url, tmp_path, inputs, "sick",
                        env={"HEADLESS_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": ""})
    try:
        code = sick.wait(120)
    finally:
        sick.stop()
    assert code == 3, sick.stderr_tail()
    fatal = sick.events("worker_fatal_error")
    assert len(fatal) == 1 and fatal[0]["task_id"] == tid and fatal[0]["handed_back"] is True
    assert "CUDA is not available" in fatal[0]["error"]
    row = store.get(tid)
    assert row["status"] == "Queued" and row["attempts"] == 1 and row["worker_id"] is None
    assert "fatal fault" in row["error_message"]
    assert not sick.events("task_failed") and not sick.events("task_completed")
    healthy = run_worker(sqlite_url, tmp_path, inputs, "healthy")
    out = finished(store, sqlite_url, tid)
    assert out["row"]["attempts"] == 2
    assert [e["task_id"] for e in healthy.events("task_completed")] == [tid]
    store.close()


# -- encoding: the same frames give the same file ------------------------------------------------------
def test_tiny_frames_encode_to_identical_bytes(tmp_path, tiny_models):
    """libx264's macroblock tree made 32x32 encodes of the same frames differ from run to run on a loaded
    machine (found by the LoRA test above: multiplier 0 'differed' from no LoRA only through the encoder).
    The frames are a tiny model's output, the content that showed it."""
    from source.generation.engine import get_engine
    from source.generation.model_catalog import load_catalog

    engine = get_engine()
    spec = load_catalog().resolve("tiny-t2v")
    engine.ensure(spec)
    out = engine.generate(dict(prompt=BASE["prompt"], height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=2,
                               guidance_scale=spec.guidance, max_sequence_length=spec.max_sequence_length),
                          seed=31, flow_shift=spec.flow_shift)
    blobs = set()
    for i in range(40):
        write_video(out, tmp_path / f"v{i}.mp4")
        blobs.add((tmp_path / f"v{i}.mp4").read_bytes())
        (tmp_path / f"v{i}.mp4").unlink()
    assert len(blobs) == 1
