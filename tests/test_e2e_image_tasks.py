"""Image and pose tasks end to end through real worker processes (headless.py) on SQLite and PostgreSQL:
generate_openpose, generate_depth, extract_frame, single_image and different_perspective_orchestrator
(+ dp_final_gen), queued with TaskStore.add_task, checked on the rows and on the files the worker wrote.
Tiny models and tiny sizes keep every worker run to seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from source.media.images import load_image_rgb, save_png
from source.media.video_io import probe_video, write_video
from source.store.task_store import TaskStore, parse_params
from source.task_context import child_task_id
from tests.worker_process import WorkerProcess

REPO = Path(__file__).resolve().parent.parent
ASTRONAUT = REPO / "samples/images/astronaut.png"  # a person, 224x224
COFFEE = REPO / "samples/images/coffee.png"        # no person, 256x171
CHELSEA = REPO / "samples/images/chelsea.png"      # a cat, 256x170


class E2E:
    """One database, one input folder, one output folder; runs workers until the queue is drained."""

    def __init__(self, db_url: str, root: Path) -> None:
        self.db_url = db_url
        self.root = root
        self.inputs = root / "inputs"
        self.inputs.mkdir(exist_ok=True)
        self.outputs = root / "outputs"
        self.store = TaskStore(db_url)
        self.workers: list[WorkerProcess] = []

    def add(self, task_type: str, params: dict, **kw) -> str:
        return self.store.add_task(task_type, params, **kw)

    def drain(self, name: str = "w1", timeout: float = 300.0) -> WorkerProcess:
        """Run one worker until nothing is left to do; it must exit cleanly."""
        w = WorkerProcess(self.db_url, self.root / "logs", "--exit-when-idle", "--poll-interval", "0.2",
                          "--input-root", str(self.inputs), "--output-dir", str(self.outputs), worker_id=name)
        self.workers.append(w)
        try:
            assert w.wait(timeout) == 0, w.stderr_tail()
        finally:
            w.stop()
        assert not w.events("task_error"), f"unexpected (retried) errors: {w.events('task_error')}"
        return w

    def row(self, task_id: str) -> dict:
        row = self.store.get(task_id)
        assert row is not None, f"task {task_id} is missing"
        row["result"] = parse_params(row["result"]) if row.get("result") is not None else None
        return row

    def complete(self, task_id: str) -> dict:
        row = self.row(task_id)
        assert row["status"] == "Complete", f"{row['task_type']} {task_id}: {row['status']}: {row['error_message']}"
        assert row["output_location"]
        return row

    def failed(self, task_id: str, *fragments: str) -> str:
        row = self.row(task_id)
        assert row["status"] == "Failed", f"{row['task_type']} {task_id} is {row['status']}, expected Failed"
        assert row["output_location"] is None
        leftovers = [f.name for f in self.files_dir().rglob(f"*{task_id}*")] if self.files_dir().is_dir() else []
        assert not leftovers, f"a failed task left files behind: {leftovers}"
        message = row["error_message"] or ""
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in the error of {row['task_type']}: {message!r}"
        return message

    def files_dir(self) -> Path:
        return self.root / "public" / "files" if self.db_url.startswith("sqlite") else self.outputs

    def path(self, location: str) -> Path:
        """The file behind an output_location: relative to <db dir>/public with SQLite, absolute in
        --output-dir with PostgreSQL."""
        if self.db_url.startswith("sqlite"):
            assert not Path(location).is_absolute() and location.startswith("files/"), location
            p = self.root / "public" / location
        else:
            p = Path(location)
            assert p.is_absolute() and p.is_relative_to(self.outputs.resolve()), location
        assert p.is_file(), f"{location} does not exist"
        return p

    def png(self, location: str) -> np.ndarray:
        p = self.path(location)
        assert p.suffix == ".png"
        with Image.open(p) as im:
            assert im.format == "PNG"
            return np.asarray(im.convert("RGB"))

    def claim_order(self) -> list[str]:
        return [e["task_id"] for w in self.workers for e in w.events("task_claimed")]

    def completed_before_claimed(self, parent: str, child: str) -> bool:
        events = [e for w in self.workers for e in w.events()]
        done = next(i for i, e in enumerate(events) if e.get("event") == "task_completed" and e["task_id"] == parent)
        claimed = next(i for i, e in enumerate(events) if e.get("event") == "task_claimed" and e["task_id"] == child)
        return done < claimed

    def assert_nothing_left(self) -> None:
        counts = self.store.count_by_status()
        assert not counts.get("Queued") and not counts.get("In Progress"), counts
        work = self.files_dir() / ".work"
        assert not work.is_dir() or not any(work.iterdir()), f"work dirs left: {list(work.iterdir())}"

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.store.close()


@pytest.fixture
def e2e(db_url, tmp_path):
    env = E2E(db_url, tmp_path)
    yield env
    env.close()


def astronaut_video(path: Path, n: int = 5) -> Path:
    """A short real video with a person: a pan across the (downscaled) astronaut photo."""
    img = load_image_rgb(ASTRONAUT, size=(256, 256))
    write_video([img[8:8 + 224, 4 * i:4 * i + 224] for i in range(n)], path, fps=8)
    return path


def is_skeleton(img: np.ndarray) -> bool:
    """An OpenPose render: mostly black, with saturated limb colours."""
    black = (img.sum(axis=2) == 0).mean()
    coloured = img.max(axis=2) > 150
    return 0.6 < black < 1.0 and coloured.sum() > 200 and len({tuple(p) for p in img[coloured][::7]}) > 3


# ------------------------------------------------------------------------------------- images
def test_pose_and_depth_of_images(e2e):
    pose = e2e.add("generate_openpose", {"input_image_path": str(ASTRONAUT)})
    nobody = e2e.add("generate_openpose", {"input_image_path": str(COFFEE)})
    nobody_ok = e2e.add("openpose", {"input_image_path": str(COFFEE), "allow_no_person": True})
    depth = e2e.add("generate_depth", {"input_image_path": str(CHELSEA), "depth_model": "tiny-depth"})
    e2e.drain()

    row = e2e.complete(pose)
    img = e2e.png(row["output_location"])
    assert img.shape == (224, 224, 3) and is_skeleton(img)
    res = row["result"]
    assert res["kind"] == "image" and res["frames"] == 1 and res["frames_with_person"] == 1
    assert (res["width"], res["height"]) == (224, 224)
    keypoints_file = e2e.path(res["keypoints_location"])
    assert keypoints_file == e2e.path(row["output_location"]).with_suffix(".json")
    keypoints = json.loads(keypoints_file.read_text())
    assert keypoints["format"] == "openpose-body-18" and len(keypoints["keypoint_names"]) == 18
    person = keypoints["frames"][0]["people"][0]["pose_keypoints_2d"]
    assert len(person) == 54 and person[2] > 0.5  # the nose, confidently
    assert 40 < person[0] < 180 and 0 < person[1] < 130  # where the astronaut's face is

    e2e.failed(nobody, "no person found in the image coffee.png", "allow_no_person")
    assert e2e.row(nobody)["attempts"] == 1  # a clear input error is not retried
    row = e2e.complete(nobody_ok)
    img = e2e.png(row["output_location"])
    assert img.shape == (171, 256, 3) and img.max() == 0
    assert row["result"]["frames_with_person"] == 0
    assert json.loads(e2e.path(row["result"]["keypoints_location"]).read_text())["frames"][0]["people"] == []

    row = e2e.complete(depth)
    img = e2e.png(row["output_location"])
    assert img.shape == (170, 256, 3) and img.std() > 0
    assert np.array_equal(img[..., 0], img[..., 2])  # greyscale written as RGB
    assert row["result"]["depth_model"] == "tiny-depth" and row["result"]["kind"] == "image"
    e2e.assert_nothing_left()


def test_pose_of_a_frame_extracted_by_an_earlier_task(e2e):
    """A three-task DAG through the queue: a video's frame -> its pose, and the pose of the whole video.
    The dependant is queued (and, with a higher priority, preferred) before its parent can run."""
    video = astronaut_video(e2e.inputs / "pan.mp4", n=5)
    frame = e2e.add("extract_frame", {"input_video_path": str(video), "frame_index": -1})
    pose = e2e.add("generate_openpose", {"input_image_task_id": frame}, depends_on=[frame], priority=5)
    video_pose = e2e.add("generate_openpose", {"input_task_id": frame}, depends_on=[frame, pose], priority=9)
    whole = e2e.add("generate_openpose", {"input_path": str(video)}, depends_on=[pose])
    e2e.drain()

    row = e2e.complete(frame)
    assert row["result"]["frame_index"] == 4 and row["result"]["frames"] == 5
    assert e2e.png(row["output_location"]).shape == (224, 224, 3)
    row = e2e.complete(pose)
    img = e2e.png(row["output_location"])
    assert img.shape == (224, 224, 3) and is_skeleton(img)
    assert row["result"]["frames_with_person"] == 1
    row = e2e.complete(video_pose)  # input_task_id of a PNG output is recognised as an image
    assert row["result"]["kind"] == "image"
    row = e2e.complete(whole)
    out = e2e.path(row["output_location"])
    assert out.suffix == ".mp4"
    info = probe_video(out)
    assert (info.frames, info.width, info.height) == (5, 224, 224)
    assert row["result"]["kind"] == "video" and row["result"]["frames_with_person"] >= 4
    assert len(json.loads(out.with_suffix(".json").read_text())["frames"]) == 5

    assert e2e.claim_order() == [frame, pose, video_pose, whole]
    assert e2e.completed_before_claimed(frame, pose) and e2e.completed_before_claimed(pose, video_pose)
    e2e.assert_nothing_left()


# ------------------------------------------------------------------------------------- generation
def test_extract_frame_from_a_generated_video_and_single_image(e2e, tiny_models):
    gen = e2e.add("generate", {"model": "tiny-t2v", "prompt": "a lighthouse", "resolution": "64x48",
                               "video_length": 9, "steps": 2, "seed": 3})
    last = e2e.add("extract_frame", {"input_video_task_id": gen, "frame_index": -1}, depends_on=[gen])
    second = e2e.add("extract_frame", {"input_video_task_id": gen, "frame_index": 1}, depends_on=[gen])
    too_far = e2e.add("extract_frame", {"input_video_task_id": gen, "frame_index": 9}, depends_on=[gen])
    too_far_back = e2e.add("extract_frame", {"input_video_task_id": gen, "frame_index": -10}, depends_on=[gen])
    depth_of_last = e2e.add("generate_depth", {"input_image_task_id": last, "depth_model": "tiny-depth"},
                            depends_on=[last])
    after_failure = e2e.add("generate_depth", {"input_image_task_id": too_far, "depth_model": "tiny-depth"},
                            depends_on=[too_far])
    image = e2e.add("single_image", {"model": "tiny-t2v", "prompt": "a red fox", "resolution": "48x32",
                                     "steps": 2, "seed": 9})
    e2e.drain()

    row = e2e.complete(gen)
    video = e2e.path(row["output_location"])
    info = probe_video(video)
    assert (info.frames, info.width, info.height) == (9, 64, 48)

    row = e2e.complete(last)
    assert row["result"]["frame_index"] == 8 and row["result"]["requested_index"] == -1
    assert row["result"]["frames"] == 9
    last_png = e2e.png(row["output_location"])
    assert last_png.shape == (48, 64, 3)
    row = e2e.complete(second)
    assert row["result"]["frame_index"] == 1
    assert e2e.png(row["output_location"]).shape == (48, 64, 3)
    assert not np.array_equal(e2e.png(row["output_location"]), last_png)

    e2e.failed(too_far, "frame_index 9 is out of range", "has 9 frames", "valid: -9..8")
    e2e.failed(too_far_back, "frame_index -10 is out of range", "has 9 frames")
    assert e2e.row(too_far)["attempts"] == 1
    e2e.failed(after_failure, f"not run: task {too_far} (extract_frame) that it depends on failed",
               "out of range")
    assert after_failure not in e2e.claim_order()  # never handed to a worker

    row = e2e.complete(depth_of_last)
    assert e2e.png(row["output_location"]).shape == (48, 64, 3)

    row = e2e.complete(image)
    img = e2e.png(row["output_location"])
    assert img.shape == (32, 48, 3) and img.std() > 0
    assert (row["result"]["width"], row["result"]["height"], row["result"]["seed"]) == (48, 32, 9)
    assert json.loads(e2e.path(row["output_location"]).with_suffix(".json").read_text())  # provenance

    order = e2e.claim_order()
    assert order.index(gen) < min(order.index(t) for t in (last, second, too_far, too_far_back))
    assert e2e.completed_before_claimed(last, depth_of_last)
    e2e.assert_nothing_left()


# ------------------------------------------------------------------------------------- different perspective
DP = {"prompt": "an astronaut, side view", "model_name": "tiny-vace", "t2i_model": "tiny-t2v",
      "resolution": "64x48", "output_video_frames": 5, "fps_helpers": 8, "steps": 2, "seed": 21,
      "depth_model": "tiny-depth"}


def test_different_perspective_depth_through_the_queue(e2e, tiny_models):
    orch = e2e.add("different_perspective_orchestrator",
                   {**DP, "input_image_path": str(ASTRONAUT), "perspective_type": "depth"})
    e2e.drain()

    row = e2e.complete(orch)
    children = {c["id"]: c for c in e2e.store.list_tasks(parent_task_id=orch)}
    ids = {k: child_task_id(orch, k) for k in ("input_depth", "t2i", "target_depth", "final")}
    assert set(children) == set(ids.values())
    assert {children[ids[k]]["task_type"] for k in ids} == {"generate_depth", "single_image", "dp_final_gen"}
    for tid in ids.values():
        e2e.complete(tid)
    final = e2e.row(ids["final"])
    assert row["output_location"] == final["output_location"]  # the orchestrator completes with the final PNG
    img = e2e.png(row["output_location"])
    assert img.shape == (48, 64, 3)
    assert row["result"]["width"] == 64 and row["result"]["height"] == 48 and row["result"]["seed"] == 22
    assert probe_video(e2e.path(row["result"]["video_location"])).frames == 5
    guide = probe_video(e2e.path(row["result"]["guide_location"]))
    assert (guide.frames, guide.width, guide.height) == (5, 64, 48)
    assert e2e.png(e2e.row(ids["t2i"])["output_location"]).shape == (48, 64, 3)
    assert e2e.png(e2e.row(ids["input_depth"])["output_location"]).shape == (224, 224, 3)
    assert e2e.png(e2e.row(ids["target_depth"])["output_location"]).shape == (48, 64, 3)

    order = e2e.claim_order()
    assert order[0] == orch and order[-1] == ids["final"] and len(order) == 5
    assert order.index(ids["t2i"]) < order.index(ids["target_depth"])
    e2e.assert_nothing_left()


def test_different_perspective_pose_with_a_target_photo_through_the_queue(e2e, tiny_models):
    """The whole pose DAG for real: input pose, target pose of a reference photo (a mirrored, cropped
    astronaut: a person in another posture), interpolated skeleton guide, VACE generation."""
    target = e2e.inputs / "target.png"
    Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(ASTRONAUT).convert("RGB"))[:, ::-1][8:, 12:])).save(target)
    orch = e2e.add("different_perspective_orchestrator",
                   {**DP, "input_image_path": str(ASTRONAUT), "perspective_type": "pose",
                    "target_image_path": str(target)})
    e2e.drain()
    row = e2e.complete(orch)
    ids = {k: child_task_id(orch, k) for k in ("input_pose", "target_pose", "final")}
    assert {c["id"] for c in e2e.store.list_tasks(parent_task_id=orch)} == set(ids.values())
    for tid in ids.values():
        e2e.complete(tid)
    assert row["output_location"] == e2e.row(ids["final"])["output_location"]
    assert e2e.png(row["output_location"]).shape == (48, 64, 3)
    guide = probe_video(e2e.path(row["result"]["guide_location"]))
    assert (guide.frames, guide.width, guide.height) == (5, 64, 48)
    e2e.assert_nothing_left()


def test_different_perspective_failures_name_the_step(e2e, tiny_models):
    missing = e2e.add("different_perspective_orchestrator",
                      {**DP, "input_image_path": str(e2e.inputs / "gone.png"), "perspective_type": "depth"})
    # Random-weight models draw no person: the target pose step fails, and with it the orchestrator.
    no_person = e2e.add("different_perspective", {**DP, "input_image_path": str(ASTRONAUT),
                                                  "perspective_type": "pose"})
    e2e.drain()

    e2e.failed(missing, "input image not found", "gone.png")
    assert e2e.store.list_tasks(parent_task_id=missing) == []

    target = child_task_id(no_person, "target_pose")
    message = e2e.failed(no_person, f"child task {target} (generate_openpose) failed", "no person found")
    e2e.failed(target, "no person found in the image")
    e2e.complete(child_task_id(no_person, "t2i"))
    # input_pose and t2i are both ready at first; the order between ready siblings is not fixed (on
    # PostgreSQL they share the spawn transaction's created_at), so input_pose either ran before the
    # failure or was cancelled with the orchestrator without ever being claimed.
    input_pose = e2e.row(child_task_id(no_person, "input_pose"))
    if input_pose["status"] != "Complete":
        assert input_pose["status"] == "Cancelled"
        assert f"its orchestrator {no_person} (different_perspective) failed" in input_pose["error_message"]
        assert input_pose["id"] not in e2e.claim_order()
    final = e2e.row(child_task_id(no_person, "final"))
    assert final["status"] in ("Failed", "Cancelled") and target in final["error_message"]
    assert child_task_id(no_person, "final") not in e2e.claim_order()
    assert "allow_no_person" in message
    e2e.assert_nothing_left()


# ------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_fail_clearly_and_the_worker_goes_on(e2e):
    fake = e2e.inputs / "fake.png"
    fake.write_bytes(b"this is not a picture" * 20)
    fake_video = e2e.inputs / "fake.mp4"
    fake_video.write_bytes(b"\x00garbage" * 100)
    tiny = save_png(np.zeros((4, 4, 3), np.uint8), e2e.inputs / "tiny.png")
    bad = {
        e2e.add("generate_openpose", {"input_image_path": str(e2e.inputs / "missing.png")}, priority=9):
            ["input image not found", "missing.png"],
        e2e.add("generate_depth", {"input_image_path": str(fake), "depth_model": "tiny-depth"}, priority=9):
            ["fake.png is not a readable image"],
        e2e.add("generate_openpose", {"input_image_path": str(tiny)}, priority=9):
            ["smaller than"],
        e2e.add("extract_frame", {"input_video_path": str(fake_video)}, priority=9):
            ["not a readable video"],
        e2e.add("extract_frame", {"input_video_path": "/etc/hostname"}, priority=9):
            ["outside the allowed input folders"],
        e2e.add("generate_openpose", {"input_image_task_id": "no-such-task"}, priority=9):
            ["task no-such-task has no output"],
        e2e.add("generate_depth", {"input_image_path": str(CHELSEA), "depth_model": "nope"}, priority=9):
            ["unknown depth_model"],
        e2e.add("extract_frame", {"frame_index": 0}, priority=9):
            ["no input"],
        e2e.add("single_image", {"model": "tiny-t2v", "resolution": "big"}, priority=9):
            ["resolution"],
    }
    good = e2e.add("generate_openpose", {"input_image_path": str(ASTRONAUT)})
    w = e2e.drain()

    for tid, fragments in bad.items():
        e2e.failed(tid, *fragments)
        assert e2e.row(tid)["attempts"] == 1
    assert not w.events("task_retry_scheduled")
    assert e2e.claim_order()[-1] == good and len(e2e.claim_order()) == len(bad) + 1
    assert {e["task_id"] for e in w.events("task_failed")} == set(bad)
    assert is_skeleton(e2e.png(e2e.complete(good)["output_location"]))
    e2e.assert_nothing_left()
