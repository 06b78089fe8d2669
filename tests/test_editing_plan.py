"""Frame arithmetic of video editing (source/editing_plan.py): join, inpaint and edit plans, their exact
counts, and the messages for bad input."""

from __future__ import annotations

import pytest

from source.editing_plan import plan_edit, plan_inpaint, plan_join
from source.errors import InvalidInput


def pieces_total(plan) -> int:
    return sum(p.frames for p in plan.pieces)


@pytest.mark.parametrize("clips,replace,loop", [
    ([9, 9], False, False), ([9, 11, 13], False, False), ([9, 11, 13], True, False),
    ([9, 9, 9], False, True), ([9, 10, 11], True, True),
])
def test_join_counts_follow_the_formula(clips, replace, loop):
    plan = plan_join(clips, context=2, gap=5, replace=replace, loop=loop)
    joins = len(clips) if loop else len(clips) - 1
    assert len(plan.bridges) == joins
    replaced = sum(b.replaced for b in plan.bridges)
    assert replaced == (5 * joins if replace else 0)
    assert plan.expected_frames == sum(clips) - replaced + 5 * joins == pieces_total(plan)
    for b in plan.bridges:
        assert b.generation_frames % 4 == 1
        assert b.before.frames == b.after.frames == 2


def test_replace_takes_context_just_outside_the_replaced_frames():
    plan = plan_join([20, 20], context=3, gap=7, replace=True)
    b = plan.bridges[0]
    # gap 7 replaces the last 3 frames of clip 0 and the first 4 of clip 1
    assert (b.before.start, b.before.end, b.after.start, b.after.end) == (14, 17, 4, 7)
    assert [(p.kind, p.start, p.end) for p in plan.pieces] == [("clip", 0, 17), ("bridge", 3, 10), ("clip", 4, 20)]


def test_default_gap_makes_a_4n_plus_1_generation_and_odd_gaps_are_recorded():
    plan = plan_join([30, 30], context=8)
    assert plan.bridges[0].gap == 53 and plan.bridges[0].generation_frames == 69
    plan = plan_join([30, 30], context=2, gap=6)
    assert plan.bridges[0].gap == 5 and plan.adjustments == {"gap_frames[0]": [6, 5]}


def test_per_join_prompts_and_seeds():
    plan = plan_join([9, 9, 9], context=2, gap=5, prompts=["a", "b"], seed=7)
    assert [(b.prompt, b.seed) for b in plan.bridges] == [("a", 7), ("b", 8)]
    with pytest.raises(InvalidInput, match="prompt has 1 values but there are 2 joins"):
        plan_join([9, 9, 9], prompts=["a"])


@pytest.mark.parametrize("call,message", [
    (lambda: plan_join([9]), "at least 2 clips"),
    (lambda: plan_join([9, 3], context=4, gap=5), "clip 1 has 3 frames, fewer than its context needs"),
    (lambda: plan_join([9, 9], context=4, gap=9, replace=True, loop=True), r"clip 0 has 9 frames.*4 context frames \+ 9 replaced"),
    (lambda: plan_join([9, 9], context=-1), "context_frames of join 0"),
    (lambda: plan_inpaint(20, 5, 25), r"\[5, 25\) runs past the end of the video \(20 frames"),
    (lambda: plan_inpaint(20, 8, 8), "is empty"),
    (lambda: plan_inpaint(20, -1, 4), "starts before frame 0"),
    (lambda: plan_edit(24, [(3, 10, ""), (8, 12, "")]), r"portion 0 \[3, 10\) and portion 1 \[8, 12\) overlap"),
    (lambda: plan_edit(24, [(3, 10, ""), (20, 30, "")]), r"portion 1 \[20, 30\) runs past the end"),
    (lambda: plan_edit(24, []), "is empty"),
    (lambda: plan_inpaint(6, 0, 6, context=8), "too few to make"),
])
def test_bad_input_is_refused_naming_the_problem(call, message):
    with pytest.raises(InvalidInput, match=message):
        call()


def test_inpaint_window_adjusts_context_never_the_range():
    adjustments = {}
    w = plan_inpaint(40, 10, 15, context=3, adjustments=adjustments)
    assert (w.start, w.end) == (10, 15) and w.frames % 4 == 1 and w.frames == 9
    assert adjustments  # 3 + 5 + 3 = 11 -> 9, recorded
    w = plan_inpaint(40, 0, 6, context=8)  # no room before: context comes from after only
    assert w.before == 0 and w.frames % 4 == 1 and w.after <= 8
    w = plan_inpaint(10, 2, 10, context=0)  # 8 frames, no context asked: grows to 9 from the room there is
    assert w.frames == 9 and w.before == 1


def test_edit_keeps_length_and_takes_context_only_from_keepers():
    plan = plan_edit(30, [(14, 20, "b"), (3, 6, "a")], context=4, seed=5)
    assert plan.expected_frames == pieces_total(plan) == 30
    first, second = plan.bridges  # in frame order
    assert first.prompt == "a" and second.prompt == "b"
    assert first.after.end <= 14 and second.before.start >= 6  # never inside another portion
    assert all(b.generation_frames % 4 == 1 for b in plan.bridges)
    kinds = [(p.kind, p.start, p.end) for p in plan.pieces]
    assert kinds[0] == ("clip", 0, 3) and kinds[-1] == ("clip", 20, 30)


def test_seed_shaped_payloads_validate():
    from source.handlers.edit_video import EditVideoParams
    from source.handlers.join_clips import JoinClipsParams, normalise_clip

    p = JoinClipsParams.model_validate({"orchestrator_details": {
        "clip_list": [{"url": "https://x/a.mp4", "name": "a"}, {"url": "https://x/b.mp4"}],
        "context_frame_count": 6, "gap_frame_count": 9, "replace_mode": True, "loop_first_clip": True,
        "prompt": "p", "model": "vace_14B", "num_inference_steps": 4}, "seed": 5})
    assert (p.context_frames, p.gap_frames, p.replace, p.loop, p.steps, p.seed) == (6, 9, True, True, 4, 5)
    assert [normalise_clip(c, "clip") for c in p.clips] == [{"path": "https://x/a.mp4"}, {"path": "https://x/b.mp4"}]
    e = EditVideoParams.model_validate({"orchestrator_details": {"video_path": "v.mp4", "portions_to_regenerate": [
        {"start_frame": 1, "end_frame": 4, "prompt": "x"}]}})
    assert e.video == "v.mp4" and e.portions_to_regenerate[0].end_frame == 4
    with pytest.raises(InvalidInput, match="task_id"):
        normalise_clip({"name": "no location"}, "clip 0")
