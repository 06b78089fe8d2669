"""Generation params -> a typed, resolved request. Pure: no files, no environment, no models.

`GenerationParams` is the contract callers fill in (handlers pass one; a dict is validated at the
bridge's boundary with `GenerationParams.parse`). `resolve_request(params, catalog, default_engine)`
turns it into a `GenerationRequest` with everything the rest of the pipeline needs decided:

- the model spec (catalog lookup; Wan2GP may pass unknown model types through),
- size and frame count, through `source.video_geometry` (sides to the nearest multiple of 16, frames
  to 4*floor(n/4)+1), every change recorded in `adjustments`,
- sampling settings: model defaults < speed preset (causvid / lightx2v) < explicit params,
- mode checks (an i2v model needs a start image, VACE inputs need a VACE model, ...),
- the seed (-1 draws one; a drawn seed is never cached).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from source.errors import InvalidInput
from source.generation.model_catalog import IMAGE_KINDS, Catalog, ModelSpec, SpeedLora
from source.local_files import LOCAL_FILE
from source.video_geometry import model_resolution, wan_frame_count

ENGINES = ("diffusers", "wan2gp")
# A prompt longer than this is refused: a 1 MB prompt used to run (the text encoder truncates anyway) and
# wrote a 2 MB sidecar. 10,000 characters is far beyond any Wan text encoder's 512-token window.
MAX_PROMPT_CHARS = 10_000
MAX_REF_CHARS = 4096   # a path, URL or Hub id
MAX_NAME_CHARS = 200   # a model or engine name

Prompt = Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
Ref = Annotated[str, StringConstraints(max_length=MAX_REF_CHARS)]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]


def excerpt(value: Any, limit: int = 60) -> str:
    """A short repr for error messages: a row's text may be megabytes long."""
    text = str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


class LoraParam(BaseModel):
    model_config = ConfigDict(extra="ignore")
    path: Annotated[Ref, LOCAL_FILE]
    multiplier: float = Field(1.0, ge=-10, le=10, validation_alias=AliasChoices("multiplier", "strength", "weight"))
    target: str = "both"  # two-expert models: high | low | both

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v not in ("both", "high", "low"):
            raise ValueError("target must be both, high or low")
        return v


class GenerationParams(BaseModel):
    """What a caller asks for. Unknown keys are ignored (seed payloads carry many UI keys)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: Name = "t2v"
    prompt: Prompt = ""
    negative_prompt: Prompt = ""
    resolution: str | None = Field(None, max_length=40)
    video_length: int | None = Field(None, validation_alias=AliasChoices("video_length", "frames"))
    num_inference_steps: int | None = Field(None, ge=1, le=200,
                                            validation_alias=AliasChoices("num_inference_steps", "steps"))
    guidance_scale: float | None = Field(None, ge=0, le=50)
    guidance_scale_2: float | None = Field(None, ge=0, le=50)
    flow_shift: float | None = Field(None, gt=0, le=100)
    seed: int = -1
    image_start: Annotated[Ref | None, LOCAL_FILE] = None
    image_end: Annotated[Ref | None, LOCAL_FILE] = None
    video_guide: Annotated[Ref | None, LOCAL_FILE] = None
    video_mask: Annotated[Ref | None, LOCAL_FILE] = None
    image_refs: Annotated[list[Ref] | None, LOCAL_FILE] = Field(None, max_length=16)
    loras: list[LoraParam] | None = Field(None, max_length=32)
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = Field(False, validation_alias=AliasChoices("use_lighti2x_lora", "use_lightx2v_lora"))
    fps: float | None = Field(None, gt=0, le=240)
    use_cache: bool = True
    engine: Name | None = None  # "diffusers" (default) or "wan2gp"

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < -1 or v >= 2 ** 63:
            raise ValueError("seed must be -1 (random) or a non-negative integer")
        return v

    @classmethod
    def parse(cls, value: GenerationParams | dict[str, Any]) -> GenerationParams:
        """Validate a dict (or pass a GenerationParams through); InvalidInput names every bad field."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise InvalidInput(f"generation params must be an object, got {type(value).__name__}")
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            # pydantic's own text quotes the input value; ours names the field and the rule only
            problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'params'}: {e.get('msg')}"
                                 for e in exc.errors())
            raise InvalidInput(f"invalid generation params: {problems}") from None


