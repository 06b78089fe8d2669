"""Seed payload translation (source.seed_payloads) and the registry's report of keys that have no effect."""

from __future__ import annotations

import pytest

from source.handler_registry import PARENT_IGNORED_KEY, prepare_params, run_handler
from source.seed_payloads import translate
from source.task_context import InvalidInput, TaskContext


def test_generate_maps_seed_keys_and_alias_default_model():
    t = translate("i2v", {"frames": 17, "steps": 4, "image_start_paths": ["a.png"], "image_end_paths": ["b.png"],
                          "image_refs_paths": ["r.png"], "video_guide_path": "g.mp4", "video_mask_path": "m.mp4",
                          "additional_loras": {"https://x/l.safetensors": 0.5}, "sliding_window_size": 81,
                          "task_id": "t1"})
    p = t.params
    assert p["model"] == "i2v" and p["video_length"] == 17 and p["num_inference_steps"] == 4
    assert p["image_start"] == "a.png" and p["image_end"] == "b.png" and p["image_refs"] == ["r.png"]
    assert p["video_guide"] == "g.mp4" and p["video_mask"] == "m.mp4"
    assert p["loras"] == [{"path": "https://x/l.safetensors", "multiplier": 0.5}]
    assert t.ignored_keys == ["sliding_window_size"]  # task_id is the queue's, not reported
    assert translate("vace", {}).params["model"] == "vace_14B"
    assert translate("wgp", {}).params["model"] == "t2v"
    assert translate("standard_wgp_task", {}).params["model"] == "t2v"
    assert translate("i2v", {"model": "tiny-t2v"}).params["model"] == "tiny-t2v"
    assert translate("generate", {"model_name": "tiny-vace"}).params["model"] == "tiny-vace"
    with pytest.raises(InvalidInput, match="image_start_paths has 2 images"):
        translate("generate", {"image_start_paths": ["a", "b"]})


def test_our_names_win_and_the_row_is_not_changed():
    raw = {"video_length": 9, "frames": 33, "use_lightx2v_lora": True}
    t = translate("generate", raw)
    assert t.params["video_length"] == 9 and "frames" not in t.params and t.params["use_lighti2x_lora"] is True
    assert raw == {"video_length": 9, "frames": 33, "use_lightx2v_lora": True}


def test_different_perspective_and_single_image_spellings():
    dp = translate("different_perspective_orchestrator",
                   {"model": "vace_14B", "num_inference_steps": 3, "use_lightx2v_lora": True}).params
    assert dp == {"model_name": "vace_14B", "steps": 3, "use_lighti2x_lora": True}
    validated, ignored = prepare_params("different_perspective", {"input_image_path": "a.png", "model": "x",
                                                                  "debug_mode": True, "skip_cleanup": True})
    assert validated.model_name == "x" and ignored == ["debug_mode", "skip_cleanup"]
    si = translate("single_image", {"orchestrator_details": {"prompt": "in", "seed": 2}, "prompt": "out",
                                    "additional_loras": {"a.safetensors": 0.5}}).params
    assert si == {"prompt": "out", "seed": 2, "loras": [{"path": "a.safetensors", "multiplier": 0.5}]}


def test_registry_logs_ignored_keys_once_and_records_them(tmp_path):
    """A real handler (noop) through the registry: the unknown key is logged once and lands in the result."""
    from source.storage import Storage

    events: list[tuple[str, dict]] = []
    ctx = TaskContext(task_id="t1", task_type="noop", attempt=1, worker_id="w", storage=Storage(tmp_path / "out"),
                      log=lambda event, **f: events.append((event, f)))
    res = run_handler("noop", {"seconds": 0, "colour": "blue", "task_id": "t1"}, ctx)
    assert res.result["ignored_keys"] == ["colour"]
    assert [f["ignored_keys"] for e, f in events if e == "params_ignored"] == [["colour"]]

    # the completing child carries the parent's list and records it (the parent's result becomes the child's)
    child = run_handler("noop", {"seconds": 0, PARENT_IGNORED_KEY: ["orchestrator_details.x"]}, ctx)
    assert child.result["ignored_keys"] == ["orchestrator_details.x"]
