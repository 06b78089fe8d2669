"""The pure request step of the generation bridge: params -> a typed request (no files, no models), and the
prompt cap at the bridge's boundary."""

from __future__ import annotations

import random

import pytest

from source.generation.bridge import GenerationParams, generate_single_video
from source.generation.model_catalog import load_catalog
from source.generation.request import MAX_PROMPT_CHARS, resolve_request
from source.task_context import InvalidInput


def _request(**params):
    return resolve_request(GenerationParams.parse(params), load_catalog(), rng=random.Random(0))


def test_sizes_frames_and_presets_are_resolved_with_adjustments():
    r = _request(model="tiny-t2v", resolution="830x478", video_length=16, use_lighti2x_lora=True, seed=3)
    assert (r.width, r.height, r.frames) == (832, 480, 17)
    assert r.adjustments == {"resolution": ["830x478", "832x480"], "video_length": [16, 17]}
    assert (r.steps, r.guidance, r.flow_shift, r.fixed_sigmas, r.preset_name) == (4, 1.0, 5.0, True, "lightx2v")
    assert r.guidance_2 is None and r.cacheable and r.engine == "diffusers"
    explicit = _request(model="tiny-t2v", use_lighti2x_lora=True, num_inference_steps=6, guidance_scale=3.0)
    assert (explicit.steps, explicit.guidance) == (6, 3.0)
    drawn = _request(model="tiny-t2v")
    assert 0 <= drawn.seed < 2 ** 31 and not drawn.cacheable
    two = _request(model="tiny-i2v22", image_start="a.png")
    assert two.guidance_2 is not None


def test_prompt_cap_refuses_a_huge_prompt_with_a_short_message(gen_ctx):
    ctx = gen_ctx()
    GenerationParams(prompt="x" * MAX_PROMPT_CHARS)  # at the cap: accepted
    with pytest.raises(InvalidInput, match="prompt: String should have at most 10000 characters") as err:
        generate_single_video(ctx, dict(model="tiny-t2v", prompt="y" * 1_000_000, resolution="32x32",
                                        video_length=5, seed=1))
    assert len(str(err.value)) < 300 and "yyyy" not in str(err.value)
    assert not list(ctx.storage.files_dir.rglob("*.json")), "nothing is written for a refused request"


def test_a_huge_model_name_is_quoted_as_an_excerpt():
    with pytest.raises(InvalidInput, match="unknown model") as err:
        _request(model="m" * 150)
    assert len(str(err.value)) < 800
