"""Travel planning: frame arithmetic (property-based), both payload shapes, and a clear message per mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from source.task_context import InvalidInput
from source.travel_plan import (
    SeedTravelParams,
    TravelParams,
    clamp_overlaps,
    final_length,
    parse_resolution,
    plan_travel,
)
from source.video_geometry import wan_frame_count as quantise_length

REPO = Path(__file__).resolve().parent.parent
IMAGES = [f"samples/images/{n}.png" for n in ("astronaut", "chelsea", "coffee", "rocket")]


def seed_payload(**over) -> dict:
    d = {
        "input_image_paths_resolved": IMAGES[:3], "num_new_segments_to_generate": 2,
        "base_prompts_expanded": ["a", "b"], "negative_prompts_expanded": ["", ""],
        "segment_frames_expanded": [81, 81], "frame_overlap_expanded": [12, 12],
        "parsed_resolution_wh": "500x500", "model_name": "vace_14B",
        "fade_in_params_json_str": "{}", "some_future_key": {"x": 1},
    }
    d.update(over)
    return {"orchestrator_details": d}


def canonical(**over) -> dict:
    d = {"images": IMAGES[:3], "prompt": "p", "frames": 17, "overlap": 4, "resolution": "64x64",
         "model": "tiny-vace"}
    d.update(over)
    return d


def problems_of(payload: dict, **kw) -> str:
    with pytest.raises(InvalidInput) as err:
        plan_travel(payload, **kw)
    return str(err.value)


# ----------------------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("raw,expected", [(80, 81), (81, 81), (83, 81), (84, 85), (5, 5), (8, 9), (9, 9)])
def test_quantise_length_matches_seed(raw, expected):
    assert quantise_length(raw) == expected


@given(st.integers(min_value=1, max_value=1025))
def test_quantised_length_is_4n_plus_1_and_close(raw):
    q = quantise_length(raw)
    assert q % 4 == 1
    assert raw - 3 <= q <= raw + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=8).flatmap(
    lambda ls: st.tuples(st.just(ls), st.lists(st.integers(-20, 300), min_size=len(ls) - 1, max_size=len(ls) - 1))),
    st.booleans())
def test_clamped_overlaps_are_valid(lengths_overlaps, even):
    lengths, overlaps = lengths_overlaps
    out = clamp_overlaps(lengths, overlaps, even=even)
    assert len(out) == len(lengths) - 1
    for j, o in enumerate(out):
        assert 0 <= o <= min(lengths[j], lengths[j + 1])
        assert o <= max(0, overlaps[j])  # never grows
        if even:
            assert o % 2 == 0
    for k in range(1, len(lengths) - 1):  # cross-fades of one segment never overlap each other
        assert out[k - 1] + out[k] <= lengths[k]
    assert final_length(lengths, out) == sum(lengths) - sum(out) >= max(lengths)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(5, 120), min_size=1, max_size=6), st.integers(0, 40))
def test_seed_plan_final_length(frames, overlap):
    n = len(frames)
    plan = plan_travel(seed_payload(input_image_paths_resolved=(IMAGES * 3)[: n + 1],
                                    num_new_segments_to_generate=n, base_prompts_expanded=["x"] * n,
                                    negative_prompts_expanded=["y"] * n, segment_frames_expanded=frames,
                                    frame_overlap_expanded=[overlap] * n))  # the seed's clients sent N values
    lengths = [quantise_length(f) for f in frames]
    assert plan.lengths == lengths and all(L % 4 == 1 for L in plan.lengths)
    assert len(plan.overlaps) == n - 1
    assert all(o % 2 == 0 for o in plan.overlaps)
    assert plan.expected_final_frames == sum(lengths) - sum(plan.overlaps)
    for seg in plan.segments:
        assert seg.overlap_prev + seg.overlap_next <= seg.frames
    assert plan.segments[0].overlap_prev == 0 and plan.segments[-1].overlap_next == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.lists(st.integers(5, 60), min_size=1, max_size=4), st.integers(0, 12))
def test_continue_from_video_one_overlap_per_join(video_frames, frames, overlap):
    n = len(frames)
    plan = plan_travel(seed_payload(input_image_paths_resolved=(IMAGES * 2)[:n], num_new_segments_to_generate=n,
                                    base_prompts_expanded=["x"] * n, negative_prompts_expanded=["y"] * n,
                                    segment_frames_expanded=frames, frame_overlap_expanded=[overlap],
                                    continue_from_video_resolved_path="old.mp4"),
                       continue_frames=video_frames)
    assert plan.lengths[0] == video_frames and len(plan.lengths) == n + 1
    assert len(plan.overlaps) == n  # the seed kept N-1 here (bug E.17)
    assert plan.expected_final_frames == video_frames + sum(plan.lengths[1:]) - sum(plan.overlaps)
    assert plan.segments[0].overlap_prev == plan.overlaps[0]
    assert plan.segments[0].start_image is None and plan.segments[0].end_image == plan.images[0]
    if n > 1:
        assert plan.segments[1].overlap_prev == plan.overlaps[1]
        assert plan.segments[1].start_image == plan.images[0]


def test_fps_multiplier_output_frames():
    plan = plan_travel(canonical(frames=[9, 13], overlap=2, fps_multiplier=2))
    assert plan.expected_final_frames == 20 and plan.expected_output_frames == 39


# ----------------------------------------------------------------------------------------- payload shapes
def test_seed_payload_normalised():
    plan = plan_travel(seed_payload(seed_base=100, use_causvid_lora=True, colour_match_videos=False,
                                    crossfade_sharp_amt=0.5, debug_mode_enabled=True, run_id="run1",
                                    additional_loras={"loras/x.safetensors": 0.7}, upscale_factor=2.0))
    assert plan.source_format == "seed" and plan.mode == "chained" and plan.model == "vace_14B"
    assert plan.resolution == (496, 496)  # nearest multiples of 16
    assert plan.adjustments["parsed_resolution_wh"] == ["500x500", "496x496"]
    assert plan.lengths == [81, 81] and plan.overlaps == [12] and plan.expected_final_frames == 150
    assert [s.seed for s in plan.segments] == [100, 101]
    assert plan.generation["use_causvid_lora"] is True
    assert plan.generation["loras"] == [{"path": "loras/x.safetensors", "multiplier": 0.7}]
    assert plan.colour_match is False and plan.sharpen == 0.5 and plan.keep_intermediates and plan.run_id == "run1"
    assert plan.upscale_to == (992, 992)
    assert [(s.start_image, s.end_image) for s in plan.segments] == [(IMAGES[0], IMAGES[1]), (IMAGES[1], IMAGES[2])]


def test_seed_defaults_and_run_id_fallback():
    d = seed_payload()
    del d["orchestrator_details"]["negative_prompts_expanded"]
    plan = plan_travel(SeedTravelParams.model_validate(d), run_id="orch-id")
    assert plan.run_id == "orch-id" and plan.colour_match is True and plan.sharpen == 0.3
    assert [s.seed for s in plan.segments] == [12345, 12346]
    assert plan.segments[0].negative_prompt == ""


def test_seed_lenient_overlaps_are_quantised():
    plan = plan_travel(seed_payload(segment_frames_expanded=[80, 30], frame_overlap_expanded=[41]))
    assert plan.lengths == [81, 29] and plan.overlaps == [28]  # even, <= the 29-frame neighbour
    assert plan.adjustments["frame_overlap_expanded[0]"] == [41, 28]
    assert plan.adjustments["segment_frames_expanded[0]"] == [80, 81]


def test_seed_vace_refs_are_kept_per_segment():
    plan = plan_travel(seed_payload(vace_image_refs_to_prepare_by_headless=[
        {"original_path": IMAGES[3], "segment_idx_for_naming": 1}, {"original_path": IMAGES[0]}]))
    assert plan.segments[0].image_refs == (IMAGES[0],)
    assert plan.segments[1].image_refs == (IMAGES[3], IMAGES[0])


def test_canonical_single_values_expand():
    plan = plan_travel(canonical(images=IMAGES, frames=18, overlap=4, seed=5, negative_prompt="bad"))
    assert plan.num_segments == 3 and plan.lengths == [17, 17, 17] and plan.overlaps == [4, 4]
    assert [s.seed for s in plan.segments] == [5, 6, 7]
    assert {s.prompt for s in plan.segments} == {"p"} and {s.negative_prompt for s in plan.segments} == {"bad"}
    assert plan.adjustments["frames[0]"] == [18, 17]
    assert plan.expected_final_frames == 51 - 8


def test_canonical_lists_and_random_seed():
    plan = plan_travel(canonical(prompts=["a", "b"], prompt=None, frames=[9, 13], overlap=[2], seed=-1))
    assert [s.prompt for s in plan.segments] == ["a", "b"]
    assert plan.lengths == [9, 13] and [s.seed for s in plan.segments] == [-1, -1]


def test_mode_inferred_from_model():
    assert plan_travel(canonical()).mode == "chained"
    indep = plan_travel(canonical(model="tiny-flf2v", overlap=None))
    assert indep.mode == "independent" and indep.overlaps == [1]
    assert plan_travel(canonical(model="flf2v_720p", overlap=3)).overlaps == [3]  # odd is fine when independent
    assert plan_travel(canonical(model="i2v", overlap=0)).mode == "independent"


def test_payload_files_in_samples_are_valid():
    for name in ("travel_seed_format", "travel_canonical", "travel_independent"):
        payload = json.loads((REPO / "samples/payloads" / f"{name}.json").read_text())
        plan = plan_travel(payload["params"])
        assert plan.expected_final_frames > 0
        for ref in plan.images:
            assert (REPO / ref).is_file()


# ----------------------------------------------------------------------------------------- mistakes
@pytest.mark.parametrize("payload,message", [
    (canonical(images=[]), "travel needs at least 1 image"),
    (canonical(images=IMAGES[:1], num_segments=3), "images has 1 image but 3 segments need 4 (or 3: the last"),
    (canonical(prompts=["a", "b", "c"], prompt=None), "prompts has 3 values but there are 2 segments"),
    (canonical(prompts=["a"], prompt="b"), "either prompt or prompts"),
    (canonical(frames=[17, 17, 17]), "frames has 3 values but there are 2 segments"),
    (canonical(overlap=[2, 2]), "overlap has 2 values but there is 1 join between the 2 segments (give 1 value)"),
    (canonical(overlap=3), "must be even (try 2 or 4)"),
    (canonical(overlap=-2), "cannot be negative"),
    (canonical(frames=[9, 17], overlap=12), "longer than segment 0 (9 frames)"),
    (canonical(frames=3), "frames of segment 0 is 3; a segment needs at least 5"),
    (canonical(frames=-9), "frames of segment 0 is -9"),
    (canonical(images=IMAGES, frames=[17, 9, 17], overlap=[6, 6]),
     "segment 1 has 9 frames but overlaps 6 frames with the previous and 6 with the next"),
    (canonical(resolution="64by64"), "resolution must look like '832x480'"),
    (canonical(resolution="8x64"), "at least 16 pixels"),
    (canonical(model="t2v"), "cannot travel between images"),
    (canonical(model="tiny-flf2v", mode="chained"), "mode 'chained' needs a VACE model"),
    (canonical(mode="independent"), "mode 'independent' needs a first-last-frame model"),
    (canonical(fps=0), "fps is 0"),
    (canonical(fps_multiplier=0), "fps_multiplier is 0"),
    (canonical(sharpen=-1), "sharpen is -1"),
    (canonical(upscale_to="big"), "upscale_to must look like"),
    (canonical(images=["", IMAGES[0]]), "non-empty path or URL"),
])
def test_canonical_mistakes_have_clear_messages(payload, message):
    assert message in problems_of(payload)


def test_all_problems_reported_at_once():
    text = problems_of(canonical(overlap=3, resolution="1x1", model="t2v"))
    assert "even" in text and "16 pixels" in text and "cannot travel" in text


def test_continue_overlap_counts():
    ok = plan_travel(canonical(images=IMAGES[:2], continue_from_video="old.mp4", overlap=[4, 2]), continue_frames=30)
    assert ok.overlaps == [4, 2] and ok.lengths == [30, 17, 17] and ok.expected_final_frames == 30 + 34 - 6
    msg = problems_of(canonical(images=IMAGES[:2], continue_from_video="v.mp4", overlap=[4, 2, 2]),
                      continue_frames=30)
    assert "3 values but there are 2 joins between the continued video and 2 segments" in msg
    msg = problems_of(canonical(images=IMAGES[:1], continue_from_video="v.mp4", overlap=8), continue_frames=4)
    assert "overlap between the continued video and segment 0 is 8" in msg


@pytest.mark.parametrize("over,message", [
    ({"input_image_paths_resolved": IMAGES[:1]}, "has 1 image but 2 segments need 3 (or 2: the last segment"),
    ({"num_new_segments_to_generate": 0}, "nothing to generate"),
    ({"base_prompts_expanded": None}, "base_prompts_expanded is missing"),
    ({"base_prompts_expanded": ["a", "b", "c"]}, "base_prompts_expanded has 3 values but there are 2 segments"),
    ({"segment_frames_expanded": [81, 81, 81]}, "segment_frames_expanded has 3 values"),
    ({"frame_overlap_expanded": [1, 2, 3, 4]}, "frame_overlap_expanded has 4 values"),
    ({"frame_overlap_expanded": [-4]}, "cannot be negative"),
    ({"segment_frames_expanded": [81, 2]}, "frames of segment 1 is 2"),
    ({"parsed_resolution_wh": "wide"}, "parsed_resolution_wh must look like"),
    ({"model_name": "t2v"}, "cannot travel between images"),
])
def test_seed_mistakes_have_clear_messages(over, message):
    assert message in problems_of(seed_payload(**over))


def test_pydantic_errors_name_the_field():
    from source.handler_registry import validate_params

    with pytest.raises(InvalidInput) as err:
        validate_params("travel_orchestrator", {"orchestrator_details": {"model_name": "vace_14B"}})
    assert "orchestrator_details.input_image_paths_resolved: Field required" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        validate_params("travel_between_images", {"images": "a.png"})
    assert "images" in str(err.value)
    assert isinstance(validate_params("travel_between_images", canonical()), TravelParams)


def test_parse_resolution():
    assert parse_resolution("500x500") == (496, 496)
    assert parse_resolution("830x480") == (832, 480)  # nearest, as every handler (travel used to floor: 816)
    assert parse_resolution([64, 48]) == (64, 48)
    assert parse_resolution(" 832 x 480 ") == (832, 480)


def test_refs_need_chained_and_unknown_keys_are_reported():
    assert "image_refs (VACE reference images) need" in problems_of(
        canonical(model="tiny-flf2v", overlap=1, image_refs=[IMAGES[3]]))
    from source.handler_registry import prepare_params

    plan = plan_travel(canonical(image_refs=[IMAGES[3]], framez=9))
    assert plan.segments[1].image_refs == (IMAGES[3],)
    assert prepare_params("travel_between_images", canonical(framez=9))[1] == ["framez"]
    seed = seed_payload(apply_causvid=True, steps=3)
    seed["task_id"] = "t1"  # read by the queue, not reported
    validated, ignored = prepare_params("travel_orchestrator", seed)
    assert ignored == ["orchestrator_details.fade_in_params_json_str", "orchestrator_details.some_future_key"]
    plan = plan_travel(validated)
    assert plan.generation["use_causvid_lora"] is True and plan.generation["num_inference_steps"] == 3


# ----------------------------------------------------------------------------------------- image counts
def test_seed_three_images_three_segments_last_continues_freely():
    """The seed's test generator: 3 images, 3 segments. The last segment has no end image."""
    plan = plan_travel(seed_payload(num_new_segments_to_generate=3, base_prompts_expanded=["a", "b", "c"],
                                    negative_prompts_expanded=["", "", ""], segment_frames_expanded=[81, 81, 81],
                                    frame_overlap_expanded=[12, 12, 12]))
    assert [(s.start_image, s.end_image) for s in plan.segments] == [
        (IMAGES[0], IMAGES[1]), (IMAGES[1], IMAGES[2]), (IMAGES[2], None)]
    assert plan.lengths == [81, 81, 81] and plan.overlaps == [12, 12]
    assert plan.expected_final_frames == 3 * 81 - 24


