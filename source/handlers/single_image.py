"""`single_image`: a one-frame generation through the bridge, saved as a PNG.

Params (the seed's): `prompt`, `model` (default the catalog's text-to-video model "t2v"), `resolution`
("WxH"), `seed` (-1 = random; the seed used is recorded), `negative_prompt`, `loras` ([{path, multiplier}])
or `additional_loras` ({path: multiplier}), `use_causvid_lora`, `use_lighti2x_lora`, `steps` /
`num_inference_steps` (default: the model's, or the speed LoRA's), `guidance_scale`, `flow_shift`,
`image_refs_paths` (VACE models). `orchestrator_details`, when present, is flattened in (top level wins).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from source.handler_registry import register
from source.errors import InvalidInput
from source.task_context import HandlerResult, TaskContext


class SingleImageParams(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    prompt: str = " "
    model: str = "t2v"
    resolution: str | None = None
    seed: int = -1
    negative_prompt: str = ""
    loras: list[dict[str, Any]] | None = None
    additional_loras: dict[str, float] | None = None
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = Field(False, validation_alias=AliasChoices("use_lighti2x_lora", "use_lightx2v_lora"))
    steps: int | None = Field(None, ge=1, le=200, validation_alias=AliasChoices("steps", "num_inference_steps"))
    guidance_scale: float | None = None
    flow_shift: float | None = None
    image_refs_paths: list[str] | None = None
    use_cache: bool = True

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("orchestrator_details"), dict):
            merged = dict(data["orchestrator_details"])
            merged.update({k: v for k, v in data.items() if k != "orchestrator_details"})
            return merged
        return data


def lora_list(loras: list[dict[str, Any]] | None, additional: dict[str, float] | None) -> list[dict] | None:
    """The bridge's LoRA list from `loras` and the seed's `additional_loras` mapping."""
    out = [dict(item) for item in (loras or [])]
    for path, multiplier in (additional or {}).items():
        try:
            out.append({"path": str(path), "multiplier": float(multiplier)})
        except (TypeError, ValueError):
            raise InvalidInput(f"additional_loras[{path!r}]: multiplier {multiplier!r} is not a number") from None
    return out or None


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
    loras = lora_list(params.loras, params.additional_loras)
    if loras:
        gp["loras"] = loras
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
