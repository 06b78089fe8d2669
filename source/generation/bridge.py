"""generate_single_video(): one video from a prompt (+ images / control video), through the warm engine.

Steps: normalise params (recorded in `adjustments`), resolve and hash inputs, look up the output cache,
run the pipeline with per-step progress (a cancel request stops it before the next step and nothing is
decoded or written), encode H.264 at the requested fps, write a JSON sidecar, fill the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from source.local_files import LOCAL_FILE
from source.model_files import sha256_of
from source.generation.model_catalog import IMAGE_KINDS, ModelSpec, SpeedLora, load_catalog
from source.errors import InvalidInput
from source.task_context import TaskContext

CACHE_KEY_VERSION = "gen-v1"
MAX_SIDE = 4096
MAX_FRAMES = 1025
MAX_ASPECT_CHANGE = 0.10   # rounding to multiples of 16 may change W/H by at most 10 %
MAX_ASPECT = 4.0           # sides may differ by at most 4x


class LoraParam(BaseModel):
    model_config = ConfigDict(extra="ignore")
    path: Annotated[str, LOCAL_FILE]
    multiplier: float = Field(1.0, ge=-10, le=10, validation_alias=AliasChoices("multiplier", "strength", "weight"))
    target: str = "both"  # two-expert models: high | low | both


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str = "t2v"
    prompt: str = ""
    negative_prompt: str = ""
    resolution: str | None = None
    video_length: int | None = Field(None, validation_alias=AliasChoices("video_length", "frames"))
    num_inference_steps: int | None = Field(None, ge=1, le=200,
                                            validation_alias=AliasChoices("num_inference_steps", "steps"))
    guidance_scale: float | None = Field(None, ge=0, le=50)
    guidance_scale_2: float | None = Field(None, ge=0, le=50)
    flow_shift: float | None = Field(None, gt=0, le=100)
    seed: int = -1
    image_start: Annotated[str | None, LOCAL_FILE] = None
    image_end: Annotated[str | None, LOCAL_FILE] = None
    video_guide: Annotated[str | None, LOCAL_FILE] = None
    video_mask: Annotated[str | None, LOCAL_FILE] = None
    image_refs: Annotated[list[str] | None, LOCAL_FILE] = None
    loras: list[LoraParam] | None = None
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = Field(False, validation_alias=AliasChoices("use_lighti2x_lora", "use_lightx2v_lora"))
    fps: float | None = Field(None, gt=0, le=240)
    use_cache: bool = True
    engine: str | None = None  # "diffusers" (default) or "wan2gp"

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < -1 or v >= 2 ** 63:
            raise ValueError("seed must be -1 (random) or a non-negative integer")
        return v


@dataclass
class GenerationResult:
    video_path: Path
    sidecar_path: Path
    frames: int
    width: int
    height: int
    fps: float
    seed: int
    cache_hit: bool
    adjustments: dict = field(default_factory=dict)


# -- normalisation -----------------------------------------------------------------------------------------
_RES = re.compile(r"^\s*(\d+)\s*[xX*×]\s*(\d+)\s*$")


def _round16(v: int) -> int:
    return max(16, int(round(v / 16.0)) * 16)


def normalise_size(resolution: str | None, spec: ModelSpec, adjustments: dict) -> tuple[int, int]:
    if resolution is None:
        return spec.width, spec.height
    m = _RES.match(str(resolution))
    if not m:
        raise InvalidInput(f"resolution {resolution!r} is not 'WIDTHxHEIGHT' (e.g. '832x480')")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 8 or h < 8:
        raise InvalidInput(f"resolution {w}x{h} is too small (at least 16 pixels a side)")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise InvalidInput(f"resolution {w}x{h} is too large (at most {MAX_SIDE} pixels a side)")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise InvalidInput(f"resolution {w}x{h} has an aspect ratio beyond {MAX_ASPECT:g}:1")
    nw, nh = _round16(w), _round16(h)
    change = abs((nw / nh) / (w / h) - 1.0)
    if change > MAX_ASPECT_CHANGE:
        raise InvalidInput(f"resolution {w}x{h} would become {nw}x{nh} (multiples of 16), changing its aspect "
                           f"ratio by {change:.0%}; ask for a size closer to multiples of 16")
    if (nw, nh) != (w, h):
        adjustments["resolution"] = [f"{w}x{h}", f"{nw}x{nh}"]
    return nw, nh


def normalise_frames(n: int | None, spec: ModelSpec, adjustments: dict) -> int:
    if n is None:
        return spec.frames
    if n < 1:
        raise InvalidInput(f"video_length {n} must be at least 1")
    if n > MAX_FRAMES:
        raise InvalidInput(f"video_length {n} is more than {MAX_FRAMES} frames")
    out = (n // 4) * 4 + 1  # Wan needs 4k+1 frames (1 = a single image)
    if out > MAX_FRAMES:
        out -= 4
    if out != n:
        adjustments["video_length"] = [n, out]
    return out


# -- inputs --------------------------------------------------------------------------------------------------
def _fit_image(arr: np.ndarray, width: int, height: int):
    """Scale to cover (width, height) and centre-crop: no stretching."""
    from PIL import Image, ImageOps

    return ImageOps.fit(Image.fromarray(arr), (width, height), method=Image.LANCZOS, centering=(0.5, 0.5))


def _load_image(ctx: TaskContext, ref: str, what: str, size: tuple[int, int], hashes: dict):
    from source.generation.engine import sha256_file
    from source.media.images import load_image_rgb

    path = ctx.resolve_input(ref, kind=what)
    hashes[what] = {"ref": ref, "sha256": sha256_file(path)}
    return _fit_image(load_image_rgb(path), *size), path


def _load_video(ctx: TaskContext, ref: str, what: str, size: tuple[int, int], frames: int, hashes: dict,
                adjustments: dict, *, mask: bool = False) -> list:
    from PIL import Image

    from source.generation.engine import sha256_file
    from source.media.video_io import iter_frames

    path = ctx.resolve_input(ref, kind=what)
    hashes[what] = {"ref": ref, "sha256": sha256_file(path)}
    out = []
    got = 0
    for arr in iter_frames(path):
        got += 1
        if len(out) < frames:
            im = _fit_image(arr, *size)
            out.append(im.convert("L").point(lambda v: 255 if v >= 128 else 0) if mask else im)
    if not out:
        raise InvalidInput(f"{what} {ref!r} has no frames")
    if got != frames:
        adjustments[f"{what}_frames"] = [got, frames]  # truncated, or padded with its last frame
    while len(out) < frames:
        out.append(out[-1])
    return out


def _resolve_lora(ctx: TaskContext, ref: str) -> Path:
    """A local file for a LoRA given as a path, URL, Hugging Face URL or Hub id ('owner/repo/file.safetensors',
    'hf://owner/repo/file.safetensors' or 'owner/repo:file.safetensors')."""
    from source.generation.engine import hub_file

    ref = ref.strip()
    m = re.match(r"^https?://(?:www\.)?huggingface\.co/([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+?)(?:\?.*)?$", ref)
    if m:
        from source.generation.engine import _classify_hub_error
        from huggingface_hub import hf_hub_download
        from source.generation.engine import hf_cache_dir, hf_token

        try:
            return Path(hf_hub_download(m.group(1), m.group(3), revision=m.group(2), cache_dir=hf_cache_dir(),
                                        token=hf_token()))
        except Exception as exc:  # noqa: BLE001
            raise _classify_hub_error(exc, f"LoRA {ref}") from None
    if ref.startswith("hf://"):
        parts = ref[5:].split("/", 2)
        if len(parts) < 3:
            raise InvalidInput(f"LoRA {ref!r}: expected hf://owner/repo/path/to/file.safetensors")
        return hub_file(f"{parts[0]}/{parts[1]}", parts[2])
    m = re.match(r"^([\w.-]+/[\w.-]+):(.+)$", ref)
    if m and not ref.startswith("/"):
        return hub_file(m.group(1), m.group(2))
    trusted = lora_dirs()
    local = Path(ref).expanduser()
    for root in trusted:  # the model cache and $HEADLESS_LORA_DIR are trusted; bare names are looked up there
        cand = (local if local.is_absolute() else root / local).resolve()
        if cand.is_relative_to(root.resolve()) and cand.is_file():
            return cand
    try:
        return ctx.resolve_input(ref, kind="LoRA")
    except InvalidInput:
        m = re.match(r"^([\w.-]+)/([\w.-]+)/(.+\.(?:safetensors|bin|pt|pth|ckpt))$", ref)
        if m and not Path(ref).is_absolute():
            return hub_file(f"{m.group(1)}/{m.group(2)}", m.group(3))
        raise


def lora_dirs() -> list[Path]:
    from source.generation.tiny_models import model_cache_dir

    dirs = [model_cache_dir()]
    if os.environ.get("HEADLESS_LORA_DIR"):
        dirs.insert(0, Path(os.environ["HEADLESS_LORA_DIR"]).expanduser())
    return dirs


# -- main entry ----------------------------------------------------------------------------------------------
def _progress(ctx: TaskContext, fraction: float, message: str) -> None:
    ctx.progress(fraction, message)


def _cache_key(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def generate_single_video(ctx: TaskContext, params: GenerationParams | dict, *,
                          output_path: Path | None = None) -> GenerationResult:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if isinstance(params, dict):
        try:
            params = GenerationParams.model_validate(params)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'params'}: {e.get('msg')}"
                                 for e in exc.errors())
            raise InvalidInput(f"invalid generation params: {problems}") from None
    engine_name = (params.engine or os.environ.get("HEADLESS_ENGINE") or "diffusers").strip().lower()
    if engine_name not in ("diffusers", "wan2gp"):
        raise InvalidInput(f"engine {engine_name!r} is not one of diffusers, wan2gp")

    catalog = load_catalog()
    spec = catalog.lookup(params.model) if engine_name == "wan2gp" else catalog.resolve(params.model)
    if spec is None:  # Wan2GP knows model types our catalog does not: pass them through with generic defaults
        spec = ModelSpec(name=params.model, kind="vace" if "vace" in params.model else
                         ("i2v" if "i2v" in params.model else "t2v"), repo="wan2gp")
    adjustments: dict[str, Any] = {}
    width, height = normalise_size(params.resolution, spec, adjustments)
    frames = normalise_frames(params.video_length, spec, adjustments)
    fps = float(params.fps or spec.fps)

    # sampling settings: model defaults < speed preset < explicit params
    preset: SpeedLora | None = None
    preset_name = None
    if params.use_lighti2x_lora and params.use_causvid_lora:
        raise InvalidInput("use_causvid_lora and use_lighti2x_lora are alternatives: pick one")
    if params.use_causvid_lora or params.use_lighti2x_lora:
        preset_name = "causvid" if params.use_causvid_lora else "lightx2v"
        preset = getattr(spec, preset_name)
        if preset is None:
            raise InvalidInput(f"model {spec.name!r} has no {preset_name} preset; add one in the model catalog "
                               f"or drop the flag")
    steps = params.num_inference_steps or (preset.steps if preset else spec.steps)
    guidance = params.guidance_scale if params.guidance_scale is not None else (
        preset.guidance if preset else spec.guidance)
    guidance_2 = params.guidance_scale_2 if params.guidance_scale_2 is not None else (
        preset.guidance if preset else (spec.guidance_2 if spec.guidance_2 is not None else guidance))
    flow_shift = params.flow_shift if params.flow_shift is not None else (
        preset.flow_shift if preset else spec.flow_shift)
    fixed_sigmas = bool(preset and preset.fixed_sigmas)

    # mode checks
    kind = spec.kind
    if kind in IMAGE_KINDS and not params.image_start:
        raise InvalidInput(f"model {spec.name!r} is image-to-video: give image_start (the first frame)")
    if kind in ("t2v", "t2v22") and (params.image_start or params.image_end):
        raise InvalidInput(f"model {spec.name!r} is text-to-video and takes no images; use an i2v, flf2v or vace "
                           f"model for image_start/image_end")
    if kind != "vace" and (params.video_guide or params.video_mask or params.image_refs):
        raise InvalidInput(f"video_guide, video_mask and image_refs need a VACE model (e.g. vace_14B), "
                           f"not {spec.name!r}")
    if kind == "ti2v" and params.image_end:
        raise InvalidInput(f"model {spec.name!r} takes a start image only, not image_end")

    seed = params.seed if params.seed >= 0 else random.randint(0, 2 ** 31 - 1)

    # inputs
    t0 = time.perf_counter()
    hashes: dict[str, Any] = {}
    size = (width, height)
    call: dict[str, Any] = dict(prompt=params.prompt, negative_prompt=params.negative_prompt or None,
                                height=height, width=width, num_frames=frames, num_inference_steps=steps,
                                guidance_scale=guidance, max_sequence_length=spec.max_sequence_length)
    if spec.boundary_ratio is not None:
        call["guidance_scale_2"] = guidance_2
    input_paths: dict[str, Any] = {}
    if engine_name == "diffusers":
        start_img = end_img = None
        if params.image_start:
            start_img, input_paths["image_start"] = _load_image(ctx, params.image_start, "image_start", size, hashes)
        if params.image_end:
            end_img, input_paths["image_end"] = _load_image(ctx, params.image_end, "image_end", size, hashes)
        if kind in ("i2v", "flf2v", "i2v22", "ti2v") and start_img is not None:
            call["image"] = start_img
            if end_img is not None:
                call["last_image"] = end_img
        if kind == "vace":
            _vace_inputs(ctx, params, call, size, frames, hashes, adjustments, start_img, end_img)
    else:
        for what in ("image_start", "image_end", "video_guide", "video_mask"):
            ref = getattr(params, what)
            if ref:
                from source.generation.engine import sha256_file

                p = ctx.resolve_input(ref, kind=what)
                hashes[what] = {"ref": ref, "sha256": sha256_file(p)}
                input_paths[what] = p
        if params.image_refs:
            from source.generation.engine import sha256_file

            input_paths["image_refs"] = []
            for i, ref in enumerate(params.image_refs):
                p = ctx.resolve_input(ref, kind=f"image_refs[{i}]")
                hashes[f"image_refs[{i}]"] = {"ref": ref, "sha256": sha256_file(p)}
                input_paths["image_refs"].append(p)

    # LoRAs (hashes are part of the cache key)
    from source.generation.engine import LoraRequest, sha256_file

    lora_requests: list[LoraRequest] = []
    for lp in params.loras or []:
        if lp.target not in ("both", "high", "low"):
            raise InvalidInput(f"LoRA {lp.path!r}: target must be both, high or low")
        path = _resolve_lora(ctx, lp.path)
        lora_requests.append(LoraRequest(path=Path(path), multiplier=lp.multiplier, sha256=sha256_file(path),
                                         target=lp.target, ref=lp.path))
    timings["inputs_s"] = time.perf_counter() - t0

    # the output cache: everything that changes the pixels
    model_revision = spec.revision
    cache_payload = None
    if engine_name == "diffusers":
        from source.generation.engine import get_engine

        engine = get_engine()
        model_revision = _revision_for_key(engine, spec)
    cache_payload = {
        "v": CACHE_KEY_VERSION, "engine": engine_name, "model": spec.source, "kind": kind,
        "revision": model_revision, "prompt": params.prompt, "negative_prompt": params.negative_prompt,
        "width": width, "height": height, "frames": frames, "steps": steps, "guidance": guidance,
        "guidance_2": guidance_2 if spec.boundary_ratio is not None else None, "flow_shift": flow_shift,
        "fixed_sigmas": fixed_sigmas, "seed": seed, "fps": fps, "preset": preset_name,
        "preset_lora": [preset.repo, preset.filename, preset.filename_2, preset.multiplier] if preset else None,
        "inputs": {k: v["sha256"] for k, v in sorted(hashes.items())},
        "loras": [[r.sha256, r.multiplier, r.target] for r in lora_requests],
        "max_sequence_length": spec.max_sequence_length, "boundary_ratio": spec.boundary_ratio,
    }
    cache_key = _cache_key(cache_payload)
    cacheable = params.use_cache and params.seed >= 0
    if output_path is None:
        output_path = ctx.output_path(".mp4", stem="video")
    output_path = Path(output_path)
    sidecar_path = output_path.with_suffix(".json")

    base_record = {
        "params": params.model_dump(mode="json"),
        "effective": {"model": spec.name, "kind": kind, "width": width, "height": height, "frames": frames,
                      "fps": fps, "num_inference_steps": steps, "guidance_scale": guidance,
                      "guidance_scale_2": guidance_2 if spec.boundary_ratio is not None else None,
                      "flow_shift": flow_shift, "fixed_sigmas": fixed_sigmas, "speed_preset": preset_name,
                      "negative_prompt": params.negative_prompt, "prompt": params.prompt},
        "seed": seed, "adjustments": adjustments, "inputs": hashes,
        "loras": [{"ref": r.ref, "sha256": r.sha256, "multiplier": r.multiplier, "target": r.target}
                  for r in lora_requests],
        "model": {"name": spec.name, "source": spec.source, "repo": spec.repo, "path": spec.path,
                  "revision": model_revision, "kind": kind},
        "engine": engine_name, "cache_key": cache_key, "task_id": ctx.task_id,
    }

    if cacheable:
        t0 = time.perf_counter()
        hit = _try_cache(ctx, cache_key, output_path)
        if hit is not None:
            info, source_location = hit
            timings["cache_lookup_s"] = time.perf_counter() - t0
            timings["total_s"] = time.perf_counter() - t_start
            ctx.log("cache_hit", key=cache_key, source=source_location, seconds=round(timings["total_s"], 4))
            record = dict(base_record, cache_hit=True, cached_from=source_location, timings=_round(timings),
                          versions=_versions(), output={"frames": info.frames, "width": info.width,
                                                        "height": info.height, "fps": fps})
            _atomic_json(sidecar_path, record)
            ctx.progress(1.0, "cache hit")
            return GenerationResult(output_path, sidecar_path, info.frames, info.width, info.height, fps, seed,
                                    True, adjustments)

    _progress(ctx, 0.0, f"loading {spec.name}")
    if engine_name == "wan2gp":
        from source.generation import wan2gp_engine

        t0 = time.perf_counter()
        video = wan2gp_engine.generate(ctx, spec_name=params.model, spec=spec, prompt=params.prompt,
                                       negative_prompt=params.negative_prompt, width=width, height=height,
                                       frames=frames, steps=steps, guidance=guidance, guidance_2=guidance_2,
                                       flow_shift=flow_shift, seed=seed, fps=fps, inputs=input_paths,
                                       loras=lora_requests, output_path=output_path)
        timings["generate_s"] = time.perf_counter() - t0
        from source.media.video_io import probe_video

        info = probe_video(video)
        out_frames, out_w, out_h = info.frames, info.width, info.height
        runtime = {"engine": "wan2gp"}
    else:
        t0 = time.perf_counter()
        loaded_before = engine.load_count
        m = engine.ensure(spec, log=ctx.log)
        timings["load_s"] = time.perf_counter() - t0 if engine.load_count != loaded_before else 0.0
        model_revision = m.revision
        base_record["model"]["revision"] = m.revision
        ctx.check_cancelled()
        t0 = time.perf_counter()
        if preset is not None:
            for path, target, ref in engine.speed_lora_files(preset):
                lora_requests.append(LoraRequest(path=Path(path), multiplier=preset.multiplier,
                                                 sha256=sha256_file(path), target=target, ref=ref))
                base_record["loras"].append({"ref": ref, "sha256": lora_requests[-1].sha256,
                                             "multiplier": preset.multiplier, "target": target, "preset": preset_name})
        engine.apply_loras(lora_requests)
        timings["loras_s"] = time.perf_counter() - t0

        def on_step(k: int, n: int) -> None:
            ctx.progress(0.05 + 0.85 * k / max(n, 1), f"step {k} of {n}")

        _progress(ctx, 0.05, f"step 0 of {steps}")
        t0 = time.perf_counter()
        arr = engine.generate(call, seed=seed, flow_shift=flow_shift, fixed_sigmas=fixed_sigmas, on_step=on_step,
                              image_pipeline="image" in call)
        timings["generate_s"] = time.perf_counter() - t0
        ctx.check_cancelled()
        _progress(ctx, 0.92, "encoding")
        t0 = time.perf_counter()
        out_frames, out_h, out_w = int(arr.shape[0]), int(arr.shape[1]), int(arr.shape[2])
        _encode(arr, output_path, fps)
        timings["encode_s"] = time.perf_counter() - t0
        runtime = {"device": m.device, "dtype": m.dtype, "memory": m.memory, "load_count": engine.load_count}

    t0 = time.perf_counter()
    timings["total_s"] = time.perf_counter() - t_start
    record = dict(base_record, cache_hit=False, timings=_round(timings), versions=_versions(), runtime=runtime,
                  output={"frames": out_frames, "width": out_w, "height": out_h, "fps": fps,
                          "sha256": sha256_of(output_path)})
    _atomic_json(sidecar_path, record)
    if cacheable:
        try:
            ctx.cache_put(cache_key, ctx.location_for(_keep_for_cache(ctx, cache_key, output_path)))
        except Exception as exc:  # noqa: BLE001 - a cache write failure must not fail a finished video
            ctx.log("cache_put_failed", key=cache_key, error=str(exc)[:300])
    timings["sidecar_s"] = time.perf_counter() - t0
    ctx.progress(1.0, "done")
    return GenerationResult(output_path, sidecar_path, out_frames, out_w, out_h, fps, seed, False, adjustments)


def _vace_inputs(ctx, params, call, size, frames, hashes, adjustments, start_img, end_img) -> None:
    from PIL import Image

    width, height = size
    video = mask = None
    if params.video_guide:
        video = _load_video(ctx, params.video_guide, "video_guide", size, frames, hashes, adjustments)
    if params.video_mask:
        mask = _load_video(ctx, params.video_mask, "video_mask", size, frames, hashes, adjustments, mask=True)
    if start_img is not None or end_img is not None:
        # VACE first/last frame: grey in-between frames; the mask keeps (black) the given frames
        grey = Image.new("RGB", (width, height), (128, 128, 128))
        white = Image.new("L", (width, height), 255)
        black = Image.new("L", (width, height), 0)
        video = video or [grey] * frames
        mask = mask or [white] * frames
        video, mask = list(video), list(mask)
        if start_img is not None:
            video[0], mask[0] = start_img, black
        if end_img is not None and frames > 1:
            video[-1], mask[-1] = end_img, black
    if video is not None:
        call["video"] = video
    if mask is not None:
        if video is None:
            call["video"] = [Image.new("RGB", (width, height), (0, 0, 0))] * frames
        call["mask"] = mask
    if params.image_refs:
        refs = []
        for i, ref in enumerate(params.image_refs):
            img, _ = _load_image(ctx, ref, f"image_refs[{i}]", size, hashes)
            refs.append(img)
        call["reference_images"] = refs


def _revision_for_key(engine, spec: ModelSpec) -> str | None:
    if engine.model is not None and engine.model.spec.name == spec.name and engine.model.spec.source == spec.source:
        return engine.model.revision
    if spec.tiny and not spec.path and not spec.repo:
        from source.generation.tiny_models import RECIPE_VERSION

        return RECIPE_VERSION
    if spec.path:
        from source.generation.engine import _folder_fingerprint

        return spec.revision or ("local:" + _folder_fingerprint(Path(spec.path)))
    # a Hub repo already in the local cache: the commit its snapshot folder is named after
    try:
        from huggingface_hub import try_to_load_from_cache

        from source.generation.engine import hf_cache_dir

        hit = try_to_load_from_cache(spec.repo, "model_index.json", revision=spec.revision,
                                     cache_dir=hf_cache_dir())
        if isinstance(hit, str):
            commit = Path(hit).parent.name
            if len(commit) == 40:
                return commit
    except Exception:  # noqa: BLE001
        pass
    return spec.revision or "main"


def _keep_for_cache(ctx: TaskContext, key: str, output_path: Path) -> Path:
    """The cached copy lives under `<files dir>/.cache/`, so it outlives the task's scratch folder (callers
    that post-process, like travel segments, generate into one). A hard link costs no space; across
    file systems it is copied."""
    cached = ctx.storage.files_dir / ".cache" / f"{key}{output_path.suffix}"
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    try:
        os.link(output_path, tmp)
    except OSError:
        shutil.copyfile(output_path, tmp)
    os.replace(tmp, cached)
    return cached


def _try_cache(ctx: TaskContext, key: str, output_path: Path):
    try:
        location = ctx.cache_get(key)
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation
        ctx.log("cache_get_failed", key=key, error=str(exc)[:300])
        return None
    if not location:
        return None
    try:
        source = ctx.resolve_input(location, kind="cached video")
    except InvalidInput:
        ctx.log("cache_stale", key=key, location=location)
        return None
    from source.media.video_io import probe_video

    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != output_path.resolve():
            tmp = output_path.with_name(f".{output_path.name}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, output_path)
        info = probe_video(output_path, count=False)
        if not info.frames:
            info = probe_video(output_path)
    except (OSError, InvalidInput) as exc:
        ctx.log("cache_stale", key=key, location=location, error=str(exc)[:200])
        return None
    return info, location


def _encode(frames: np.ndarray, path: Path, fps: float) -> None:
    from source.media.video_io import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    with VideoWriter(tmp, fps=fps) as writer:
        u8 = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        for frame in u8:
            writer.write(frame)
    os.replace(tmp, path)


_versions_memo: dict | None = None


def _versions() -> dict:
    global _versions_memo
    if _versions_memo is None:
        from source.generation.engine import library_versions

        _versions_memo = library_versions()
    return _versions_memo


def _round(t: dict) -> dict:
    return {k: round(v, 4) for k, v in t.items()}
