"""Explainer videos: scenes (title, list, command, image, outro) with narration -> slides -> one Timeline.

Three pure pieces, each used by one stage of the `explainer_video` DAG (source/handlers/explainer.py):
- parse: `scenes_from_markdown()` turns a Markdown document (markdown-it-py tokens, no hand-written parsing)
  into Scene models; `Scene` validates scenes given directly;
- slides: `draw_slide()` draws one scene at the layout size with Pillow (Roboto from `font-roboto`, code in
  Roboto Mono from `fontpkg-roboto-mono`);
- assemble: `build_timeline()` lays the slides out from the real narration durations (it runs inside the
  compose task, after the speech tasks) and returns the timing report written beside the video.

Scene i lasts max(min_scene_seconds, lead + narration + tail) and cross-fades into scene i+1; its narration
starts `lead` seconds after the scene does, so speech never plays under a cross-fade (lead, tail >= fade).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from source.compose.timeline import AudioLayer, ImageClip, OutputSettings, Timeline, Transition, parse_colour

SceneType = Literal["title", "list", "command", "image", "outro"]
MAX_NARRATION = 5000  # the speech task's limit
DEFAULT_OUTRO = "Thanks for watching"


class Scene(BaseModel):
    """One scene. Visual fields by type: title (title, subtitle), list (title, items), command (title,
    code, language), image (image, title as caption), outro (title, subtitle)."""

    model_config = ConfigDict(extra="forbid")

    scene_type: SceneType
    title: str = Field("", max_length=300)
    subtitle: str = Field("", max_length=600)
    items: list[str] = Field(default_factory=list, max_length=12)
    code: str = Field("", max_length=4000)
    language: str = Field("", max_length=40)
    image: str | None = None
    narration: str = Field("", max_length=MAX_NARRATION)
    voice: str | None = None

    @field_validator("items")
    @classmethod
    def _items(cls, v: list[str]) -> list[str]:
        out = [i.strip() for i in v]
        if any(not i or len(i) > 300 for i in out):
            raise ValueError("list items must be 1..300 characters")
        return out

    @model_validator(mode="after")
    def _visual(self) -> Scene:
        need = {"title": self.title, "list": self.items, "command": self.code, "image": self.image,
                "outro": True}[self.scene_type]
        if not need:
            field = {"title": "title", "list": "items", "command": "code", "image": "image"}[self.scene_type]
            raise ValueError(f"a {self.scene_type} scene needs `{field}`")
        if "\x00" in self.narration:
            raise ValueError("narration contains a NUL character")
        self.narration = " ".join(self.narration.split())
        return self


# -- parse ---------------------------------------------------------------------------------------
def _inline_text(token) -> str:
    """The plain text of an inline token (emphasis, links and code spans reduced to their text)."""
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return " ".join("".join(parts).split())


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?:" else text + "."


def scenes_from_markdown(text: str) -> list[Scene]:
    """Headings, paragraphs, lists, code blocks and images -> scenes, plus an outro.

    - a list, a code block or an image paragraph is one scene, titled by the nearest heading above it and
      narrated by the paragraphs between that heading and it (a list's items are read out after them);
    - a heading with no list/code/image before the next heading is a title scene, its paragraphs the subtitle
      and narration; paragraphs after a section's visual scene are added to that scene's narration;
    - the outro names the first level-1 heading.
    """
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    scenes: list[Scene] = []
    heading = ""
    heading_level = 0
    heading_used = True
    paras: list[str] = []
    doc_title = ""
    last_visual: Scene | None = None

    def narration(*extra: str, head: bool = False) -> str:
        # the section's heading (once), its paragraphs, then what the scene shows
        said = [heading] if head and not heading_used else []
        return " ".join(_sentence(s) for s in [*said, *paras, *extra] if s)[:MAX_NARRATION]

    def flush_section() -> None:
        nonlocal paras, heading_used
        if not heading_used and heading:
            sub = paras[0] if paras else ""
            scenes.append(Scene(scene_type="title", title=heading[:300], subtitle=sub[:600],
                                narration=" ".join(_sentence(s) for s in [heading, *paras])[:MAX_NARRATION]))
        elif paras and last_visual is not None:
            last_visual.narration = (last_visual.narration + " " + narration())[:MAX_NARRATION].strip()
        elif paras:  # text before any heading: a title scene of its own
            scenes.append(Scene(scene_type="title", title=paras[0][:300], narration=narration()))
        paras = []
        heading_used = True

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            flush_section()
            heading = _inline_text(tokens[i + 1])
            heading_level = int(tok.tag[1])
            heading_used = False
            last_visual = None
            if heading_level == 1 and not doc_title:
                doc_title = heading
            i += 3
            continue
        if tok.type in ("bullet_list_open", "ordered_list_open"):
            items, depth, j = [], 0, i
            while j < len(tokens):
                t = tokens[j]
                if t.type in ("bullet_list_open", "ordered_list_open"):
                    depth += 1
                elif t.type in ("bullet_list_close", "ordered_list_close"):
                    depth -= 1
                    if depth == 0:
                        break
                elif t.type == "inline" and depth == 1:  # nested lists are read as part of their item only
                    items.append(_inline_text(t))
                j += 1
            items = [x for x in items if x][:12]
            if items:
                last_visual = Scene(scene_type="list", title="" if heading_used else heading, items=items,
                                    narration=narration(*items, head=True))
                scenes.append(last_visual)
                paras, heading_used = [], True
            i = j + 1
            continue
        if tok.type in ("fence", "code_block"):
            code = tok.content.rstrip("\n")
            if code.strip():
                last_visual = Scene(scene_type="command", title="" if heading_used else heading, code=code[:4000],
                                    language=(tok.info or "").strip().split(" ")[0][:40],
                                    narration=narration(head=True) or "Here is the code.")
                scenes.append(last_visual)
                paras, heading_used = [], True
            i += 1
            continue
        if tok.type == "paragraph_open":
            inline = tokens[i + 1]
            kids = [c for c in inline.children or [] if not (c.type == "text" and not c.content.strip())]
            if len(kids) == 1 and kids[0].type == "image":
                img = kids[0]
                alt = _inline_text(img) or heading
                last_visual = Scene(scene_type="image", image=img.attrGet("src"), title=alt[:300],
                                    narration=narration(alt if not paras else "", head=alt != heading))
                scenes.append(last_visual)
                paras, heading_used = [], True
            else:
                text = _inline_text(inline)
                if text:
                    paras.append(text)
            i += 3
            continue
        i += 1
    flush_section()
    if not scenes:
        raise ValueError("the document has no headings, paragraphs, lists, code blocks or images")
    scenes.append(Scene(scene_type="outro", title=DEFAULT_OUTRO, subtitle=doc_title[:600]))
    return scenes


# -- slides --------------------------------------------------------------------------------------
BACKGROUND = (16, 20, 26)
TEXT = (236, 238, 242)
MUTED = (160, 168, 180)
CODE_BG = (30, 34, 42)


def _font(bold: bool = False, mono: bool = False, size: int = 20) -> ImageFont.FreeTypeFont:
    if mono:
        import fontpkg_roboto_mono

        return ImageFont.truetype(str(Path(fontpkg_roboto_mono.ROOT) / "files" / "RobotoMono[wght].ttf"), size)
    import font_roboto

    name = "Roboto-Bold.ttf" if bold else "Roboto-Regular.ttf"
    return ImageFont.truetype(str(Path(font_roboto.font_directory) / name), size)


def _rgb(colour: str) -> tuple[int, int, int]:
    hexa = parse_colour(colour)
    return int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap by measured width; the last line gets an ellipsis when text is cut."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and font.getlength(lines[-1] + "…") > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return lines


def _centered(draw: ImageDraw.ImageDraw, lines: list[str], font, y: float, w: int, fill, gap: float) -> float:
    for line in lines:
        draw.text(((w - font.getlength(line)) / 2, y), line, font=font, fill=fill)
        y += font.size * gap
    return y


def draw_slide(scene: Scene, width: int, height: int, accent: str, image: Image.Image | None = None) -> Image.Image:
    """One slide at the output size. Sizes scale with the frame's shorter side so tiny test layouts and 1080p
    use the same design."""
    acc = _rgb(accent)
    im = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(im)
    unit = min(width, height) / 100.0
    margin = max(2, int(round(6 * unit)))
    inner = width - 2 * margin
    bar = max(2, int(round(1.2 * unit)))
    d.rectangle([0, height - bar, width, height], fill=acc)  # the accent line every slide shares
    big = _font(bold=True, size=max(6, int(round(11 * unit))))
    head = _font(bold=True, size=max(6, int(round(8 * unit))))
    body = _font(size=max(6, int(round(6 * unit))))
    t = scene.scene_type
    if t in ("title", "outro"):
        title = _wrap(scene.title or DEFAULT_OUTRO, big, inner, 3)
        sub = _wrap(scene.subtitle, body, inner, 3) if scene.subtitle else []
        total = len(title) * big.size * 1.2 + (len(sub) * body.size * 1.3 + 3 * unit if sub else 0)
        y = (height - total) / 2
        y = _centered(d, title, big, y, width, TEXT, 1.2)
        rule = max(1, int(round(0.8 * unit)))
        d.rectangle([width / 2 - 8 * unit, y + 1.5 * unit, width / 2 + 8 * unit, y + 1.5 * unit + rule], fill=acc)
        _centered(d, sub, body, y + 3 * unit, width, MUTED, 1.3)
        return im
    y = float(margin)
    if scene.title:
        for line in _wrap(scene.title, head, inner, 2):
            d.text((margin, y), line, font=head, fill=acc)
            y += head.size * 1.2
        y += 2 * unit
    if t == "list":
        dot = max(1, int(round(1.2 * unit)))
        room = height - y - margin
        per = max(1, int(room // (body.size * 1.35)))
        lines_used = 0
        for item in scene.items:
            wrapped = _wrap(item, body, inner - 5 * unit, 2)
            if lines_used + len(wrapped) > per:
                break
            cy = y + body.size * 0.6
            d.ellipse([margin, cy - dot, margin + 2 * dot, cy + dot], fill=acc)
            for line in wrapped:
                d.text((margin + 5 * unit, y), line, font=body, fill=TEXT)
                y += body.size * 1.35
                lines_used += 1
        return im
    if t == "command":
        mono = _font(mono=True, size=max(6, int(round(5 * unit))))
        pad = 3 * unit
        code_lines = scene.code.splitlines() or [""]
        box = [margin, y, width - margin, height - margin - bar]
        fits = max(1, int((box[3] - box[1] - 2 * pad) // (mono.size * 1.3)))
        box[3] = min(box[3], y + 2 * pad + min(fits, len(code_lines)) * mono.size * 1.3)  # as tall as the code
        d.rounded_rectangle(box, radius=max(1, int(2 * unit)), fill=CODE_BG, outline=acc, width=max(1, int(unit / 3)))
        cy = y + pad
        for k, line in enumerate(code_lines[:fits]):
            shown = line.expandtabs(4)
            if k == fits - 1 and len(code_lines) > fits:
                shown = "…"
            while shown and mono.getlength(shown) > box[2] - box[0] - 2 * pad:
                shown = shown[:-2] + "…"
            d.text((box[0] + pad, cy), shown, font=mono, fill=TEXT)
            cy += mono.size * 1.3
        return im
    if t == "image" and image is not None:
        top = y if scene.title else margin
        room_w, room_h = inner, max(1, int(height - top - margin - bar))
        pic = image.convert("RGB")
        pic.thumbnail((room_w, room_h), Image.LANCZOS)
        im.paste(pic, (int((width - pic.width) / 2), int(top + (room_h - pic.height) / 2)))
    return im


# -- assemble ------------------------------------------------------------------------------------
class LayoutScene(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scene_type: SceneType
    title: str = ""
    slide_task_id: str
    speech_task_id: str | None = None


class ExplainerLayout(BaseModel):
    """What the assemble (compose) task needs: scenes in order with their stage tasks, and the timing rules."""

    model_config = ConfigDict(extra="forbid")

    scenes: list[LayoutScene] = Field(min_length=1, max_length=500)
    width: int
    height: int
    fps: float = Field(24.0, gt=0, le=60)
    min_scene_seconds: float = Field(3.0, ge=0.5, le=600)
    lead: float = Field(0.5, ge=0, le=10)   # silence before the narration
    tail: float = Field(0.7, ge=0, le=10)   # silence after it
    crossfade: float = Field(0.5, ge=0, le=5)
    output: OutputSettings = Field(default_factory=OutputSettings)

    @model_validator(mode="after")
    def _fade_fits(self) -> ExplainerLayout:
        if self.crossfade and self.crossfade >= self.min_scene_seconds:
            raise ValueError("crossfade must be shorter than min_scene_seconds")
        return self


def build_timeline(layout: ExplainerLayout, slides: dict[str, str],
                   speech: dict[str, tuple[str, dict]]) -> tuple[Timeline, dict]:
    """`slides`: slide task id -> image source; `speech`: speech task id -> (audio source, timing record).
    Returns the timeline and the timing report (scene starts/ends are frame-exact, as rendered)."""
    fade = layout.crossfade
    durations = []
    for s in layout.scenes:
        spoken = float(speech[s.speech_task_id][1]["duration"]) if s.speech_task_id else 0.0
        need = layout.lead + spoken + layout.tail if s.speech_task_id else 0.0
        durations.append(max(layout.min_scene_seconds, need))
    clips = [ImageClip(source=slides[s.slide_task_id], duration=d, fit="contain",
                       transition_in=Transition(type="crossfade", duration=fade) if i and fade else Transition())
             for i, (s, d) in enumerate(zip(layout.scenes, durations))]
    draft = Timeline(width=layout.width, height=layout.height, fps=layout.fps, clips=clips, output=layout.output)
    fps = layout.fps
    starts = draft.clip_start_frames()
    counts = draft.clip_frames()
    audio: list[AudioLayer] = []
    report_scenes = []
    for i, (s, n0, n) in enumerate(zip(layout.scenes, starts, counts)):
        entry = {"index": i, "scene_type": s.scene_type, "title": s.title, "start": round(n0 / fps, 4),
                 "end": round((n0 + n) / fps, 4), "duration": round(n / fps, 4), "start_frame": n0, "frames": n,
                 "requested_duration": round(durations[i], 4), "slide_task_id": s.slide_task_id,
                 "speech_task_id": s.speech_task_id, "narration_start": None, "narration_duration": 0.0}
        if s.speech_task_id:
            source, record = speech[s.speech_task_id]
            at = round(n0 / fps + layout.lead, 4)
            dur = float(record["duration"])
            audio.append(AudioLayer(source=source, start=at, duration=dur, role="speech"))
            entry.update(narration_start=at, narration_duration=round(dur, 4), narration=record.get("text"))
        report_scenes.append(entry)
    timeline = Timeline.model_validate({**draft.model_dump(), "audio": [a.model_dump() for a in audio]})
    report = {"fps": fps, "width": layout.width, "height": layout.height, "total_frames": timeline.total_frames,
              "duration": round(timeline.duration, 4),
              "crossfade": round(draft.frames(fade) / fps, 4), "crossfade_requested": fade,
              "lead": layout.lead, "tail": layout.tail,
              "min_scene_seconds": layout.min_scene_seconds, "scenes": report_scenes}
    return timeline, report
