"""`single_image`: a one-frame generation through the bridge, saved as a PNG.

Params: `prompt`, `model` (default the catalog's text-to-video model "t2v"), `resolution` ("WxH"), `seed`
(-1 = random; the seed used is recorded), `negative_prompt`, `loras` ([{path, multiplier}]),
`use_causvid_lora`, `use_lighti2x_lora`, `steps` (default: the model's, or the speed LoRA's),
`guidance_scale`, `flow_shift`, `image_refs_paths` (VACE models). The seed's spellings
(`orchestrator_details` flattened in, `num_inference_steps`, `additional_loras`, `use_lightx2v_lora`) are
translated by source.seed_payloads before validation.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from source.handler_registry import register
from source.task_context import HandlerResult, TaskContext


class SingleImageParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt: str = " "
    model: str = "t2v"
    resolution: str | None = None
    seed: int = -1
    negative_prompt: str = ""
    loras: list[dict[str, Any]] | None = None
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = False
    steps: int | None = Field(None, ge=1, le=200)
    guidance_scale: float | None = None
    flow_shift: float | None = None
    image_refs_paths: list[str] | None = None
    use_cache: bool = True


def generation_params(params: SingleImageParams) -> dict[str, Any]:
    gp: dict[str, Any] = {
        "model": params.model, "prompt": params.prompt, "negative_prompt": params.negative_prompt,
        "resolution": params.resolution, "video_length": 1, "seed": params.seed,
        "use_causvid_lora": params.use_causvid_lora, "use_lighti2x_lora": params.use_lighti2x_lora,
        "use_cache": params.use_cache,
    }
    if params.steps is not None:
        gp["num_inference_steps"] = params.steps
    if params.guidance_scale is not None:
        gp["guidance_scale"] = params.guidance_scale
    if params.flow_shift is not None:
        gp["flow_shift"] = params.flow_shift
    if params.image_refs_paths:
        gp["image_refs"] = list(params.image_refs_paths)
    if params.loras:
        gp["loras"] = [dict(item) for item in params.loras]
    return gp


@register("single_image", params_model=SingleImageParams)
def handle_single_image(params: SingleImageParams, ctx: TaskContext) -> HandlerResult:
    from source.generation.bridge import GenerationParams, generate_single_video
    from source.media.images import save_png
    from source.media.video_io import iter_frames

    video = ctx.work_dir / "single_image.mp4"
    gen = generate_single_video(ctx, GenerationParams.parse(generation_params(params)), output_path=video)
    frame = next(iter(iter_frames(gen.video_path)), None)
    if frame is None:
        raise RuntimeError(f"the generated video {gen.video_path.name} has no frames")
    frame = frame[: gen.height, : gen.width]  # drop the encoder's padding to even sides, if any
    out = save_png(frame, ctx.output_path(".png", stem="single_image"))
    if gen.sidecar_path and Path(gen.sidecar_path).is_file():  # provenance beside the PNG (work_dir is removed)
        shutil.copyfile(gen.sidecar_path, out.with_suffix(".json"))
    ctx.progress(1.0, "done")
    return HandlerResult(output_location=ctx.location_for(out), result={
        "width": int(frame.shape[1]), "height": int(frame.shape[0]), "seed": gen.seed, "model": params.model,
        "cache_hit": gen.cache_hit, "adjustments": gen.adjustments,
    })
