"""Planning a "travel between images" job: payload models, validation and frame arithmetic.

Two payload shapes are accepted and normalised into one `TravelPlan`:

- the seed's: task type `travel_orchestrator`, `params.orchestrator_details` with the client-expanded
  per-segment arrays (`base_prompts_expanded`, `segment_frames_expanded`, `frame_overlap_expanded`, ...);
  unknown keys are accepted and ignored;
- the canonical one: task type `travel_between_images`, flat params (`images`, `prompts`/`prompt`,
  `frames`, `overlap`, `resolution`, `model`, `seed`, `mode`, ...); single values apply to every segment.

Frame arithmetic (one place, used by the orchestrator, the segments and the stitch):

- a segment's length L is quantised to 4n+1 and the resolution to multiples of 16 by the one home of those
  rules, source.video_geometry (`4*floor(L/4)+1`: 80->81, 83->81, 84->85; 830x480 -> 832x480); every
  change is recorded in `TravelPlan.adjustments` as {what: [asked, used]} and ends up in the result;
- N segments need N+1 anchor images (N when continuing a video: image i ends segment i). One image fewer is
  accepted, as the seed ran it: the last segment has no end image and continues freely from its start
  (its guide ends in grey frames the mask leaves to the model; an I2V model gets its start image only; a
  first-last-frame model cannot do without the end image and is refused). Extra images are not used (recorded).
  So a single image makes a valid one-segment travel;
- there is exactly one overlap per join: N-1 joins from scratch, N when continuing a video (the continued
  video is "segment -1" with its real frame count; the seed kept only N-1 there, bug E.17);
- chained (VACE) overlaps are even; every overlap is at most the length of both its neighbours, and a
  segment's two overlaps together never exceed its length (cross-fades never overlap each other);
- the final video has exactly sum(lengths) - sum(overlaps) frames (`TravelPlan.expected_final_frames`).

The seed's payload is treated leniently, as the seed did (odd overlaps rounded down, overlaps clamped to
their neighbours); the canonical payload is checked strictly, with a message for every mistake.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from source.errors import InvalidInput
from source.local_files import LOCAL_FILE, LocalFile
from source.video_geometry import model_resolution, wan_frame_count

MIN_SEGMENT_FRAMES = 5
MAX_SEGMENT_FRAMES = 1025
MAX_SEGMENTS = 512
DEFAULT_FPS = 16.0
DEFAULT_SEED_BASE = 12345  # the seed's default

Mode = Literal["chained", "independent"]


# ----------------------------------------------------------------------------------------- arithmetic
def clamp_overlaps(lengths: Sequence[int], overlaps: Sequence[int], *, even: bool = True) -> list[int]:
    """Lenient overlap quantisation (the seed's, made consistent): one overlap per join between
    consecutive `lengths`; each is made >= 0, even (when `even`), at most both neighbours' lengths,
    and small enough that a segment's incoming and outgoing overlaps together fit in it."""
    if len(overlaps) != max(0, len(lengths) - 1):
        raise ValueError(f"need {max(0, len(lengths) - 1)} overlaps for {len(lengths)} videos, got {len(overlaps)}")
    out: list[int] = []
    for i, raw in enumerate(overlaps):
        o = max(0, int(raw))
        if even:
            o -= o % 2
        room_left = lengths[i] - (out[i - 1] if i > 0 else 0)
        o = min(o, room_left, lengths[i + 1])
        if even:
            o -= o % 2
        out.append(max(0, o))
    return out


def final_length(lengths: Sequence[int], overlaps: Sequence[int]) -> int:
    return int(sum(lengths)) - int(sum(overlaps))


def parse_resolution(value: Any, *, what: str = "resolution") -> tuple[int, int]:
    """'WxH' (or [W, H]) -> the size the model renders (source.video_geometry, nearest multiples of 16)."""
    return model_resolution(value, what=what)


def check_model(model: str, *, what: str = "model", kinds: Sequence[str] | None = None, hint: str = "") -> None:
    """Fail an orchestrator (not its children later) for a model the catalog does not know, or one of the
    wrong kind. The Wan2GP engine passes unknown model types through, so it is not checked there."""
    from source.settings import settings

    engine = settings().engine
    if engine == "wan2gp":
        return
    from source.generation.model_catalog import load_catalog

    try:
        spec = load_catalog().resolve(model)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc}") from None
    if kinds is not None and spec.kind not in kinds:
        raise InvalidInput(f"{what} {model!r} is a {spec.kind} model; {hint or 'it cannot do this step'} "
                           f"(kinds that can: {', '.join(kinds)})")