@dataclass(frozen=True)
class GenerationRequest:
    """A resolved request: every value the inputs, the cache, the engine and the sidecar use."""

    params: GenerationParams
    engine: str
    spec: ModelSpec
    width: int
    height: int
    frames: int
    fps: float
    steps: int
    guidance: float
    guidance_2: float | None   # None unless the model has two experts (boundary_ratio)
    flow_shift: float
    fixed_sigmas: bool
    preset: SpeedLora | None
    preset_name: str | None
    seed: int
    adjustments: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def cacheable(self) -> bool:
        """A drawn seed gives a new picture every run: only explicit seeds are cached."""
        return self.params.use_cache and self.params.seed >= 0

    def effective(self) -> dict[str, Any]:
        """The settings actually used, for the sidecar."""
        p = self.params
        return {"model": self.spec.name, "kind": self.kind, "width": self.width, "height": self.height,
                "frames": self.frames, "fps": self.fps, "num_inference_steps": self.steps,
                "guidance_scale": self.guidance, "guidance_scale_2": self.guidance_2,
                "flow_shift": self.flow_shift, "fixed_sigmas": self.fixed_sigmas, "speed_preset": self.preset_name,
                "negative_prompt": p.negative_prompt, "prompt": p.prompt}


def resolve_request(params: GenerationParams, catalog: Catalog, *, default_engine: str = "diffusers",
                    rng: random.Random | None = None) -> GenerationRequest:
    """Decide everything about a request before any file is read (see the module docstring)."""
    engine = _engine_name(params.engine or default_engine)
    spec = _model_spec(params.model, catalog, engine)
    adjustments: dict[str, Any] = {}
    width, height = (spec.width, spec.height) if params.resolution is None else \
        model_resolution(params.resolution, adjustments)
    frames = spec.frames if params.video_length is None else wan_frame_count(params.video_length, adjustments)
    preset_name, preset = _speed_preset(params, spec)
    steps = params.num_inference_steps or (preset.steps if preset else spec.steps)
    guidance = _first_set(params.guidance_scale, preset.guidance if preset else spec.guidance)
    guidance_2 = _first_set(params.guidance_scale_2, preset.guidance if preset else None, spec.guidance_2, guidance)
    flow_shift = _first_set(params.flow_shift, preset.flow_shift if preset else spec.flow_shift)
    _check_mode(params, spec)
    seed = params.seed if params.seed >= 0 else (rng or random).randint(0, 2 ** 31 - 1)
    return GenerationRequest(
        params=params, engine=engine, spec=spec, width=width, height=height, frames=frames,
        fps=float(params.fps or spec.fps), steps=steps, guidance=guidance,
        guidance_2=guidance_2 if spec.boundary_ratio is not None else None, flow_shift=flow_shift,
        fixed_sigmas=bool(preset and preset.fixed_sigmas), preset=preset, preset_name=preset_name, seed=seed,
        adjustments=adjustments)


def _engine_name(name: str) -> str:
    name = name.strip().lower()
    if name not in ENGINES:
        raise InvalidInput(f"engine {excerpt(name)} is not one of {', '.join(ENGINES)}")
    return name


def _model_spec(name: str, catalog: Catalog, engine: str) -> ModelSpec:
    if engine != "wan2gp":
        return catalog.resolve(name)
    spec = catalog.lookup(name)
    if spec is None:  # Wan2GP knows model types our catalog does not: pass them through with generic defaults
        kind = "vace" if "vace" in name else ("i2v" if "i2v" in name else "t2v")
        spec = ModelSpec(name=name, kind=kind, repo="wan2gp")
    return spec


def _speed_preset(params: GenerationParams, spec: ModelSpec) -> tuple[str | None, SpeedLora | None]:
    if params.use_lighti2x_lora and params.use_causvid_lora:
        raise InvalidInput("use_causvid_lora and use_lighti2x_lora are alternatives: pick one")
    if not (params.use_causvid_lora or params.use_lighti2x_lora):
        return None, None
    name = "causvid" if params.use_causvid_lora else "lightx2v"
    preset = getattr(spec, name)
    if preset is None:
        raise InvalidInput(f"model {spec.name!r} has no {name} preset; add one in the model catalog or drop the flag")
    return name, preset


def _first_set(*values: Any) -> Any:
    """The first value that is not None: explicit param, then preset, then the model's default."""
    return next((v for v in values if v is not None), None)


def _check_mode(params: GenerationParams, spec: ModelSpec) -> None:
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
