"""The compositor's declarative timeline: one pydantic model shared by every producer of video.

A timeline is a sequence of visual clips (video, still image with optional Ken Burns zoom/pan, solid
colour) joined by transitions (cut, cross-fade, dissolve, wipe, fade through black), text layers and
captions drawn on top, and audio layers (speech, music, effects) mixed under it, plus output settings.
The renderer (source/compose/render.py) turns it into one ffmpeg filtergraph. Storyboards, narrated
videos and explainers all build one of these, so nothing here knows about any of them.

Times are seconds on the output timeline; everything is quantised to whole frames (`frames()`), so the
rendered frame count is exactly `total_frames`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_COLOUR_RE = re.compile(r"^#?[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
_NAMED = {"black": "000000", "white": "FFFFFF", "red": "FF0000", "green": "00FF00", "blue": "0000FF",
          "yellow": "FFFF00", "grey": "808080", "gray": "808080"}

TransitionType = Literal["cut", "crossfade", "fade", "dissolve", "wipe", "fade_black"]
Easing = Literal["linear", "ease_in", "ease_out", "ease_in_out"]


def parse_colour(value: str) -> str:
    """'#RRGGBB', 'RRGGBB', '#RRGGBBAA' or a few names -> 'RRGGBB' or 'RRGGBBAA' (upper case)."""
    v = str(value).strip()
    if v.lower() in _NAMED:
        return _NAMED[v.lower()]
    if not _COLOUR_RE.match(v):
        raise ValueError(f"colour {value!r} must be #RRGGBB, #RRGGBBAA or one of {', '.join(_NAMED)}")
    return v.lstrip("#").upper()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Transition(_Model):
    """How a clip enters from the previous one. Every kind but `cut` overlaps the two clips by `duration`.
    `fade` and `crossfade` are the same blend; `dissolve` is a pixel dissolve; `fade_black` dips to black."""

    type: TransitionType = "cut"
    duration: float = Field(0.5, ge=0, le=10)
    direction: Literal["left", "right", "up", "down"] = "left"  # wipes only

    @property
    def overlaps(self) -> bool:
        return self.type != "cut" and self.duration > 0


class KenBurns(_Model):
    """Zoom/pan over a still: zoom factors (1 = the frame filled exactly) and focus points (0..1 of the
    image, 0.5 = centre) at the start and end, with easing."""

    start_zoom: float = Field(1.0, ge=1.0, le=3.0)
    end_zoom: float = Field(1.15, ge=1.0, le=3.0)
    start_x: float = Field(0.5, ge=0, le=1)
    start_y: float = Field(0.5, ge=0, le=1)
    end_x: float = Field(0.5, ge=0, le=1)
    end_y: float = Field(0.5, ge=0, le=1)
    easing: Easing = "ease_in_out"


class _Clip(_Model):
    duration: float = Field(gt=0, le=3600)
    transition_in: Transition = Field(default_factory=Transition)


class ImageClip(_Clip):
    kind: Literal["image"] = "image"
    source: str  # a path, URL or task output location: resolved by the handler, never trusted
    fit: Literal["cover", "contain"] = "cover"
    ken_burns: KenBurns | None = None


class VideoClip(_Clip):
    kind: Literal["video"] = "video"
    source: str
    trim_start: float = Field(0.0, ge=0)
    fit: Literal["cover", "contain"] = "cover"


class ColourClip(_Clip):
    kind: Literal["colour"] = "colour"
    colour: str = "#000000"

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str) -> str:
        return "#" + parse_colour(v)


Clip = Annotated[ImageClip | VideoClip | ColourClip, Field(discriminator="kind")]


class TextStyle(_Model):
    """How text is drawn (libass). Sizes are pixels of the output frame."""

    font: str = "Roboto"
    size: int = Field(48, ge=6, le=400)
    colour: str = "#FFFFFF"
    bold: bool = False
    outline: float = Field(2.0, ge=0, le=20)
    outline_colour: str = "#000000"
    shadow: float = Field(2.0, ge=0, le=20)      # drop shadow offset in px
    shadow_colour: str = "#000000A0"
    box: bool = False                            # an opaque box behind the text
    box_colour: str = "#000000B0"
    band: bool = False                           # a dark gradient band behind the text (captions)
    band_height: float = Field(0.28, gt=0, le=1)  # fraction of the frame height
    band_opacity: float = Field(0.75, ge=0, le=1)
    position: Literal["bottom", "top", "center"] = "bottom"
    margin: int = Field(60, ge=0, le=2000)       # px from the edge (bottom/top) and the sides

    @field_validator("colour", "outline_colour", "shadow_colour", "box_colour")
    @classmethod
    def _colour(cls, v: str) -> str:
        return "#" + parse_colour(v)


class TextLayer(_Model):
    text: str = Field(min_length=1, max_length=2000)
    start: float = Field(ge=0)
    duration: float = Field(gt=0)
    x: float | None = Field(None, ge=0, le=1)    # centre of the text, fraction of the width (None: style)
    y: float | None = Field(None, ge=0, le=1)
    style: TextStyle = Field(default_factory=TextStyle)
    fade_in: float = Field(0.0, ge=0, le=10)
    fade_out: float = Field(0.0, ge=0, le=10)


class Caption(_Model):
    text: str = Field(min_length=1, max_length=2000)
    start: float = Field(ge=0)
    end: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> Caption:
        if self.end <= self.start:
            raise ValueError(f"caption ends ({self.end}) before it starts ({self.start})")
        return self


class AudioLayer(_Model):
    source: str
    start: float = Field(0.0, ge=0)
    duration: float | None = Field(None, gt=0)   # None: the whole file (cut at the video's end)
    trim_start: float = Field(0.0, ge=0)
    volume: float = Field(1.0, ge=0, le=10)
    fade_in: float = Field(0.0, ge=0, le=60)
    fade_out: float = Field(0.0, ge=0, le=60)
    role: Literal["speech", "music", "effect"] = "effect"


class Ducking(_Model):
    """Music is lowered to `gain` while any speech layer plays, ramping over `ramp` seconds."""

    enabled: bool = True
    gain: float = Field(0.25, ge=0, le=1)
    ramp: float = Field(0.3, ge=0, le=5)


class OutputSettings(_Model):
    codec: Literal["h264", "h265", "vp9", "av1"] = "h264"
    quality: Literal["low", "medium", "high", "ultra"] = "medium"
    bitrate: str | None = Field(None, pattern=r"^\d+(\.\d+)?[kKmM]?$")  # overrides quality when given
    speed: Literal["fast", "balanced", "slow"] = "balanced"
    encoder: Literal["auto", "cpu", "gpu"] = "auto"  # auto: NVENC when it opens, else CPU
    poster_time: float | None = Field(None, ge=0)    # None: the middle of the first clip
    audio_bitrate: str = Field("160k", pattern=r"^\d+[kK]$")


class Timeline(_Model):
    width: int = Field(ge=16, le=7680)
    height: int = Field(ge=16, le=4320)
    fps: float = Field(24.0, gt=0, le=120)
    clips: list[Clip] = Field(min_length=1, max_length=2000)
    texts: list[TextLayer] = Field(default_factory=list)
    captions: list[Caption] = Field(default_factory=list)
    caption_style: TextStyle = Field(default_factory=lambda: TextStyle(band=True))
    caption_fade: float = Field(0.15, ge=0, le=2)  # fades inside each caption's interval
    audio: list[AudioLayer] = Field(default_factory=list)
    ducking: Ducking = Field(default_factory=Ducking)
    fade_in: float = Field(0.0, ge=0, le=30)      # from black at the start
    fade_out: float = Field(0.0, ge=0, le=30)     # to black at the end
    output: OutputSettings = Field(default_factory=OutputSettings)

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"{v} must be even (4:2:0 video)")
        return v

    @model_validator(mode="after")
    def _transitions_fit(self) -> Timeline:
        frames = self.clip_frames()
        for i, clip in enumerate(self.clips):
            t = clip.transition_in
            if i == 0 or not t.overlaps:
                continue
            tf = self.frames(t.duration)
            if tf < 1:
                raise ValueError(f"clips[{i}].transition_in lasts less than one frame at {self.fps:g} fps")
            if tf >= min(frames[i - 1], frames[i]):
                raise ValueError(f"clips[{i}].transition_in ({t.duration}s) must be shorter than both clips it "
                                 f"joins ({frames[i - 1]} and {frames[i]} frames)")
        return self

    # -- frame arithmetic (one home for it) ----------------------------------------------------
    def frames(self, seconds: float) -> int:
        return int(round(seconds * self.fps))

    def clip_frames(self) -> list[int]:
        return [max(1, self.frames(c.duration)) for c in self.clips]

    def transition_frames(self) -> list[int]:
        """Overlap of clip i with clip i-1 in frames (0 for the first clip and for cuts)."""
        return [0 if i == 0 or not c.transition_in.overlaps else self.frames(c.transition_in.duration)
                for i, c in enumerate(self.clips)]

    def clip_start_frames(self) -> list[int]:
        starts, pos = [], 0
        for n, overlap in zip(self.clip_frames(), self.transition_frames()):
            pos -= overlap
            starts.append(pos)
            pos += n
        return starts

    @property
    def total_frames(self) -> int:
        return sum(self.clip_frames()) - sum(self.transition_frames())

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps
