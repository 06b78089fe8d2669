"""Travel handlers: the orchestrator's children for both payload shapes, and segments + stitch end to end
on the tiny models, running the children by hand in DAG order with one shared Storage (the queue e2e
tests live with the worker's)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from source.handler_registry import run_handler
from source.media.stitch import count_frames
from source.media.video_io import probe_video, read_frames, write_video
from source.storage import Storage
from source.task_context import ChildTask, InvalidInput, TaskContext, child_task_id
from source.video_geometry import wan_frame_count as quantise_length

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
IMAGES = [f"samples/images/{n}.png" for n in ("astronaut", "chelsea", "coffee", "rocket")]


def load_payload(name: str) -> tuple[str, dict]:
    data = json.loads((SAMPLES / "payloads" / f"{name}.json").read_text())
    return data["task_type"], data["params"]


class Harness:
    """Contexts sharing one Storage; ctx.output_of is backed by a dict of finished outputs."""

    def __init__(self, root: Path) -> None:
        self.storage = Storage(root / "files", input_roots=[SAMPLES, root])
        self.outputs: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        self.events: list[tuple[str, dict]] = []
        self.cache: dict[str, str] = {}

    def ctx(self, task_id: str, task_type: str, attempt: int = 1) -> TaskContext:
        return TaskContext(task_id=task_id, task_type=task_type, attempt=attempt, worker_id="test",
                           storage=self.storage, task_output=self.outputs.get,
                           log=lambda event, **f: self.events.append((event, f)),
                           cache_get=self.cache.get, cache_put=self.cache.__setitem__)

    def orchestrate(self, task_type: str, params: dict, task_id: str = "orch-1") -> list[ChildTask]:
        result = run_handler(task_type, params, self.ctx(task_id, task_type))
        assert result.children and result.output_location is None
        return result.children

    def run_children(self, parent_id: str, children: list[ChildTask], order: list[str] | None = None) -> dict:
        ids = {c.key: child_task_id(parent_id, c.key) for c in children}
        by_key = {c.key: c for c in children}
        for key in order or [c.key for c in children]:
            child = by_key[key]
            for dep in child.depends_on:
                assert ids[dep] in self.outputs, f"{key} ran before its dependency {dep}"
            params = json.loads(json.dumps(child.params))  # as stored in the database
            res = run_handler(child.task_type, params, self.ctx(ids[key], child.task_type))
            self.outputs[ids[key]] = res.output_location
            self.results[ids[key]] = res.result
        return ids

    def path(self, location: str) -> Path:
        return self.storage.resolve_input(location)


@pytest.fixture
def harness(tmp_path) -> Harness:
    return Harness(tmp_path)


# ----------------------------------------------------------------------------------------- orchestrator
def test_seed_payload_children_chained(harness):
    task_type, params = load_payload("travel_seed_format")
    children = harness.orchestrate(task_type, params, "orch-seed")
    assert [c.key for c in children] == ["seg-000", "seg-001", "stitch"]
    assert [c.task_type for c in children] == ["travel_segment", "travel_segment", "travel_stitch"]
    seg0, seg1, stitch = children
    assert seg0.depends_on == [] and seg1.depends_on == ["seg-000"]
    assert stitch.depends_on == ["seg-000", "seg-001"] and stitch.completes_parent
    assert not seg0.completes_parent and not seg1.completes_parent
    assert seg1.params["predecessor_task_id"] == child_task_id("orch-seed", "seg-000")
    assert seg0.params["predecessor_task_id"] is None
    assert (seg0.params["frames"], seg1.params["frames"]) == (9, 13)
    assert (seg0.params["overlap_prev"], seg1.params["overlap_prev"]) == (0, 2)
    assert (seg0.params["seed"], seg1.params["seed"]) == (12345, 12346)
    assert seg0.params["start_image"] == IMAGES[0] and seg0.params["end_image"] == IMAGES[1]
    assert seg1.params["prompt"] == "a cat turns into a cup of coffee"
    assert seg0.params["model"] == "tiny-vace" and seg0.params["mode"] == "chained"
    assert seg0.params["generation"]["num_inference_steps"] == 2
    assert "full_orchestrator_payload" not in seg0.params and "orchestrator_details" not in seg0.params
    assert stitch.params["segment_task_ids"] == [child_task_id("orch-seed", k) for k in ("seg-000", "seg-001")]
    assert stitch.params["overlaps"] == [2] and stitch.params["expected_frames"] == 20
    assert stitch.params["sharpen"] == 0.3
    # re-running the orchestrator plans the very same children (ids are derived from the keys)
    again = harness.orchestrate(task_type, params, "orch-seed")
    assert [(c.key, c.params) for c in again] == [(c.key, c.params) for c in children]


def test_canonical_and_independent_children(harness):
    _, canon = load_payload("travel_canonical")
    children = harness.orchestrate("travel_between_images", canon)
    assert [c.depends_on for c in children] == [[], ["seg-000"], ["seg-000", "seg-001"]]

    _, indep = load_payload("travel_independent")
    children = harness.orchestrate("travel_between_images", indep, "orch-ind")
    segs, stitch = children[:-1], children[-1]
    assert len(segs) == 3 and all(c.depends_on == [] for c in segs)  # parallel
    assert all(c.params["predecessor_task_id"] is None and c.params["mode"] == "independent" for c in segs)
    assert [(c.params["start_image"], c.params["end_image"]) for c in segs] == list(zip(IMAGES[:3], IMAGES[1:]))
    assert stitch.depends_on == ["seg-000", "seg-001", "seg-002"] and stitch.completes_parent
    assert stitch.params["overlaps"] == [1, 1] and stitch.params["expected_frames"] == 27 - 2
    assert [c.params["seed"] for c in segs] == [7, 8, 9]


def test_orchestrator_checks_images_are_readable(harness, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    _, params = load_payload("travel_canonical")
    params = dict(params, images=[IMAGES[0], str(bad), "samples/images/missing.png"])
    with pytest.raises(InvalidInput) as err:
        harness.orchestrate("travel_between_images", params)
    text = str(err.value)
    assert "image 1" in text and "broken.png is not a readable image" in text
    assert "image 2" in text and "not found" in text
    with pytest.raises(InvalidInput, match="outside the allowed input folders"):
        harness.orchestrate("travel_between_images", dict(params, images=[IMAGES[0], IMAGES[1], "/etc/passwd"]))


def test_orchestrator_continue_uses_real_video_length(harness, tmp_path):
    video = tmp_path / "old.mp4"
    write_video([np.full((64, 64, 3), 10 * i, np.uint8) for i in range(11)], video, fps=16)
    _, params = load_payload("travel_canonical")
    params = dict(params, images=IMAGES[:2], continue_from_video=str(video), overlap=[4, 2])
    children = harness.orchestrate("travel_between_images", params)
    seg0, seg1, stitch = children
    assert seg0.params["continue_from_video"] == str(video) and seg0.params["start_image"] is None
    assert seg0.params["overlap_prev"] == 4 and seg1.params["overlap_prev"] == 2
    assert seg1.params["continue_from_video"] is None and seg1.params["start_image"] == IMAGES[0]
    assert stitch.params["lengths"] == [11, 9, 13] and stitch.params["overlaps"] == [4, 2]
    assert stitch.params["expected_frames"] == 11 + 22 - 6


# ----------------------------------------------------------------------------------------- end to end
def _assert_final(harness: Harness, ids: dict, expected: int, size=(64, 64)) -> Path:
    final = harness.path(harness.outputs[ids["stitch"]])
    info = probe_video(final)
    assert info.frames == expected == harness.results[ids["stitch"]]["frames"]
    assert harness.results[ids["stitch"]]["encoder"] in ("libx264", "h264_nvenc")  # the choice is recorded
    assert (info.width, info.height) == size
    return final


def test_chained_vace_end_to_end(harness, tiny_models):
    task_type, params = load_payload("travel_seed_format")
    children = harness.orchestrate(task_type, params, "orch-e2e")
    ids = harness.run_children("orch-e2e", children)
    for key, frames in (("seg-000", 9), ("seg-001", 13)):
        out = harness.path(harness.outputs[ids[key]])
        assert out.name.startswith(f"segment{int(key[-3:]):03d}-") and count_frames(out) == frames
        assert harness.results[ids[key]]["frames"] == frames
    _assert_final(harness, ids, 9 + 13 - 2)
    assert harness.results[ids["stitch"]]["keep_intermediates"] is False


def test_chained_guide_carries_previous_frames(harness, tiny_models):
    """Segment 1's guide starts with segment 0's last frames (checked on the kept guide in its work dir)."""
    _, params = load_payload("travel_canonical")
    params = dict(params, keep_intermediates=True, colour_match=False, frames=[9, 9], overlap=4)
    children = harness.orchestrate("travel_between_images", params, "orch-guide")
    ids = harness.run_children("orch-guide", children)
    seg0 = read_frames(harness.path(harness.outputs[ids["seg-000"]]))
    guide = read_frames(harness.storage.work_dir(ids["seg-001"]) / "guide.mp4")
    for k in range(4):
        assert np.abs(guide[k].astype(int) - seg0[5 + k].astype(int)).mean() < 8
    assert np.abs(guide[4].astype(int) - 128).mean() < 3
    _assert_final(harness, ids, 9 + 9 - 4)
    assert harness.results[ids["stitch"]]["keep_intermediates"] is True


def test_independent_flf2v_end_to_end_in_any_order(harness, tiny_models):
    _, params = load_payload("travel_independent")
    children = harness.orchestrate("travel_between_images", params, "orch-ind")
    # no dependencies between segments: run them last-first
    ids = harness.run_children("orch-ind", children, order=["seg-002", "seg-000", "seg-001", "stitch"])
    _assert_final(harness, ids, 3 * 9 - 2)


def test_continue_video_end_to_end_with_fps_multiplier(harness, tiny_models, tmp_path):
    video = tmp_path / "old.mp4"
    write_video([np.full((48, 80, 3), 20 * i, np.uint8) for i in range(10)], video, fps=16)
    _, params = load_payload("travel_canonical")
    params = dict(params, images=IMAGES[1:3], continue_from_video=str(video), overlap=[2, 2], fps_multiplier=2)
    children = harness.orchestrate("travel_between_images", params, "orch-cont")
    ids = harness.run_children("orch-cont", children)
    n = 10 + 9 + 13 - 4
    _assert_final(harness, ids, (n - 1) * 2 + 1)


def test_regenerated_segment_gets_a_new_file(harness, tiny_models):
    _, params = load_payload("travel_independent")
    params = dict(params, images=IMAGES[:2])
    children = harness.orchestrate("travel_between_images", params, "orch-regen")
    ids = harness.run_children("orch-regen", children)
    first = harness.outputs[ids["seg-000"]]
    # the lead's regenerate: same task id, patched params, then the stitch again
    patched = [copy.deepcopy(children[0]), children[1]]
    patched[0].params.update(prompt="something else", seed=99)
    harness.run_children("orch-regen", patched)
    second = harness.outputs[ids["seg-000"]]
    assert second != first and harness.path(first).is_file() and harness.path(second).is_file()
    assert harness.results[ids["seg-000"]]["seed"] == 99
    assert harness.outputs[ids["stitch"]]  # re-stitched from the new segment
    _assert_final(harness, ids, 9)


def test_segment_frame_count_mismatch_is_refused(harness, tiny_models, monkeypatch):
    import source.generation.bridge as bridge

    real = bridge.generate_single_video

    def short(ctx, params, output_path=None):
        params = dict(params, video_length=5)
        return real(ctx, params, output_path=output_path)

    monkeypatch.setattr(bridge, "generate_single_video", short)
    _, params = load_payload("travel_independent")
    children = harness.orchestrate("travel_between_images", dict(params, images=IMAGES[:2]), "orch-bad")
    from source.handlers.travel import FrameCountMismatch

    with pytest.raises(FrameCountMismatch, match="has 5 frames but the plan needs 9"):
        harness.run_children("orch-bad", children[:1])


def test_stitch_refuses_a_stale_segment(harness, tmp_path):
    """A segment output whose frame count differs from the plan is an error, not a silent misalignment."""
    stale = harness.storage.files_dir / "stale.mp4"
    write_video([np.zeros((64, 64, 3), np.uint8)] * 7, stale, fps=16)
    harness.outputs["s0"] = harness.storage.location_for(stale)
    params = {"segment_task_ids": ["s0"], "lengths": [9], "overlaps": [], "resolution": "64x64",
              "expected_frames": 9}
    with pytest.raises(Exception, match="has 7 frames but the plan needs 9"):
        run_handler("travel_stitch", params, harness.ctx("st", "travel_stitch"))


def test_quantise_consistency_with_bridge():
    from source.generation.bridge import GenerationParams
    from source.generation.model_catalog import load_catalog
    from source.generation.request import resolve_request

    for n in (5, 9, 13, 17, 81):
        request = resolve_request(GenerationParams(model="tiny-vace", video_length=quantise_length(n)), load_catalog())
        assert request.frames == quantise_length(n) and not request.adjustments


def test_unknown_model_fails_the_orchestrator(harness):
    _, params = load_payload("travel_canonical")
    with pytest.raises(InvalidInput, match="unknown model 'my-vace-typo'"):
        harness.orchestrate("travel_between_images", dict(params, model="my-vace-typo"))


def test_seed_era_child_rows_get_a_clear_message():
    from source.handler_registry import validate_params

    for task_type in ("travel_segment", "travel_stitch"):
        with pytest.raises(InvalidInput, match="seed-era .* submit its travel_orchestrator again"):
            validate_params(task_type, {"segment_index": 0, "full_orchestrator_payload": {}})


def test_independent_continue_and_upscale_end_to_end(harness, tiny_models, tmp_path):
    video = tmp_path / "old.mp4"
    write_video([np.full((64, 64, 3), 20 * i, np.uint8) for i in range(7)], video, fps=16)
    _, params = load_payload("travel_independent")
    params = dict(params, images=IMAGES[:2], continue_from_video=str(video), overlap=1, upscale_to="96x96")
    children = harness.orchestrate("travel_between_images", params, "orch-ic")
    assert children[0].params["start_image"] is None and children[1].params["start_image"] == IMAGES[0]
    ids = harness.run_children("orch-ic", children, order=["seg-001", "seg-000", "stitch"])
    assert (harness.storage.work_dir(ids["seg-000"]) / "start_from_video.png").is_file()
    _assert_final(harness, ids, 7 + 9 + 9 - 2, size=(96, 96))


def test_free_last_segment_end_to_end_chained_and_independent(harness, tiny_models):
    """One image fewer than segments + 1: the last segment has no end image (the seed's test generator sent
    3 images for 3 segments). Chained: its guide ends in generated frames; independent: a start image only.
    The frame arithmetic stays exact."""
    task_type, params = load_payload("travel_seed_format")
    d = params["orchestrator_details"]
    d.update(num_new_segments_to_generate=3, base_prompts_expanded=["a", "b", "c"],
             negative_prompts_expanded=["", "", ""], segment_frames_expanded=[9, 9, 9],
             frame_overlap_expanded=[2, 2, 2])
    children = harness.orchestrate(task_type, params, "orch-free")
    assert [c.params["end_image"] for c in children[:3]] == [IMAGES[1], IMAGES[2], None]
    ids = harness.run_children("orch-free", children)
    final = harness.path(harness.outputs[ids["stitch"]])
    assert count_frames(final) == 27 - 4 == harness.results[ids["stitch"]]["frames"]

    _, indep = load_payload("travel_independent")
    indep.update(images=indep["images"][:2], num_segments=2, frames=9)
    with pytest.raises(InvalidInput, match="segment 1 has no end image, but 'tiny-flf2v' is a first-last-frame"):
        harness.orchestrate("travel_between_images", indep, "orch-free-flf")
    indep.update(model="tiny-i2v22")  # Wan 2.2 I2V: start + end, or a start image alone
    children = harness.orchestrate("travel_between_images", indep, "orch-free-ind")
    assert [(c.params["start_image"], c.params["end_image"]) for c in children[:2]] == [
        (IMAGES[0], IMAGES[1]), (IMAGES[1], None)]
    ids = harness.run_children("orch-free-ind", children, order=["seg-001", "seg-000", "stitch"])
    assert count_frames(harness.path(harness.outputs[ids["stitch"]])) == 18 - 1