# ----------------------------------------------------------------------------------------- models
def infer_mode(model: str) -> Mode | None:
    """chained for VACE models, independent for first-last-frame capable ones (FLF2V, I2V), else None.
    Uses the model catalog's kind when the name is known there, else the name itself."""
    try:
        from source.generation.model_catalog import load_catalog

        spec = load_catalog().lookup(model)
    except Exception:  # noqa: BLE001 - a broken user catalog file: fall back to the name (the bridge reports the error)
        spec = None
    if spec is not None:
        if spec.kind == "vace":
            return "chained"
        if spec.kind in ("flf2v", "i2v", "i2v22"):
            return "independent"
        return None
    name = model.lower()
    if "vace" in name:
        return "chained"
    if "flf2v" in name or "i2v" in name:
        return "independent"
    return None


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SeedOrchestratorDetails(_Loose):
    """`params.orchestrator_details` of the seed's `travel_orchestrator` (unknown keys are kept, unused)."""

    run_id: str | None = None
    input_image_paths_resolved: Annotated[list[str], LOCAL_FILE]
    num_new_segments_to_generate: int
    base_prompts_expanded: list[str] | None = None
    negative_prompts_expanded: list[str] | None = None
    segment_frames_expanded: list[int]
    frame_overlap_expanded: list[int] = Field(default_factory=list)
    parsed_resolution_wh: str
    model_name: str
    seed_base: int = DEFAULT_SEED_BASE
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = False
    additional_loras: dict[str, float] | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    flow_shift: float | None = None
    fps_helpers: float = DEFAULT_FPS
    continue_from_video_resolved_path: Annotated[str | None, LOCAL_FILE] = None
    subsequent_starting_strength_adjustment: float = 0.0
    desaturate_subsequent_starting_frames: float = 0.0
    adjust_brightness_subsequent_starting_frames: float = 0.0
    colour_match_videos: bool | None = None
    crossfade_sharp_amt: float = 0.3
    upscale_factor: float = 0.0
    vace_image_refs_to_prepare_by_headless: list[dict[str, Any]] | None = None
    debug_mode_enabled: bool = False
    skip_cleanup_enabled: bool = False
    travel_mode: str | None = None  # the peer's later "chained" / "independent" choice


class SeedTravelParams(_Loose):
    orchestrator_details: SeedOrchestratorDetails


IntOrList = int | list[int]
StrOrList = str | list[str]


class TravelParams(_Loose):
    """Canonical `travel_between_images` params. Per-segment values take one value (for all) or a list."""

    images: Annotated[list[str], LOCAL_FILE]
    num_segments: int | None = None  # default: one per pair of images (one per image when continuing)
    prompts: StrOrList | None = None
    prompt: str | None = None
    negative_prompts: StrOrList | None = None
    negative_prompt: str | None = None
    frames: IntOrList = 81
    overlap: IntOrList | None = None  # default: 8 chained, 1 independent (the shared anchor frame)
    resolution: str | list[int] = "832x480"
    model: str = "vace_14B"
    seed: IntOrList = DEFAULT_SEED_BASE  # an int: segment i uses seed + i (-1: random per segment)
    mode: Mode | None = None  # default: from the model (VACE -> chained, FLF2V/I2V -> independent)
    fps: float = DEFAULT_FPS
    colour_match: bool = True
    continue_from_video: Annotated[str | None, LOCAL_FILE] = None
    fps_multiplier: int = 1
    upscale_to: str | None = None
    sharpen: float = 0.0
    keep_intermediates: bool = False
    steps: int | None = Field(None, alias="num_inference_steps")
    guidance_scale: float | None = None
    flow_shift: float | None = None
    loras: Annotated[list[dict[str, Any]] | None, LocalFile(key="path")] = None
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = False
    image_refs: Annotated[list[str] | None, LOCAL_FILE] = None
    run_id: str | None = None

    @field_validator("model")
    @classmethod
    def _model_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model must not be empty")
        return v.strip()


