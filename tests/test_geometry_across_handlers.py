"""One resolution parser and one frame-count rule for every handler (source.video_geometry): "830x480" and
16 frames become 832x480 and 17 frames in `generate`, a travel (both payload shapes) and a different-
perspective task, and each records the same [asked, used] pairs where its output keeps them (generate: the
result and the sidecar; the orchestrators: the params of the child that completes them, whose result becomes
theirs -- the e2e tests in test_e2e_seed_users.py check that hand-over on real workers)."""

from __future__ import annotations

import json
import shutil

from source.handler_registry import run_handler
from tests.test_pose_handler import Ctx
from tests.worker_process import REPO

RES = ["830x480", "832x480"]
FRAMES = [16, 17]


def test_830x480_and_16_frames_are_adjusted_alike_everywhere(tmp_path, tiny_models):
    images = tmp_path / "inputs"
    shutil.copytree(REPO / "samples" / "images", images)
    env = Ctx(tmp_path)

    # generate: through the generation bridge, recorded in its result and its sidecar
    res, _ = env.run("generate", {"model": "tiny-t2v", "prompt": "x", "resolution": "830x480", "frames": 16,
                                  "steps": 1, "seed": 1})
    r = res.result
    assert (r["width"], r["height"], r["frames"]) == (832, 480, 17)
    assert r["adjustments"]["resolution"] == RES and r["adjustments"]["video_length"] == FRAMES
    sidecar = json.loads(env.path(r["sidecar"]).read_text())
    assert sidecar["adjustments"]["resolution"] == RES and sidecar["adjustments"]["video_length"] == FRAMES

    # travel, the seed's payload (travel used to floor: 830 -> 816)
    a, b = str(images / "astronaut.png"), str(images / "chelsea.png")
    seed = {"orchestrator_details": {
        "input_image_paths_resolved": [a, b], "num_new_segments_to_generate": 1, "base_prompts_expanded": ["p"],
        "segment_frames_expanded": [16], "frame_overlap_expanded": [], "parsed_resolution_wh": "830x480",
        "model_name": "tiny-vace"}}
    for task_type, params, keys in (
            ("travel_orchestrator", seed, ("parsed_resolution_wh", "segment_frames_expanded[0]")),
            ("travel_between_images", {"images": [a, b], "resolution": "830x480", "frames": 16,
                                       "model": "tiny-vace"}, ("resolution", "frames[0]"))):
        res = run_handler(task_type, params, env(task_type))
        segment, stitch = res.children
        assert (segment.params["resolution"], segment.params["frames"]) == ("832x480", 17)
        assert stitch.params["adjustments"] == {keys[0]: RES, keys[1]: FRAMES}
        assert res.result["adjustments"] == stitch.params["adjustments"]

    # different perspective (it used to round frames up: 18 -> 21; 16 -> 17 either way)
    res, _ = env.run("different_perspective_orchestrator", {
        "input_image_path": a, "model_name": "tiny-vace", "t2i_model": "tiny-t2v", "resolution": "830x480",
        "output_video_frames": 16})
    final = next(c for c in res.children if c.key == "final")
    assert (final.params["resolution"], final.params["video_frames"]) == ("832x480", 17)
    assert final.params["adjustments"] == {"resolution": RES, "output_video_frames": FRAMES}
    t2i = next(c for c in res.children if c.key == "t2i")
    assert t2i.params["resolution"] == "832x480"