def test_one_image_one_segment_is_a_valid_travel():
    seed = plan_travel(seed_payload(input_image_paths_resolved=IMAGES[:1], num_new_segments_to_generate=1,
                                    base_prompts_expanded=["a"], negative_prompts_expanded=[""],
                                    segment_frames_expanded=[16], frame_overlap_expanded=[]))
    assert [(s.start_image, s.end_image) for s in seed.segments] == [(IMAGES[0], None)]
    assert seed.lengths == [17] and seed.overlaps == [] and seed.expected_final_frames == 17
    assert seed.adjustments["segment_frames_expanded[0]"] == [16, 17]
    canon = plan_travel(canonical(images=IMAGES[:1]))
    assert canon.num_segments == 1 and canon.segments[0].end_image is None and canon.expected_final_frames == 17


def test_extra_images_are_not_used_and_recorded():
    plan = plan_travel(seed_payload(input_image_paths_resolved=IMAGES))  # 4 images, 2 segments
    assert plan.images == IMAGES[:3] and plan.segments[-1].end_image == IMAGES[2]
    assert plan.adjustments["input_image_paths_resolved"] == [4, 3]
    cont = plan_travel(seed_payload(input_image_paths_resolved=IMAGES[:1], continue_from_video_resolved_path="v.mp4",
                                    frame_overlap_expanded=[4, 4]), continue_frames=20)
    assert [(s.start_image, s.end_image) for s in cont.segments] == [(None, IMAGES[0]), (IMAGES[0], None)]