# ----------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class SegmentPlan:
    index: int
    key: str                      # child key: "seg-000", ...
    frames: int                   # planned length (4n+1)
    overlap_prev: int             # frames shared with the previous segment (or the continued video)
    overlap_next: int             # frames shared with the next segment
    prompt: str
    negative_prompt: str
    seed: int
    start_image: str | None       # None: starts from the continued video's last frame
    end_image: str | None         # None: the last segment continues freely (one image fewer than segments+1)
    image_refs: tuple[str, ...] = ()


@dataclass
class TravelPlan:
    mode: Mode
    model: str
    resolution: tuple[int, int]
    fps: float
    images: list[str]
    segments: list[SegmentPlan]
    overlaps: list[int]                   # one per join, the continued video's join first
    continue_from_video: str | None = None
    continue_frames: int | None = None
    colour_match: bool = True
    sharpen: float = 0.0
    fps_multiplier: int = 1
    upscale_to: tuple[int, int] | None = None
    keep_intermediates: bool = False
    run_id: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)  # steps, guidance, LoRAs... for every segment
    guide_adjustments: dict[str, float] = field(default_factory=dict)
    adjustments: dict[str, Any] = field(default_factory=dict)  # {what: [asked, used]}, recorded in the result
    source_format: str = "canonical"

    @property
    def lengths(self) -> list[int]:
        """Every piece the stitch joins, in order: the continued video (if any), then each segment."""
        head = [self.continue_frames] if self.continue_from_video else []
        return head + [s.frames for s in self.segments]

    @property
    def expected_final_frames(self) -> int:
        return final_length(self.lengths, self.overlaps)

    @property
    def expected_output_frames(self) -> int:
        """Frames of the delivered video: RIFE fps upsampling turns n frames into (n-1)*m+1."""
        n = self.expected_final_frames
        return (n - 1) * self.fps_multiplier + 1 if n > 0 else 0

    @property
    def num_segments(self) -> int:
        return len(self.segments)


def _expand(name: str, value: Any, n: int, problems: list[str], *, default: Any = None) -> list[Any]:
    """A single value or a one-item list -> n copies; a list of n -> itself; anything else is a problem."""
    if value is None:
        return [default] * n
    if not isinstance(value, list):
        return [value] * n
    if len(value) == n:
        return list(value)
    if len(value) == 1:
        return list(value) * n
    plural = "segment" if n == 1 else "segments"
    problems.append(f"{name} has {len(value)} values but there {'is' if n == 1 else 'are'} {n} {plural} "
                    f"(give {'1 value' if n == 1 else f'1 value or {n}'})")
    return [value[0] if value else default] * n


def _overlaps_for_joins(name: str, value: Any, joins: int, n: int, problems: list[str], *, lenient: bool,
                        default: int) -> list[int]:
    if value is None:
        return [default] * joins
    if not isinstance(value, list):
        return [value] * joins
    if len(value) == joins:
        return list(value)
    if len(value) == 1:
        return list(value) * joins
    if lenient and len(value) == joins + 1 and joins == n - 1:
        return list(value[:joins])  # the seed's clients sent one per segment; the last one is unused
    hint = f"give 1 value or {joins}" if joins > 1 else ("give 1 value" if joins == 1 else "give none")
    problems.append(f"{name} has {len(value)} values but there {'is' if joins == 1 else 'are'} {joins} "
                    f"join{'' if joins == 1 else 's'} between the {'continued video and ' if joins == n else ''}"
                    f"{n} segment{'' if n == 1 else 's'} ({hint})")
    return [value[0] if value else default] * joins


def _seed_list(seed: Any, n: int, problems: list[str]) -> list[int]:
    if isinstance(seed, list):
        seeds = _expand("seed", seed, n, problems, default=-1)
        if len(seed) == 1 and n > 1 and seed[0] != -1:
            seeds = [seed[0] + i for i in range(n)]
        return [int(s) for s in seeds]
    seed = int(seed)
    return [seed if seed < 0 else seed + i for i in range(n)]


