"""`narrated_video` (orchestrator): story parts (an image and its captions) -> a narrated video.

It checks every input, then enqueues one `speech` child per caption (they run in parallel on any number of
workers and are cached by content) and one `compose` child that depends on all of them and completes the
orchestrator. The compose child lays the parts out from the real speech durations (source/compose/narrated.py).

Params: parts [{image (path, URL or `task:<id>`), captions [text, ...]}], voice?, engine (auto, espeak,
piper, ...), speaking_rate?, layout (portrait 720x1280, landscape 1280x720, square 1080x1080, or WxH),
ken_burns (default on), transition (fade_black or crossfade), caption_style?, background_music?, output?.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from source.compose.narrated import MusicSpec, default_caption_style
from source.compose.timeline import OutputSettings, TextStyle
from source.handler_registry import format_validation_error, register
from source.handlers.compose import check_source
from source.media.images import load_image_rgb
from source.speech.engines import get_engine
from source.task_context import ChildTask, HandlerResult, InvalidInput, TaskContext, child_task_id

LAYOUTS = {"portrait": (720, 1280), "landscape": (1280, 720), "square": (1080, 1080)}
_TRANSITIONS = {"fade_black": "fade_black", "fade_through_black": "fade_black", "fadeblack": "fade_black",
                "crossfade": "crossfade", "cross_fade": "crossfade", "cross-fade": "crossfade",
                "dissolve": "crossfade"}


def parse_layout(value: str) -> tuple[int, int]:
    v = value.strip().lower()
    if v in LAYOUTS:
        return LAYOUTS[v]
    m = re.fullmatch(r"(\d{2,4})x(\d{2,4})", v)
    if not m:
        raise ValueError(f"layout {value!r} must be portrait, landscape, square or WxH (e.g. 720x1280)")
    w, h = int(m.group(1)), int(m.group(2))
    if not (16 <= w <= 3840 and 16 <= h <= 3840) or w % 2 or h % 2:
        raise ValueError(f"layout {value!r}: width and height must be even and between 16 and 3840")
    return w, h


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1)
    captions: list[str] = Field(min_length=1, max_length=50)

    @field_validator("captions")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        out = [c.strip() for c in v]
        if any(not c for c in out):
            raise ValueError("captions must not be empty")
        if any(len(c) > 1000 for c in out):
            raise ValueError("a caption is longer than 1000 characters")
        return out


class NarratedVideoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: list[Part] = Field(min_length=1, max_length=200)
    voice: str | None = None
    engine: str = "auto"
    speaking_rate: float = Field(1.0, ge=0.25, le=4.0)
    language: str = "en"
    layout: str = "portrait"
    fps: float = Field(24.0, gt=0, le=60)
    ken_burns: bool = True
    transition: str = "fade_black"
    transition_duration: float = Field(0.6, ge=0.05, le=5)
    caption_style: dict[str, Any] | None = None  # overrides of the layout's default style (a TextStyle)
    caption_gap: float = Field(0.3, ge=0, le=5)
    background_music: MusicSpec | None = None
    output: OutputSettings = Field(default_factory=OutputSettings)

    @field_validator("layout")
    @classmethod
    def _layout(cls, v: str) -> str:
        parse_layout(v)
        return v

    @field_validator("transition")
    @classmethod
    def _transition(cls, v: str) -> str:
        key = v.strip().lower().replace(" ", "_")
        if key not in _TRANSITIONS:
            raise ValueError(f"transition {v!r} must be fade_black (fade through black) or crossfade")
        return _TRANSITIONS[key]


def speech_key(part: int, caption: int) -> str:
    return f"speech-{part:03d}-{caption:03d}"


@register("narrated_video", params_model=NarratedVideoParams)
def handle_narrated_video(p: NarratedVideoParams, ctx: TaskContext) -> HandlerResult:
    width, height = parse_layout(p.layout)
    try:  # what the caller sets replaces the default for this size; the rest (band, scaled size) stays
        style = TextStyle.model_validate({**default_caption_style(width, height).model_dump(),
                                          **(p.caption_style or {})})
    except ValidationError as exc:
        raise InvalidInput(format_validation_error("narrated_video caption_style", exc)) from None
    engine = get_engine(p.engine)
    voice = engine.check_voice(p.voice)  # a bad voice fails here, not in every speech task
    problems: list[str] = []
    external: list[str] = []
    for i, part in enumerate(p.parts):
        try:
            dep = check_source(part.image, f"parts[{i}].image", ctx)
            if dep:
                external.append(dep)
            else:
                load_image_rgb(ctx.resolve_input(part.image, kind=f"parts[{i}].image"))
        except InvalidInput as exc:
            problems.append(str(exc))
    if p.background_music is not None:
        try:
            dep = check_source(p.background_music.source, "background_music", ctx)
            if dep:
                external.append(dep)
        except InvalidInput as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidInput("narrated video inputs are not usable: " + "; ".join(problems))

    children: list[ChildTask] = []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(p.parts):
        caps = []
        for j, text in enumerate(part.captions):
            key = speech_key(i, j)
            children.append(ChildTask(key=key, task_type="speech", params={
                "text": text, "engine": engine.name, "voice": voice, "speaking_rate": p.speaking_rate,
                "language": p.language, "orchestrator_task_id": ctx.task_id}))
            caps.append({"text": text, "speech_task_id": child_task_id(ctx.task_id, key)})
        parts.append({"image": part.image, "captions": caps})
    layout = {"parts": parts, "width": width, "height": height, "fps": p.fps, "ken_burns": p.ken_burns,
              "transition": p.transition, "transition_duration": p.transition_duration,
              "caption_style": style.model_dump(),
              "caption_gap": p.caption_gap,
              "background_music": p.background_music.model_dump() if p.background_music else None,
              "output": p.output.model_dump()}
    children.append(ChildTask(key="compose", task_type="compose",
                              params={"narrated": layout, "orchestrator_task_id": ctx.task_id},
                              depends_on=[c.key for c in children] + sorted(set(external)),
                              completes_parent=True))
    ctx.log("narrated_planned", parts=len(p.parts), captions=len(children) - 1, engine=engine.name, voice=voice,
            size=f"{width}x{height}")
    return HandlerResult(children=children, result={"parts": len(p.parts), "speech_tasks": len(children) - 1,
                                                    "engine": engine.name, "voice": voice,
                                                    "size": f"{width}x{height}"})
