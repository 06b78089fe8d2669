"""The generation bridge on tiny random-weight Wan pipelines (CPU, a few seconds in all)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from source.generation.bridge import generate_single_video
from source.generation.engine import get_engine
from source.media.images import save_png
from source.media.video_io import probe_video, read_frames, write_video
from source.task_context import InvalidInput, TaskCancelled

BASE = dict(prompt="a cat walking", resolution="64x64", video_length=9, num_inference_steps=2, seed=7)


@pytest.fixture
def media(tmp_path) -> dict[str, Path]:
    a = np.zeros((64, 64, 3), np.uint8)
    a[8:40, 8:40] = (220, 40, 40)
    b = np.zeros((80, 96, 3), np.uint8)  # another size and aspect: fitted to the target
    b[30:70, 40:90] = (40, 40, 220)
    save_png(a, tmp_path / "start.png")
    save_png(b, tmp_path / "end.png")
    guide = [np.full((64, 64, 3), 30 + 20 * i, np.uint8) for i in range(12)]  # longer than needed
    write_video(guide, tmp_path / "guide.mp4")
    mask = [np.full((64, 64, 3), 255 if i % 2 else 0, np.uint8) for i in range(5)]  # shorter than needed
    write_video(mask, tmp_path / "mask.mp4")
    return {"start": tmp_path / "start.png", "end": tmp_path / "end.png", "guide": tmp_path / "guide.mp4",
            "mask": tmp_path / "mask.mp4"}


def _check_output(res, frames=9, width=64, height=64):
    info = probe_video(res.video_path)
    assert (info.frames, info.width, info.height) == (frames, width, height)
    assert abs(info.fps - res.fps) < 1e-6
    side = json.loads(res.sidecar_path.read_text())
    for key in ("params", "effective", "seed", "adjustments", "inputs", "loras", "model", "versions", "timings",
                "cache_key", "output"):
        assert key in side, key
    assert side["seed"] == res.seed
    assert side["model"]["revision"]
    assert {"torch", "diffusers", "transformers", "python"} <= set(side["versions"])
    assert side["output"]["frames"] == frames
    return side


@pytest.mark.parametrize("mode", ["t2v", "i2v", "flf2v", "vace", "i2v22"])
def test_each_mode_writes_the_requested_video_and_sidecar(gen_ctx, media, mode):
    params = dict(BASE, model=f"tiny-{mode}")
    if mode in ("i2v", "i2v22"):
        params["image_start"] = str(media["start"])
    if mode == "flf2v":
        params.update(image_start=str(media["start"]), image_end=str(media["end"]))
    if mode == "vace":
        params.update(video_guide=str(media["guide"]), video_mask=str(media["mask"]),
                      image_refs=[str(media["start"])])
    res = generate_single_video(gen_ctx(), params)
    side = _check_output(res)
    assert not res.cache_hit and res.seed == 7
    if mode != "t2v":
        assert all(len(v["sha256"]) == 64 for v in side["inputs"].values())
    if mode == "vace":
        assert set(side["inputs"]) == {"video_guide", "video_mask", "image_refs[0]"}
        assert res.adjustments["video_guide_frames"] == [12, 9]
        assert res.adjustments["video_mask_frames"] == [5, 9]
    if mode == "i2v22":
        assert side["effective"]["guidance_scale_2"] is not None
    # step progress was reported
    assert any(m and m.startswith("step 2 of 2") for _, m in gen_ctx.progress)


def test_vace_first_last_frame_from_images(gen_ctx, media):
    res = generate_single_video(gen_ctx(), dict(BASE, model="tiny-vace", image_start=str(media["start"]),
                                                image_end=str(media["end"])))
    _check_output(res)


def test_same_fixed_seed_gives_same_frames_and_model_stays_warm(gen_ctx):
    engine = get_engine()
    p = dict(BASE, model="tiny-t2v", use_cache=False)
    a = generate_single_video(gen_ctx(), p)
    loads = engine.load_count
    b = generate_single_video(gen_ctx(), p)
    assert engine.load_count == loads, "a second call on the same model must not reload it"
    fa, fb = read_frames(a.video_path), read_frames(b.video_path)
    assert len(fa) == len(fb) == 9
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    c = generate_single_video(gen_ctx(), dict(p, seed=8))
    assert not all(np.array_equal(x, y) for x, y in zip(fa, read_frames(c.video_path)))


def test_switching_model_reloads_and_logs(gen_ctx, media):
    engine = get_engine()
    generate_single_video(gen_ctx(), dict(BASE, model="tiny-t2v", use_cache=False))
    n = engine.load_count
    generate_single_video(gen_ctx(), dict(BASE, model="tiny-i2v", image_start=str(media["start"]), use_cache=False))
    assert engine.load_count == n + 1
    generate_single_video(gen_ctx(), dict(BASE, model="tiny-t2v", use_cache=False))
    assert engine.load_count == n + 2
    loaded = [f for e, f in gen_ctx.events if e == "model_loaded"]
    assert loaded and loaded[-1]["model"] == "tiny-t2v" and loaded[-1]["seconds"] >= 0


@pytest.mark.parametrize("fmt", ["wan", "peft"])
def test_lora_changes_output_and_multiplier_zero_does_not(gen_ctx, tiny_loras, fmt):
    engine = get_engine()
    p = dict(BASE, model="tiny-t2v", use_cache=False)
    base = read_frames(generate_single_video(gen_ctx(), p).video_path)
    loads = engine.load_count
    lora = str(tiny_loras[f"t2v_{fmt}"])
    with_lora = generate_single_video(gen_ctx(), dict(p, loras=[{"path": lora, "multiplier": 1.0}]))
    zero = generate_single_video(gen_ctx(), dict(p, loras=[{"path": lora, "multiplier": 0.0}]))
    again = generate_single_video(gen_ctx(), p)
    assert engine.load_count == loads, "LoRAs must not reload the base model"
    fl, fz, fa = (read_frames(r.video_path) for r in (with_lora, zero, again))
    assert not all(np.array_equal(x, y) for x, y in zip(base, fl))
    assert all(np.array_equal(x, y) for x, y in zip(base, fz))
    assert all(np.array_equal(x, y) for x, y in zip(base, fa)), "an unrequested LoRA must be off"
    side = json.loads(with_lora.sidecar_path.read_text())
    assert side["loras"][0]["multiplier"] == 1.0 and len(side["loras"][0]["sha256"]) == 64


def test_lora_on_two_expert_model(gen_ctx, media, tiny_loras):
    p = dict(BASE, model="tiny-i2v22", image_start=str(media["start"]), use_cache=False)
    base = read_frames(generate_single_video(gen_ctx(), p).video_path)
    out = generate_single_video(gen_ctx(), dict(p, loras=[{"path": str(tiny_loras["i2v22_wan"]), "multiplier": 1}]))
    pipe = get_engine().model.pipe
    assert pipe.transformer_2.peft_config, "the LoRA goes into the second expert too"
    assert not all(np.array_equal(x, y) for x, y in zip(base, read_frames(out.video_path)))


def test_cancel_after_first_step_raises_and_writes_no_video(gen_ctx, tmp_path):
    steps_seen = []

    def is_cancelled():
        return any(m and m.startswith("step 1 of") for _, m in gen_ctx.progress)

    ctx = gen_ctx(is_cancelled=is_cancelled)
    gen_ctx.progress.clear()
    with pytest.raises(TaskCancelled):
        generate_single_video(ctx, dict(BASE, model="tiny-t2v", num_inference_steps=4, use_cache=False))
    steps_seen = [m for _, m in gen_ctx.progress if m and m.startswith("step ")]
    assert "step 2 of 4" not in steps_seen and "step 4 of 4" not in steps_seen
    out = ctx.output_path(".mp4", stem="video")
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not list(gen_ctx.storage.files_dir.glob("*.mp4"))


def test_cache_hit_returns_identical_bytes_without_the_pipeline(gen_ctx, monkeypatch):
    p = dict(BASE, model="tiny-t2v", seed=11)
    first = generate_single_video(gen_ctx(), p)
    assert not first.cache_hit and len(gen_ctx.cache) == 1
    engine = get_engine()

    def boom(*a, **k):
        raise AssertionError("the pipeline must not run on a cache hit")

    monkeypatch.setattr(engine, "generate", boom)
    monkeypatch.setattr(engine, "ensure", boom)
    hit = generate_single_video(gen_ctx(), p)
    assert hit.cache_hit and hit.video_path != first.video_path
    assert hit.video_path.read_bytes() == first.video_path.read_bytes()
    assert (hit.frames, hit.width, hit.height, hit.seed) == (9, 64, 64, 11)
    assert "cache_hit" in gen_ctx.event_names()
    side = json.loads(hit.sidecar_path.read_text())
    assert side["cache_hit"] is True and side["timings"]["total_s"] < 0.5
    # opting out, or another parameter, runs the pipeline
    with pytest.raises(AssertionError):
        generate_single_video(gen_ctx(), dict(p, use_cache=False))
    with pytest.raises(AssertionError):
        generate_single_video(gen_ctx(), dict(p, prompt="a dog"))


def test_random_seed_is_never_cached_and_missing_cached_file_regenerates(gen_ctx):
    p = dict(BASE, model="tiny-t2v", seed=-1)
    r = generate_single_video(gen_ctx(), p)
    assert 0 <= r.seed < 2 ** 31 and not gen_ctx.cache
    q = dict(BASE, model="tiny-t2v", seed=12)
    first = generate_single_video(gen_ctx(), q)
    first.video_path.unlink()  # the task's own output may go: the cache keeps its own copy
    kept = generate_single_video(gen_ctx(), q)
    assert kept.cache_hit and kept.video_path.is_file()
    for location in gen_ctx.cache.values():  # the cached copy itself gone: generate again
        gen_ctx.storage.resolve_input(location).unlink()
    kept.video_path.unlink()
    again = generate_single_video(gen_ctx(), q)
    assert not again.cache_hit and again.video_path.is_file()


def test_adjustments_are_recorded(gen_ctx):
    res = generate_single_video(gen_ctx(), dict(BASE, model="tiny-t2v", resolution="70x70", video_length=10,
                                                use_cache=False))
    assert res.adjustments == {"resolution": ["70x70", "64x64"], "video_length": [10, 9]}
    _check_output(res)
    side = json.loads(res.sidecar_path.read_text())
    assert side["adjustments"] == res.adjustments


def test_single_frame(gen_ctx):
    res = generate_single_video(gen_ctx(), dict(BASE, model="tiny-t2v", video_length=1, use_cache=False))
    _check_output(res, frames=1)


@pytest.mark.parametrize("params, match", [
    (dict(resolution="64by64"), "WIDTHxHEIGHT"),
    (dict(video_length=0), "at least 1"),
    (dict(resolution="20x300"), "aspect"),
    (dict(resolution="40x24"), "aspect ratio by"),
    (dict(model="no-such-model"), "unknown model"),
    (dict(model="tiny-i2v"), "image_start"),
    (dict(image_start="x.png"), "text-to-video"),
    (dict(video_guide="g.mp4"), "VACE"),
    (dict(use_causvid_lora=True, use_lighti2x_lora=True), "alternatives"),
    (dict(seed=-5), "seed"),
])
def test_clear_rejections(gen_ctx, params, match):
    with pytest.raises(InvalidInput, match=match):
        generate_single_video(gen_ctx(), {**BASE, "model": "tiny-t2v", **params})


def test_speed_presets_apply_sampling_settings(gen_ctx):
    res = generate_single_video(gen_ctx(), dict(BASE, model="tiny-t2v", num_inference_steps=None,
                                                use_lighti2x_lora=True, use_cache=False))
    eff = json.loads(res.sidecar_path.read_text())["effective"]
    assert (eff["num_inference_steps"], eff["guidance_scale"], eff["flow_shift"], eff["fixed_sigmas"]) == \
        (4, 1.0, 5.0, True)
    res = generate_single_video(gen_ctx(), dict(BASE, model="tiny-t2v", num_inference_steps=None,
                                                use_causvid_lora=True, use_cache=False))
    eff = json.loads(res.sidecar_path.read_text())["effective"]
    assert (eff["guidance_scale"], eff["flow_shift"], eff["speed_preset"]) == (1.0, 7.0, "causvid")


def test_lightx2v_timesteps_are_the_distilled_ones():
    from source.generation.engine import _fixed_sigma_scheduler_class

    sched = _fixed_sigma_scheduler_class()(num_train_timesteps=1000, shift=5.0)
    sched.set_timesteps(4)
    assert np.allclose(sched.timesteps.numpy(), [1000.0, 937.5, 833.333, 625.0], atol=0.01)


def test_output_path_argument(gen_ctx):
    ctx = gen_ctx()
    target = ctx.work_dir / "custom.mp4"
    res = generate_single_video(ctx, dict(BASE, model="tiny-t2v", use_cache=False), output_path=target)
    assert res.video_path == target and target.is_file() and target.with_suffix(".json").is_file()
