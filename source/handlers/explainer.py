"""`explainer_video` (orchestrator) and `explainer_slide` (child): a Markdown document or a list of scenes
-> a narrated slide video with cross-fades and a timing report, as a DAG of stages:

    parse (this orchestrator's own run: document -> scenes, every input checked, recorded in its result)
      -> speech per narrated scene (`speech`, cached by content)
      -> one slide per scene (`explainer_slide`, Pillow at the layout size)
      -> assemble (`compose` with an `explainer` layout: durations from the real narrations, the render,
         and the timing report JSON beside the video).

Every stage is its own row, so a worker that dies mid-assembly costs only the assembly: the store re-runs
the unfinished task and the finished speech and slide rows (and their files) stay as they are.

Params: document (path or URL of a Markdown file) | markdown (the text itself) | scenes [Scene], accent_color,
voice, engine (auto, espeak, piper, ...), speaking_rate, language, layout (landscape 1280x720, portrait,
square or WxH), fps, min_scene_seconds, crossfade, lead, tail, output.
"""

from __future__ import annotations

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from source.compose.explainer import ExplainerLayout, Scene, draw_slide, scenes_from_markdown
from source.compose.timeline import OutputSettings, parse_colour
from source.handler_registry import format_validation_error, register
from source.handlers.compose import TASK_REF, check_source, resolver
from source.handlers.narrated_video import parse_layout
from source.media.images import load_image_rgb
from source.speech.engines import get_engine
from source.task_context import ChildTask, HandlerResult, InvalidInput, TaskContext, child_task_id

MAX_DOCUMENT_BYTES = 256 * 1024  # a Markdown explainer is a few KB; anything far larger is a mistake


class ExplainerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: str | None = None                 # path or URL of a Markdown file (untrusted)
    markdown: str | None = Field(None, max_length=MAX_DOCUMENT_BYTES)
    scenes: list[Scene] | None = Field(None, min_length=1, max_length=200)
    accent_color: str = "#FF8800"
    voice: str | None = None
    engine: str = "auto"
    speaking_rate: float = Field(1.0, ge=0.25, le=4.0)
    language: str = "en"
    layout: str = "landscape"
    fps: float = Field(24.0, gt=0, le=60)
    min_scene_seconds: float = Field(3.0, ge=0.5, le=600)
    crossfade: float = Field(0.5, ge=0, le=5)
    lead: float = Field(0.5, ge=0, le=10)
    tail: float = Field(0.7, ge=0, le=10)
    output: OutputSettings = Field(default_factory=OutputSettings)

    @field_validator("accent_color")
    @classmethod
    def _accent(cls, v: str) -> str:
        return "#" + parse_colour(v)[:6]

    @field_validator("layout")
    @classmethod
    def _layout(cls, v: str) -> str:
        parse_layout(v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ExplainerParams:
        given = [n for n in ("document", "markdown", "scenes") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `document` (a Markdown file), `markdown` or `scenes`")
        if self.crossfade and self.crossfade >= self.min_scene_seconds:
            raise ValueError("crossfade must be shorter than min_scene_seconds")
        return self


def _read_document(ref: str, ctx: TaskContext) -> str:
    path = ctx.resolve_input(ref, kind="document")
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise InvalidInput(f"document is larger than {MAX_DOCUMENT_BYTES // 1024} KB")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("document is not UTF-8 text (a Markdown file is expected)") from None
    except OSError as exc:
        raise InvalidInput(f"document cannot be read: {exc.strerror}") from None


def speech_key(i: int) -> str:
    return f"speech-{i:03d}"


def slide_key(i: int) -> str:
    return f"slide-{i:03d}"


@register("explainer_video", params_model=ExplainerParams)
def handle_explainer(p: ExplainerParams, ctx: TaskContext) -> HandlerResult:
    width, height = parse_layout(p.layout)
    # -- stage 1, parse: in this run, so its outcome (the scene list) is in the orchestrator's result
    if p.scenes is not None:
        scenes = list(p.scenes)
    else:
        text = p.markdown if p.markdown is not None else _read_document(p.document or "", ctx)
        try:
            scenes = scenes_from_markdown(text)
        except (ValueError, ValidationError) as exc:
            msg = format_validation_error("document", exc) if isinstance(exc, ValidationError) else str(exc)
            raise InvalidInput(f"document cannot be made into scenes: {msg}") from None
    if len(scenes) > 200:
        raise InvalidInput(f"the explainer has {len(scenes)} scenes; at most 200 are allowed")
    engine = get_engine(p.engine)
    problems: list[str] = []
    voices: list[str | None] = []
    image_deps: dict[int, str] = {}
    for i, s in enumerate(scenes):
        try:  # a bad voice or image fails here, not in one of many child tasks
            voices.append(engine.check_voice(s.voice or p.voice) if s.narration else None)
            if s.scene_type == "image" and s.image:
                dep = check_source(s.image, f"scenes[{i}].image", ctx)
                if dep:
                    image_deps[i] = dep
                else:
                    load_image_rgb(ctx.resolve_input(s.image, kind=f"scenes[{i}].image"))
        except InvalidInput as exc:
            problems.append(f"scenes[{i}]: {exc}")
    if problems:
        raise InvalidInput("explainer inputs are not usable: " + "; ".join(problems))

    children: list[ChildTask] = []
    layout_scenes = []
    for i, s in enumerate(scenes):
        speech_id = None
        if s.narration:  # stage 2: speech per narrated scene
            children.append(ChildTask(key=speech_key(i), task_type="speech", params={
                "text": s.narration, "engine": engine.name, "voice": voices[i], "speaking_rate": p.speaking_rate,
                "language": p.language, "orchestrator_task_id": ctx.task_id}))
            speech_id = child_task_id(ctx.task_id, speech_key(i))
        children.append(ChildTask(key=slide_key(i), task_type="explainer_slide", params={  # stage 3
            "scene": s.model_dump(), "width": width, "height": height, "accent_color": p.accent_color,
            "orchestrator_task_id": ctx.task_id}, depends_on=[image_deps[i]] if i in image_deps else []))
        layout_scenes.append({"scene_type": s.scene_type, "title": s.title,
                              "slide_task_id": child_task_id(ctx.task_id, slide_key(i)),
                              "speech_task_id": speech_id})
    layout = ExplainerLayout(scenes=layout_scenes, width=width, height=height, fps=p.fps,
                             min_scene_seconds=p.min_scene_seconds, lead=p.lead, tail=p.tail, crossfade=p.crossfade,
                             output=p.output)
    children.append(ChildTask(key="assemble", task_type="compose", completes_parent=True,  # stage 4
                              params={"explainer": layout.model_dump(), "orchestrator_task_id": ctx.task_id},
                              depends_on=[c.key for c in children]))
    ctx.log("explainer_planned", scenes=len(scenes), speech=sum(1 for v in voices if v is not None),
            engine=engine.name, size=f"{width}x{height}")
    return HandlerResult(children=children, result={
        "scenes": [s.model_dump(exclude_defaults=True) for s in scenes], "engine": engine.name,
        "size": f"{width}x{height}",
        "stages": {"speech": [c.key for c in children if c.task_type == "speech"],
                   "slides": [c.key for c in children if c.task_type == "explainer_slide"],
                   "assemble": child_task_id(ctx.task_id, "assemble")}})


class SlideParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene: Scene
    width: int = Field(ge=16, le=7680)
    height: int = Field(ge=16, le=4320)
    accent_color: str = "#FF8800"
    orchestrator_task_id: str | None = None

    @field_validator("accent_color")
    @classmethod
    def _accent(cls, v: str) -> str:
        return "#" + parse_colour(v)[:6]


@register("explainer_slide", params_model=SlideParams)
def handle_slide(p: SlideParams, ctx: TaskContext) -> HandlerResult:
    picture = None
    if p.scene.scene_type == "image" and p.scene.image:
        src = p.scene.image
        picture = Image.fromarray(load_image_rgb(resolver(ctx)(src, "scene image") if src.startswith(TASK_REF)
                                                 else ctx.resolve_input(src, kind="scene image")))
    image = draw_slide(p.scene, p.width, p.height, p.accent_color, picture)
    out = ctx.output_path(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    image.save(partial, format="PNG")
    partial.replace(out)  # a reader never sees half a PNG
    ctx.progress(1.0, "slide drawn")
    return HandlerResult(output_location=ctx.location_for(out),
                         result={"scene_type": p.scene.scene_type, "size": f"{p.width}x{p.height}",
                                 "code_font": "Roboto Mono" if p.scene.scene_type == "command" else None})