def _check_lengths(raw: list[Any], problems: list[str], adjustments: dict, what: str) -> list[int]:
    lengths = []
    for i, value in enumerate(raw):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"frames of segment {i} must be a whole number, got {value!r}")
            lengths.append(MIN_SEGMENT_FRAMES)
            continue
        if value < MIN_SEGMENT_FRAMES:
            problems.append(f"frames of segment {i} is {value}; a segment needs at least {MIN_SEGMENT_FRAMES} frames")
        elif value > MAX_SEGMENT_FRAMES:
            problems.append(f"frames of segment {i} is {value}; at most {MAX_SEGMENT_FRAMES} are allowed")
        else:
            lengths.append(wan_frame_count(value, adjustments, what=f"{what}[{i}]", maximum=MAX_SEGMENT_FRAMES))
            continue
        lengths.append(MIN_SEGMENT_FRAMES)
    return lengths


def _segment_images(images: list[str], n: int, continuing: bool, problems: list[str], adjustments: dict,
                    what: str) -> list[str]:
    """The anchor images the n segments use: n+1 (n when continuing); one fewer leaves the last segment
    without an end image; extra ones are not used."""
    need = n if continuing else n + 1
    if len(images) > need:
        adjustments[what] = [len(images), need]  # images beyond the segments' anchors are not used
        return images[:need]
    if len(images) < need - 1 or not images:
        cont = "continuing a video " if continuing else ""
        problems.append(f"{what} has {len(images)} image{'' if len(images) == 1 else 's'} but {n} segment"
                        f"{'' if n == 1 else 's'} {cont}need {need} (or {need - 1}: the last segment then has no "
                        f"end image and continues freely)" if need > 1 else
                        f"{what} has no images; a segment needs at least its end image")
    return images


def _strict_overlaps(lengths: list[int], overlaps: list[int], *, even: bool, first_is_video: bool,
                     problems: list[str]) -> list[int]:
    """Canonical payloads: say what is wrong instead of changing it."""

    def name(k: int) -> str:
        if first_is_video:
            return "the continued video" if k == 0 else f"segment {k - 1}"
        return f"segment {k}"

    for j, o in enumerate(overlaps):
        where = f"overlap between {name(j)} and {name(j + 1)}"
        if not isinstance(o, int) or isinstance(o, bool):
            problems.append(f"{where} must be a whole number, got {o!r}")
            continue
        if o < 0:
            problems.append(f"{where} is {o}; it cannot be negative")
        elif even and o % 2:
            problems.append(f"{where} is {o}; chained (VACE) overlaps must be even (try {o - 1} or {o + 1})")
        elif o > min(lengths[j], lengths[j + 1]):
            problems.append(f"{where} is {o} frames, longer than {name(j)} ({lengths[j]} frames) or "
                            f"{name(j + 1)} ({lengths[j + 1]} frames)")
        elif even and o >= lengths[j + 1]:
            problems.append(f"{where} is {o}; it must leave {name(j + 1)} ({lengths[j + 1]} frames) at least "
                            f"its last frame for the next image")
    for k in range(1, len(lengths) - 1):
        a, b = overlaps[k - 1], overlaps[k]
        if isinstance(a, int) and isinstance(b, int) and a >= 0 and b >= 0 and a + b > lengths[k]:
            problems.append(f"{name(k)} has {lengths[k]} frames but overlaps {a} frames with the previous and "
                            f"{b} with the next; together they must fit in it")
    return [max(0, o) if isinstance(o, int) else 0 for o in overlaps]


def _raise(problems: list[str], what: str) -> None:
    if problems:
        raise InvalidInput(f"invalid {what}: " + "; ".join(problems))


def plan_travel(params: TravelParams | SeedTravelParams | dict, *, continue_frames: int | None = None,
                run_id: str | None = None) -> TravelPlan:
    """Validate and normalise a travel payload into a TravelPlan. `continue_frames` is the real frame count
    of the video to continue (the orchestrator probes it); required when the payload continues a video."""
    if isinstance(params, dict):
        params = (SeedTravelParams if "orchestrator_details" in params else TravelParams).model_validate(params)
    if isinstance(params, SeedTravelParams):
        return _plan_from_seed(params.orchestrator_details, continue_frames=continue_frames, run_id=run_id)
    return _plan_from_canonical(params, continue_frames=continue_frames, run_id=run_id)


def _common_checks(images: list[str], continuing: bool, continue_frames: int | None, problems: list[str]) -> None:
    if any(not isinstance(p, str) or not p.strip() for p in images):
        problems.append("every image must be a non-empty path or URL")
    if not images:
        problems.append("travel needs at least 1 image")
    if continuing:
        if continue_frames is None:
            raise ValueError("continue_frames is required when continuing a video")
        if continue_frames < 1:
            problems.append("the video to continue has no frames")


