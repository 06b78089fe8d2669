"""different_perspective_orchestrator: its children (types, deterministic ids, dependencies), then each child
run by hand in dependency order on one Storage, for both perspective types, down to the final PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from source.media.images import save_png
from source.media.video_io import probe_video, read_frames
from source.task_context import InvalidInput, child_task_id
from tests.test_pose_handler import Ctx


@pytest.fixture
def env(tmp_path) -> Ctx:
    return Ctx(tmp_path)


@pytest.fixture
def person(tmp_path):
    return save_png(skimage.data.astronaut(), tmp_path / "astronaut.png")


def test_frames_and_resolution_follow_video_geometry(env, person):
    """The one rule of every handler: 4*floor(n/4)+1 frames (dp used to round up: 18 -> 21), resolution to the
    nearest multiples of 16; both recorded."""
    base = {"input_image_path": str(person), "model_name": "tiny-vace", "t2i_model": "tiny-t2v"}
    for asked, used in ((5, 5), (16, 17), (18, 17), (81, 81)):
        res, _ = env.run("different_perspective_orchestrator", {**base, "output_video_frames": asked})
        assert res.result["video_frames"] == used
        assert res.result["adjustments"].get("output_video_frames", [asked, used]) == [asked, used]
    res, _ = env.run("different_perspective_orchestrator", {**base, "resolution": "830x480"})
    assert res.result["resolution"] == "832x480"
    final = next(c for c in res.children if c.key == "final")
    assert final.params["adjustments"] == {"resolution": ["830x480", "832x480"], "output_video_frames": [16, 17]}


@pytest.mark.parametrize("kind, guide", [("pose", "generate_openpose"), ("depth", "generate_depth")])
def test_children(env, person, kind, guide):
    params = {"input_image_path": str(person), "prompt": "an astronaut waving", "perspective_type": kind,
              "model_name": "tiny-vace", "t2i_model": "tiny-t2v", "resolution": "64x64", "seed": 5,
              "depth_model": "tiny-depth"}
    res, ctx = env.run("different_perspective_orchestrator", params, task_id="orch-1")
    assert res.output_location is None
    kids = {c.key: c for c in res.children}
    assert list(kids) == [f"input_{kind}", "t2i", f"target_{kind}", "final"]
    assert [c.task_type for c in res.children] == [guide, "single_image", guide, "dp_final_gen"]
    assert kids[f"input_{kind}"].params["input_image_path"] == str(person)
    assert kids[f"input_{kind}"].depends_on == [] and kids["t2i"].depends_on == []
    assert kids["t2i"].params["model"] == "tiny-t2v" and kids["t2i"].params["resolution"] == "64x64"
    assert kids["t2i"].params["seed"] == 5
    assert kids[f"target_{kind}"].depends_on == ["t2i"]
    assert kids[f"target_{kind}"].params["input_image_task_id"] == child_task_id("orch-1", "t2i")
    final = kids["final"]
    assert final.depends_on == [f"input_{kind}", f"target_{kind}"] and final.completes_parent
    assert final.params["input_guide_task_id"] == child_task_id("orch-1", f"input_{kind}")
    assert final.params["target_guide_task_id"] == child_task_id("orch-1", f"target_{kind}")
    assert final.params["seed"] == 6 and final.params["video_frames"] == 17  # default 16 -> 4n+1
    assert final.params["model_name"] == "tiny-vace"
    if kind == "depth":
        assert kids[f"input_{kind}"].params["depth_model"] == "tiny-depth"
    # Deterministic: the same orchestrator id gives the same ids; the alias type gives the same children.
    again, _ = env.run("different_perspective", params, task_id="orch-1")
    assert res.result["children"] == again.result["children"]
    assert res.result["children"]["final"] == child_task_id("orch-1", "final")
    other, _ = env.run("different_perspective", params, task_id="orch-2")
    assert set(other.result["children"].values()).isdisjoint(res.result["children"].values())


def test_orchestrator_rejects_bad_input(env, tmp_path, person):
    with pytest.raises(InvalidInput, match="input_image_path"):
        env.run("different_perspective_orchestrator", {"prompt": "x"})
    with pytest.raises(InvalidInput, match="not found"):
        env.run("different_perspective_orchestrator", {"input_image_path": str(tmp_path / "none.png")})
    with pytest.raises(InvalidInput, match="perspective_type"):
        env.run("different_perspective_orchestrator", {"input_image_path": str(person), "perspective_type": "side"})
    with pytest.raises(InvalidInput, match="unknown depth_model"):
        env.run("different_perspective_orchestrator", {"input_image_path": str(person),
                                                       "perspective_type": "depth", "depth_model": "nope"})
    with pytest.raises(InvalidInput, match="model_name: unknown model 'nope'|model_name.*nope"):
        env.run("different_perspective_orchestrator", {"input_image_path": str(person), "model_name": "nope"})
    with pytest.raises(InvalidInput, match="model_name 'tiny-t2v' is a t2v model"):
        env.run("different_perspective_orchestrator", {"input_image_path": str(person), "model_name": "tiny-t2v"})
    with pytest.raises(InvalidInput, match="t2i_model"):
        env.run("different_perspective_orchestrator", {"input_image_path": str(person), "t2i_model": "nope"})
    with pytest.raises(InvalidInput, match="output_video_frames"):
        env.run("different_perspective_orchestrator", {"input_image_path": str(person), "output_video_frames": 3})
    res, _ = env.run("different_perspective_orchestrator", {"input_image_path": str(person)})
    assert res.result["resolution"] == "624x624"  # the input's aspect at about 832x480 pixels


def run_children(env: Ctx, res, *, replace_t2i_output=None) -> dict:
    """Run the children in order as the queue would: each child's task id is its deterministic id and
    ctx.output_of sees earlier children's outputs. Returns key -> HandlerResult."""
    ids = res.result["children"]
    done = {}
    for child in res.children:
        assert all(dep in done for dep in child.depends_on)
        out, _ = env.run(child.task_type, child.params, task_id=ids[child.key])
        done[child.key] = out
        if child.key == "t2i" and replace_t2i_output is not None:
            # Random-weight models draw no people: stand in a photo with a person for the generated image.
            env.outputs[ids["t2i"]] = str(replace_t2i_output)
    return done


