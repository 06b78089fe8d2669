"""single_image: a one-frame generation through the bridge (tiny-t2v) saved as a PNG of the requested size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from source.handlers.single_image import SingleImageParams, generation_params
from source.task_context import InvalidInput
from tests.test_pose_handler import Ctx


@pytest.fixture
def env(tmp_path, tiny_models) -> Ctx:
    return Ctx(tmp_path)


def test_writes_png_of_requested_size(env):
    res, ctx = env.run("single_image", {"prompt": "a red fox in snow", "model": "tiny-t2v",
                                        "resolution": "80x48", "seed": 7, "steps": 2})
    out = env.path(res.output_location)
    assert out.suffix == ".png" and out.name == f"single_image_{ctx.task_id}.png"
    img = np.asarray(Image.open(out))
    assert img.shape == (48, 80, 3) and img.std() > 0
    assert res.result["seed"] == 7 and (res.result["width"], res.result["height"]) == (80, 48)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar  # the bridge's provenance record travels with the PNG


def test_same_seed_same_image_and_loras_accepted(env, tiny_loras):
    p = {"prompt": "a cat", "model": "tiny-t2v", "resolution": "64x64", "seed": 3, "use_cache": False}
    a, _ = env.run("single_image", p)
    b, _ = env.run("single_image", p)
    assert np.array_equal(np.asarray(Image.open(env.path(a.output_location))),
                          np.asarray(Image.open(env.path(b.output_location))))
    c, _ = env.run("single_image", {**p, "additional_loras": {str(tiny_loras["t2v_wan"]): 0.8}})
    assert np.asarray(Image.open(env.path(c.output_location))).shape == (64, 64, 3)


def test_seed_params_mapping():
    from source.seed_payloads import translate

    p = SingleImageParams.model_validate(translate("single_image", {
        "orchestrator_details": {"prompt": "inner", "model": "tiny-t2v", "seed": 1},
        "prompt": "outer", "num_inference_steps": 4, "additional_loras": {"a.safetensors": 0.5},
        "loras": [{"path": "b.safetensors", "multiplier": 1.0}], "use_causvid_lora": True,
    }).params)
    gp = generation_params(p)
    assert gp["prompt"] == "outer" and gp["model"] == "tiny-t2v" and gp["seed"] == 1
    assert gp["video_length"] == 1 and gp["num_inference_steps"] == 4 and gp["use_causvid_lora"] is True
    assert gp["loras"] == [{"path": "b.safetensors", "multiplier": 1.0}, {"path": "a.safetensors", "multiplier": 0.5}]
    assert SingleImageParams().model == "t2v"


def test_bad_params(env):
    with pytest.raises(InvalidInput, match="resolution"):
        env.run("single_image", {"model": "tiny-t2v", "resolution": "big"})
    with pytest.raises(InvalidInput, match=r"additional_loras\['x'\]: strength 'lots' is not a number"):
        env.run("single_image", {"model": "tiny-t2v", "additional_loras": {"x": "lots"}})