def _plan_from_canonical(p: TravelParams, *, continue_frames: int | None, run_id: str | None) -> TravelPlan:
    problems: list[str] = []
    continuing = bool(p.continue_from_video)
    images = list(p.images)
    _common_checks(images, continuing, continue_frames, problems)
    _raise(problems, "travel params")
    n = p.num_segments if p.num_segments is not None else max(1, len(images) if continuing else len(images) - 1)
    if n < 1:
        raise InvalidInput(f"invalid travel params: num_segments is {n}; there is nothing to generate")
    adjustments: dict[str, Any] = {}
    images = _segment_images(images, n, continuing, problems, adjustments, "images")
    if n > MAX_SEGMENTS:
        problems.append(f"{n} segments requested; at most {MAX_SEGMENTS} are allowed")
    mode = p.mode or infer_mode(p.model)
    _check_model_mode(p.model, p.mode, mode, problems)
    mode = mode or "chained"
    _check_free_end(p.model, mode, images, n, continuing, problems)

    if p.prompts is not None and p.prompt is not None:
        problems.append("give either prompt or prompts, not both")
    prompts = _expand("prompts", p.prompts if p.prompts is not None else p.prompt, n, problems, default="")
    negs = _expand("negative_prompts", p.negative_prompts if p.negative_prompts is not None else p.negative_prompt,
                   n, problems, default="")
    raw_lengths = _expand("frames", p.frames, n, problems)
    lengths = _check_lengths(raw_lengths, problems, adjustments, "frames")
    joins = n - 1 + (1 if continuing else 0)
    raw_overlaps = _overlaps_for_joins("overlap", p.overlap, joins, n, problems, lenient=False,
                                       default=8 if mode == "chained" else 1)
    pieces = ([continue_frames] if continuing else []) + lengths
    overlaps = _strict_overlaps(pieces, raw_overlaps, even=(mode == "chained"), first_is_video=continuing,
                                problems=problems)
    seeds = _seed_list(p.seed, n, problems)
    if p.image_refs and mode == "independent":
        problems.append("image_refs (VACE reference images) need a VACE model in mode 'chained'")
    try:
        resolution = model_resolution(p.resolution, adjustments)
    except InvalidInput as exc:
        problems.append(str(exc))
        resolution = (16, 16)
    upscale_to = None
    if p.upscale_to:
        try:
            upscale_to = model_resolution(p.upscale_to, adjustments, what="upscale_to")
        except InvalidInput as exc:
            problems.append(str(exc))
    _check_scalars(p.fps, p.fps_multiplier, p.sharpen, problems)
    if p.steps is not None and p.steps < 1:
        problems.append(f"steps is {p.steps}; it must be at least 1")
    _raise(problems, "travel params")

    generation = {k: v for k, v in {
        "num_inference_steps": p.steps, "guidance_scale": p.guidance_scale, "flow_shift": p.flow_shift,
        "loras": p.loras, "use_causvid_lora": p.use_causvid_lora, "use_lighti2x_lora": p.use_lighti2x_lora,
    }.items() if v is not None}
    return _build(mode=mode, model=p.model, resolution=resolution, fps=float(p.fps), images=images,
                  prompts=prompts, negs=negs, lengths=lengths, overlaps=overlaps, seeds=seeds,
                  continue_from_video=p.continue_from_video if continuing else None,
                  continue_frames=continue_frames if continuing else None,
                  image_refs=[list(p.image_refs or [])] * n, colour_match=p.colour_match, sharpen=p.sharpen,
                  fps_multiplier=p.fps_multiplier, upscale_to=upscale_to, keep=p.keep_intermediates,
                  run_id=p.run_id or run_id, generation=generation, guide_adjustments={},
                  adjustments=adjustments, source_format="canonical")


def _check_free_end(model: str, mode: str, images: list[str], n: int, continuing: bool,
                    problems: list[str]) -> None:
    """A first-last-frame (FLF2V) model cannot generate a segment without an end image (its image encoder
    takes the pair); I2V models and VACE guides can."""
    if mode != "independent" or len(images) >= (n if continuing else n + 1):
        return
    try:
        from source.generation.model_catalog import load_catalog

        spec = load_catalog().lookup(model)
    except Exception:  # noqa: BLE001 - a broken user catalog: judge by the name (the bridge reports the catalog error)
        spec = None
    if (spec.kind if spec is not None else ("flf2v" if "flf2v" in model.lower() else None)) == "flf2v":
        problems.append(f"segment {n - 1} has no end image, but {model!r} is a first-last-frame model that needs "
                        f"one: give {n if continuing else n + 1} images, or use an I2V or VACE model")


