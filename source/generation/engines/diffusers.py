"""The default engine: diffusers Wan pipelines, kept warm by `source.generation.engine` (one per process).

This adapter is the only place that knows the pipelines' call signature: it turns a request and its
decoded inputs into the keyword arguments of WanPipeline / WanImageToVideoPipeline / WanVACEPipeline,
applies the request's LoRAs (plus a speed preset's files) and runs the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from source.generation.engines.protocol import Loaded, Rendered, StepCallback
from source.generation.inputs import Inputs, sha256_file
from source.generation.model_catalog import ModelSpec
from source.generation.request import GenerationRequest

IMAGE_CONDITIONED = ("i2v", "flf2v", "i2v22", "ti2v")


class DiffusersEngine:
    name = "diffusers"
    decodes_inputs = True

    def __init__(self) -> None:
        from source.generation.engine import get_engine

        self.engine = get_engine()

    def revision(self, spec: ModelSpec) -> str | None:
        """The loaded model's revision when it is this spec, else the best answer without loading it."""
        loaded = self.engine.model
        if loaded is not None and loaded.spec.name == spec.name and loaded.spec.source == spec.source:
            return loaded.revision
        if spec.tiny and not spec.path and not spec.repo:
            from source.generation.tiny_models import RECIPE_VERSION

            return RECIPE_VERSION
        if spec.path:
            from source.generation.engine import _folder_fingerprint

            return spec.revision or ("local:" + _folder_fingerprint(Path(spec.path)))
        return _cached_hub_commit(spec) or spec.revision or "main"

    def load(self, spec: ModelSpec, log: Callable[..., None]) -> Loaded:
        t0 = time.perf_counter()
        before = self.engine.load_count
        model = self.engine.ensure(spec, log=log)
        return Loaded(model.revision, time.perf_counter() - t0 if self.engine.load_count != before else 0.0)

    def render(self, request: GenerationRequest, inputs: Inputs, *, on_step: StepCallback,
               is_cancelled: Callable[[], bool], work_dir: Callable[[], Path], output_path: Path) -> Rendered:
        t0 = time.perf_counter()
        loras, extra = self._loras(request, inputs)
        self.engine.apply_loras(loras)
        t1 = time.perf_counter()
        call = pipeline_call(request, inputs)
        frames = self.engine.generate(call, seed=request.seed, flow_shift=request.flow_shift,
                                      fixed_sigmas=request.fixed_sigmas, on_step=on_step,
                                      image_pipeline="image" in call)
        m = self.engine.model
        return Rendered(frames=frames, extra_loras=extra,
                        runtime={"device": m.device, "dtype": m.dtype, "memory": m.memory,
                                 "load_count": self.engine.load_count},
                        timings={"loras_s": t1 - t0, "generate_s": time.perf_counter() - t1})

    def _loras(self, request: GenerationRequest, inputs: Inputs):
        """The request's LoRAs plus its speed preset's file(s) (which depend on the loaded model's experts)."""
        from source.generation.engine import LoraRequest

        loras, extra = list(inputs.loras), []
        preset = request.preset
        if preset is not None:
            for path, target, ref in self.engine.speed_lora_files(preset):
                lora = LoraRequest(path=Path(path), multiplier=preset.multiplier, sha256=sha256_file(path),
                                   target=target, ref=ref)
                loras.append(lora)
                extra.append({"ref": ref, "sha256": lora.sha256, "multiplier": preset.multiplier, "target": target,
                              "preset": request.preset_name})
        return loras, extra


def pipeline_call(request: GenerationRequest, inputs: Inputs) -> dict[str, Any]:
    """The Wan pipeline's keyword arguments for a request."""
    p, spec, px = request.params, request.spec, inputs.pixels
    call: dict[str, Any] = dict(prompt=p.prompt, negative_prompt=p.negative_prompt or None, height=request.height,
                                width=request.width, num_frames=request.frames, num_inference_steps=request.steps,
                                guidance_scale=request.guidance, max_sequence_length=spec.max_sequence_length)
    if spec.boundary_ratio is not None:
        call["guidance_scale_2"] = request.guidance_2
    if request.kind in IMAGE_CONDITIONED and px.get("start_image") is not None:
        call["image"] = px["start_image"]
        if px.get("end_image") is not None:
            call["last_image"] = px["end_image"]
    if request.kind == "vace":
        call.update(_vace_call(request, px))
    return call


def _vace_call(request: GenerationRequest, px: dict[str, Any]) -> dict[str, Any]:
    """VACE conditioning: control video + mask (white = generate); start / end images become the first /
    last frame of the control video, kept by a black mask, with grey frames in between."""
    from PIL import Image

    width, height, frames = request.width, request.height, request.frames
    video, mask = px.get("guide"), px.get("mask")
    start, end = px.get("start_image"), px.get("end_image")
    if start is not None or end is not None:
        video = list(video or [Image.new("RGB", (width, height), (128, 128, 128))] * frames)
        mask = list(mask or [Image.new("L", (width, height), 255)] * frames)
        black = Image.new("L", (width, height), 0)
        if start is not None:
            video[0], mask[0] = start, black
        if end is not None and frames > 1:
            video[-1], mask[-1] = end, black
    call: dict[str, Any] = {}
    if video is not None:
        call["video"] = video
    if mask is not None:
        if video is None:
            call["video"] = [Image.new("RGB", (width, height), (0, 0, 0))] * frames
        call["mask"] = mask
    if px.get("reference_images"):
        call["reference_images"] = px["reference_images"]
    return call


def _cached_hub_commit(spec: ModelSpec) -> str | None:
    """A Hub repo already in the local cache: the commit its snapshot folder is named after."""
    try:
        from huggingface_hub import try_to_load_from_cache

        from source.generation.hub import hf_cache_dir

        hit = try_to_load_from_cache(spec.repo, "model_index.json", revision=spec.revision, cache_dir=hf_cache_dir())
        if isinstance(hit, str) and len(Path(hit).parent.name) == 40:
            return Path(hit).parent.name
    except Exception:  # noqa: BLE001 - only a better cache key; the fallback is the catalog's revision
        pass
    return None
