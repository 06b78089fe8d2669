"""Storyboard documents (version 1.2) and their render timeline: the first piece of the `storyboard`
orchestrator (issue 14), which will enqueue one cached generation per clip and a `compose` task built here.

A storyboard clip is an image brought to life by a motion prompt; once generated, its video (`sourceFile`,
or `task:<jobId>`) is the clip's source. Until then, `still_fallback=True` renders the source image as a
still with Ken Burns, so a preview never waits for generation.

Transitions: between clips i-1 and i, clip i's `transitionIn` wins, else clip i-1's `transitionOut`; a fade
into the first clip / out of the last one becomes the video's fade from / to black. Text layer x/y are
pixels of the output resolution (the text's centre). `render: preview` caps the size at 720p and uses the
fast encoder preset; `final` uses the output settings as given.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from source.compose.timeline import (
    AudioLayer,
    ImageClip,
    KenBurns,
    OutputSettings,
    TextLayer,
    TextStyle,
    Timeline,
    Transition,
    VideoClip,
)

PREVIEW_MAX_SIDE = 720  # the shorter side of a preview render


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SbTransition(_Doc):
    type: Literal["cut", "fade", "dissolve", "wipe"] = "cut"
    duration: float = Field(0.5, ge=0, le=10)


class SbClip(_Doc):
    clipId: str = Field(min_length=1, max_length=200)
    sourceImage: str
    motionPrompt: str = ""
    duration: float = Field(gt=0, le=600)
    model: str | None = None
    seed: int | None = None
    transitionIn: SbTransition | None = None
    transitionOut: SbTransition | None = None
    status: str | None = None
    jobId: str | None = None
    cacheKey: str | None = None
    errorMessage: str | None = None
    sourceFile: str | None = None


class SbResolution(_Doc):
    width: int = Field(ge=16, le=7680)
    height: int = Field(ge=16, le=4320)


class SbOutput(_Doc):
    resolution: SbResolution
    fps: float = Field(24.0, gt=0, le=120)
    codec: Literal["h264", "h265", "vp9", "av1"] = "h264"
    bitrate: str | None = None
    quality: Literal["low", "medium", "high", "ultra"] = "high"


class SbAudio(_Doc):
    file: str
    start: float = Field(0.0, ge=0)
    duration: float | None = Field(None, gt=0)
    volume: float = Field(1.0, ge=0, le=10)
    fadeIn: float = Field(0.0, ge=0)
    fadeOut: float = Field(0.0, ge=0)


class SbText(_Doc):
    content: str = Field(min_length=1, max_length=2000)
    start: float = Field(ge=0)
    duration: float = Field(gt=0)
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    fontSize: int = Field(48, ge=6, le=400)
    fontFamily: str | None = None
    color: str = "#FFFFFF"
    box: bool = False


class Storyboard(_Doc):
    version: str = "1.2"
    projectId: str = Field(min_length=1, max_length=200)
    outputSettings: SbOutput
    timeline: list[SbClip] = Field(min_length=1, max_length=500)
    audioLayers: list[SbAudio] = Field(default_factory=list)
    textLayers: list[SbText] = Field(default_factory=list)
    render: Literal["preview", "final"] = "preview"


def render_size(doc: Storyboard) -> tuple[int, int]:
    w, h = doc.outputSettings.resolution.width, doc.outputSettings.resolution.height
    if doc.render == "preview" and min(w, h) > PREVIEW_MAX_SIDE:
        scale = PREVIEW_MAX_SIDE / min(w, h)
        w, h = int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2
    return w - w % 2, h - h % 2


def _transition(t: SbTransition | None) -> Transition:
    if t is None or t.type == "cut" or t.duration <= 0:
        return Transition(type="cut", duration=0)
    return Transition(type={"fade": "crossfade", "dissolve": "dissolve", "wipe": "wipe"}[t.type], duration=t.duration)


def storyboard_timeline(doc: Storyboard, sources: dict[str, str] | None = None, *,
                        still_fallback: bool = True) -> Timeline:
    """The Timeline that renders `doc`. `sources`: clipId -> video reference (a generated clip); a clip without
    one uses its `sourceFile`, else (with still_fallback) its source image as a Ken Burns still."""
    sources = sources or {}
    w, h = render_size(doc)
    scale = w / doc.outputSettings.resolution.width
    clips = []
    for i, c in enumerate(doc.timeline):
        between = None
        if i > 0:
            between = c.transitionIn
            if between is None or between.type == "cut":
                between = doc.timeline[i - 1].transitionOut
        trans = _transition(between) if i else Transition()
        video = sources.get(c.clipId) or c.sourceFile
        if video:
            clips.append(VideoClip(source=video, duration=c.duration, transition_in=trans))
        elif still_fallback:
            clips.append(ImageClip(source=c.sourceImage, duration=c.duration, transition_in=trans,
                                   ken_burns=KenBurns(end_zoom=1.1)))
        else:
            raise ValueError(f"clip {c.clipId} has no generated video yet")
    first, last = doc.timeline[0].transitionIn, doc.timeline[-1].transitionOut
    res = doc.outputSettings.resolution
    texts = [TextLayer(text=t.content, start=t.start, duration=t.duration, x=min(1.0, t.x / res.width),
                       y=min(1.0, t.y / res.height),
                       style=TextStyle(font=t.fontFamily or "Roboto", size=max(6, int(round(t.fontSize * scale))),
                                       colour=t.color, box=t.box))
             for t in doc.textLayers]
    audio = [AudioLayer(source=a.file, start=a.start, duration=a.duration, volume=a.volume, fade_in=a.fadeIn,
                        fade_out=a.fadeOut, role="music") for a in doc.audioLayers]
    out = doc.outputSettings
    preview = doc.render == "preview"
    quality = "medium" if preview and out.quality in ("high", "ultra") else out.quality
    output = OutputSettings(codec=out.codec, quality=quality, bitrate=None if preview else out.bitrate,
                            speed="fast" if preview else "balanced")
    return Timeline(width=w, height=h, fps=out.fps, clips=clips, texts=texts, audio=audio, output=output,
                    fade_in=first.duration if first and first.type == "fade" else 0.0,
                    fade_out=last.duration if last and last.type == "fade" else 0.0)