def _check_model_mode(model: str, requested: str | None, mode: str | None, problems: list[str]) -> None:
    inferred = infer_mode(model)
    if mode is None:
        problems.append(f"model {model!r} cannot travel between images: use a VACE model (mode 'chained') or a "
                        f"first-last-frame model such as an FLF2V or Wan 2.2 I2V model (mode 'independent')")
    elif requested == "chained" and inferred == "independent":
        problems.append(f"mode 'chained' needs a VACE model (it generates from a guide video); {model!r} is a "
                        f"first-last-frame model: use mode 'independent'")
    elif requested == "independent" and inferred == "chained":
        problems.append(f"mode 'independent' needs a first-last-frame model (FLF2V or I2V); {model!r} is a VACE "
                        f"model: use mode 'chained'")


def _check_scalars(fps: float, fps_multiplier: int, sharpen: float, problems: list[str]) -> None:
    if not (0 < fps <= 240) or not math.isfinite(fps):
        problems.append(f"fps is {fps}; it must be between 0 and 240")
    if not (1 <= fps_multiplier <= 8):
        problems.append(f"fps_multiplier is {fps_multiplier}; it must be a whole number from 1 to 8")
    if not (0 <= sharpen <= 5) or not math.isfinite(sharpen):
        problems.append(f"sharpen is {sharpen}; it must be between 0 and 5")