@pytest.mark.parametrize("kind", ["pose", "depth"])
def test_children_run_in_order_to_final_png(env, tmp_path, person, tiny_models, kind):
    params = {"input_image_path": str(person), "prompt": "an astronaut, side view", "perspective_type": kind,
              "model_name": "tiny-vace", "t2i_model": "tiny-t2v", "resolution": "80x64", "seed": 11,
              "output_video_frames": 8, "fps_helpers": 8, "depth_model": "tiny-depth", "steps": 2}
    orch, _ = env.run("different_perspective_orchestrator", params, task_id=f"dp-{kind}")
    target = None
    if kind == "pose":
        target = save_png(np.ascontiguousarray(skimage.data.astronaut()[:, ::-1][40:, 30:]), tmp_path / "target.png")
    done = run_children(env, orch, replace_t2i_output=target)
    t2i = np.asarray(Image.open(env.path(done["t2i"].output_location)))
    assert t2i.shape == (64, 80, 3)
    final = done["final"]
    png = env.path(final.output_location)
    assert png.suffix == ".png" and np.asarray(Image.open(png)).shape == (64, 80, 3)
    assert final.result["width"] == 80 and final.result["height"] == 64 and final.result["seed"] == 12
    video = env.path(final.result["video_location"])
    assert probe_video(video).frames == 9
    guide = read_frames(env.path(final.result["guide_location"]))
    assert len(guide) == 9 and guide[0].shape == (64, 80, 3)
    # Frame 0 of the guide is the input image (kept by the mask), the rest are pose/depth frames.
    assert guide[0].std() > 20
    if kind == "pose":
        assert np.mean(guide[-1].sum(axis=2) < 30) > 0.6  # skeleton on black
        a = json.loads(env.path(done["input_pose"].output_location).with_suffix(".json").read_text())
        b = json.loads(env.path(done["target_pose"].output_location).with_suffix(".json").read_text())
        assert a["frames"][0]["people"] and b["frames"][0]["people"]
    else:
        assert all(np.abs(f[:, :, 0].astype(int) - f[:, :, 2]).mean() < 8 for f in guide[1:])  # greyscale depth


def test_pose_without_person_in_generated_image_fails_clearly(env, person, tiny_models):
    params = {"input_image_path": str(person), "prompt": "noise", "perspective_type": "pose",
              "model_name": "tiny-vace", "t2i_model": "tiny-t2v", "resolution": "64x64", "seed": 1,
              "output_video_frames": 5, "steps": 2}
    orch, _ = env.run("different_perspective_orchestrator", params, task_id="dp-noperson")
    with pytest.raises(InvalidInput, match="no person found"):
        run_children(env, orch)