def _plan_from_seed(d: SeedOrchestratorDetails, *, continue_frames: int | None, run_id: str | None) -> TravelPlan:
    problems: list[str] = []
    continuing = bool(d.continue_from_video_resolved_path)
    images = list(d.input_image_paths_resolved)
    n = d.num_new_segments_to_generate
    if n < 1:
        raise InvalidInput(f"invalid travel_orchestrator payload: num_new_segments_to_generate is {n}; "
                           f"there is nothing to generate")
    if n > MAX_SEGMENTS:
        problems.append(f"num_new_segments_to_generate is {n}; at most {MAX_SEGMENTS} are allowed")
    _common_checks(images, continuing, continue_frames, problems)
    adjustments: dict[str, Any] = {}
    images = _segment_images(images, n, continuing, problems, adjustments, "input_image_paths_resolved")
    mode_req = d.travel_mode if d.travel_mode in ("chained", "independent") else None
    mode = mode_req or infer_mode(d.model_name)
    _check_model_mode(d.model_name, mode_req, mode, problems)
    mode = mode or "chained"
    _check_free_end(d.model_name, mode, images, n, continuing, problems)
    if d.base_prompts_expanded is None:
        problems.append("base_prompts_expanded is missing (one prompt per segment)")
    prompts = _expand("base_prompts_expanded", d.base_prompts_expanded, n, problems, default="")
    negs = _expand("negative_prompts_expanded", d.negative_prompts_expanded, n, problems, default="")
    raw_lengths = _expand("segment_frames_expanded", d.segment_frames_expanded, n, problems)
    lengths = _check_lengths(raw_lengths, problems, adjustments, "segment_frames_expanded")
    joins = n - 1 + (1 if continuing else 0)
    raw_overlaps = _overlaps_for_joins("frame_overlap_expanded", d.frame_overlap_expanded or None, joins, n,
                                       problems, lenient=True, default=0)
    for j, o in enumerate(raw_overlaps):
        if o < 0:
            problems.append(f"frame_overlap_expanded[{j}] is {o}; it cannot be negative")
    try:
        resolution = model_resolution(d.parsed_resolution_wh, adjustments, what="parsed_resolution_wh")
    except InvalidInput as exc:
        problems.append(str(exc))
        resolution = (16, 16)
    _check_scalars(d.fps_helpers, 1, max(0.0, d.crossfade_sharp_amt), problems)
    _raise(problems, "travel_orchestrator payload")

    pieces = ([continue_frames] if continuing else []) + lengths
    overlaps = clamp_overlaps(pieces, raw_overlaps, even=(mode == "chained"))
    adjustments.update({f"frame_overlap_expanded[{j}]": [a, b]
                        for j, (a, b) in enumerate(zip(raw_overlaps, overlaps)) if a != b})
    upscale_to = None
    if d.upscale_factor and d.upscale_factor > 1:
        upscale_to = (int(round(resolution[0] * d.upscale_factor)) // 2 * 2,
                      int(round(resolution[1] * d.upscale_factor)) // 2 * 2)
    steps = d.num_inference_steps
    loras = [{"path": path, "multiplier": float(m)} for path, m in (d.additional_loras or {}).items()] or None
    generation = {k: v for k, v in {
        "num_inference_steps": steps, "guidance_scale": d.guidance_scale, "flow_shift": d.flow_shift,
        "loras": loras, "use_causvid_lora": bool(d.use_causvid_lora),
        "use_lighti2x_lora": d.use_lighti2x_lora,
    }.items() if v is not None}
    refs: list[list[str]] = [[] for _ in range(n)]
    for item in d.vace_image_refs_to_prepare_by_headless or []:
        path = item.get("original_path") or item.get("path")
        if not path:
            continue
        idx = item.get("segment_idx_for_naming")
        for i in range(n):
            if idx is None or idx == i:
                refs[i].append(path)
    guide_adjustments = {k: float(v) for k, v in {
        "strength": d.subsequent_starting_strength_adjustment,
        "desaturate": d.desaturate_subsequent_starting_frames,
        "brightness": d.adjust_brightness_subsequent_starting_frames,
    }.items() if v}
    return _build(mode=mode, model=d.model_name, resolution=resolution, fps=float(d.fps_helpers), images=images,
                  prompts=prompts, negs=negs, lengths=lengths, overlaps=overlaps,
                  seeds=[d.seed_base + i for i in range(n)],
                  continue_from_video=d.continue_from_video_resolved_path if continuing else None,
                  continue_frames=continue_frames if continuing else None, image_refs=refs,
                  colour_match=True if d.colour_match_videos is None else bool(d.colour_match_videos),
                  sharpen=max(0.0, d.crossfade_sharp_amt), fps_multiplier=1, upscale_to=upscale_to,
                  keep=bool(d.debug_mode_enabled or d.skip_cleanup_enabled), run_id=d.run_id or run_id,
                  generation=generation, guide_adjustments=guide_adjustments, adjustments=adjustments,
                  source_format="seed")


def _build(*, mode, model, resolution, fps, images, prompts, negs, lengths, overlaps, seeds, continue_from_video,
           continue_frames, image_refs, colour_match, sharpen, fps_multiplier, upscale_to, keep, run_id,
           generation, guide_adjustments, adjustments, source_format) -> TravelPlan:
    n = len(lengths)
    continuing = continue_from_video is not None
    # overlaps[j] joins piece j and j+1 of [video?] + segments; per segment: incoming and outgoing
    seg_in = [(overlaps[i] if continuing else (overlaps[i - 1] if i > 0 else 0)) for i in range(n)]
    seg_out = [(overlaps[i + 1] if continuing else overlaps[i]) if i < n - 1 else 0 for i in range(n)]
    segments = []
    for i in range(n):
        # one image fewer than anchors needed: the last segment has no end image (it continues freely)
        if continuing:
            start, end = (images[i - 1] if i > 0 else None), (images[i] if i < len(images) else None)
        else:
            start, end = images[i], (images[i + 1] if i + 1 < len(images) else None)
        segments.append(SegmentPlan(
            index=i, key=f"seg-{i:03d}", frames=lengths[i], overlap_prev=seg_in[i], overlap_next=seg_out[i],
            prompt=str(prompts[i] or ""), negative_prompt=str(negs[i] or ""), seed=int(seeds[i]),
            start_image=start, end_image=end, image_refs=tuple(image_refs[i])))
    return TravelPlan(mode=mode, model=model, resolution=resolution, fps=fps, images=images, segments=segments,
                      overlaps=list(overlaps), continue_from_video=continue_from_video,
                      continue_frames=continue_frames, colour_match=colour_match, sharpen=float(sharpen),
                      fps_multiplier=int(fps_multiplier), upscale_to=upscale_to, keep_intermediates=keep,
                      run_id=run_id, generation=generation, guide_adjustments=guide_adjustments,
                      adjustments=adjustments, source_format=source_format)
