"""The narrated-video layout: story parts (a still and its spoken captions) -> a Timeline, once the speech
durations are known (so it runs inside the compose task, after the speech tasks).

Layout of part i (t = the transition's length):
    [ t lead | caption 1 speech | gap | caption 2 speech | ... | t tail ]
Parts overlap by t (the transition happens in the lead/tail, never over speech), so the video lasts
sum(speech) + gaps + (parts + 1) * t. Each caption is shown from its first to its last spoken word (word
timings where known, else the voiced span of the WAV), with short fades inside that interval. Ken Burns
alternates zooming in and out, with eased motion toward a slightly different focus point.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from source.compose.timeline import (
    AudioLayer,
    Caption,
    Ducking,
    ImageClip,
    KenBurns,
    OutputSettings,
    TextStyle,
    Timeline,
    Transition,
)


class MusicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    volume: float = Field(0.35, ge=0, le=4)
    duck_gain: float = Field(0.3, ge=0, le=1)  # music level under speech, relative to `volume`
    fade_in: float = Field(1.0, ge=0, le=30)
    fade_out: float = Field(1.5, ge=0, le=30)


class NarratedCaption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    speech_task_id: str


class NarratedPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    captions: list[NarratedCaption] = Field(min_length=1)


class NarratedLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: list[NarratedPart] = Field(min_length=1, max_length=500)
    width: int
    height: int
    fps: float = Field(24.0, gt=0, le=60)
    ken_burns: bool = True
    transition: Literal["fade_black", "crossfade"] = "fade_black"
    transition_duration: float = Field(0.6, ge=0.05, le=5)
    caption_style: TextStyle | None = None
    caption_gap: float = Field(0.3, ge=0, le=5)
    caption_fade: float = Field(0.15, ge=0, le=1)
    background_music: MusicSpec | None = None
    output: OutputSettings = Field(default_factory=OutputSettings)


def default_caption_style(width: int, height: int) -> TextStyle:
    short = min(width, height)
    return TextStyle(size=max(12, int(round(short * 0.065))), band=True, band_height=0.3, position="bottom",
                     margin=max(8, int(round(height * 0.08))), outline=max(1.0, short / 300),
                     shadow=max(1.0, short / 300))


def _ken_burns(i: int) -> KenBurns:
    # alternate in/out and drift a little, so consecutive parts do not move the same way
    drift = 0.06 if i % 2 == 0 else -0.06
    if i % 2 == 0:
        return KenBurns(start_zoom=1.0, end_zoom=1.15, start_x=0.5, start_y=0.5, end_x=0.5 + drift, end_y=0.45)
    return KenBurns(start_zoom=1.15, end_zoom=1.0, start_x=0.5 + drift, start_y=0.45, end_x=0.5, end_y=0.5)


def build_timeline(layout: NarratedLayout, speech: dict[str, tuple[str, dict]]) -> tuple[Timeline, dict]:
    """`speech`: speech task id -> (audio source reference, its timing record). Returns the timeline and a
    report (per caption: text, audio start, shown from/to)."""
    t = layout.transition_duration
    fps = layout.fps
    durations: list[float] = []
    for part in layout.parts:
        spoken = sum(speech[c.speech_task_id][1]["duration"] for c in part.captions)
        durations.append(t + spoken + layout.caption_gap * (len(part.captions) - 1) + t)
    clips = []
    for i, (part, d) in enumerate(zip(layout.parts, durations)):
        clips.append(ImageClip(source=part.image, duration=d, ken_burns=_ken_burns(i) if layout.ken_burns else None,
                               transition_in=Transition(type=layout.transition, duration=t) if i else Transition()))
    style = layout.caption_style or default_caption_style(layout.width, layout.height)
    draft = Timeline(width=layout.width, height=layout.height, fps=fps, clips=clips, caption_style=style,
                     output=layout.output)
    starts = [s / fps for s in draft.clip_start_frames()]  # frame-exact part starts
    audio: list[AudioLayer] = []
    captions: list[Caption] = []
    report = []
    for i, part in enumerate(layout.parts):
        cursor = starts[i] + t
        for j, cap in enumerate(part.captions):
            source, record = speech[cap.speech_task_id]
            dur = float(record["duration"])
            s0 = float(record.get("speech_start", 0.0))
            s1 = float(record.get("speech_end", dur)) or dur
            if s1 <= s0:
                s0, s1 = 0.0, dur
            audio.append(AudioLayer(source=source, start=round(cursor, 4), duration=dur, role="speech"))
            shown = (round(cursor + s0, 4), round(cursor + s1, 4))
            captions.append(Caption(text=cap.text, start=shown[0], end=shown[1]))
            report.append({"part": i, "caption": j, "text": cap.text, "audio_start": round(cursor, 4),
                           "audio_duration": round(dur, 4), "shown_from": shown[0], "shown_to": shown[1],
                           "timing_method": record.get("timing_method")})
            cursor += dur + (layout.caption_gap if j < len(part.captions) - 1 else 0.0)
    ducking = Ducking()
    if layout.background_music is not None:
        m = layout.background_music
        ducking = Ducking(enabled=True, gain=m.duck_gain)
        audio.insert(0, AudioLayer(source=m.source, start=0.0, duration=draft.duration, volume=m.volume,
                                   fade_in=m.fade_in, fade_out=m.fade_out, role="music"))
    timeline = draft.model_copy(update={"audio": audio, "captions": captions, "ducking": ducking,
                                        "caption_fade": layout.caption_fade})
    return Timeline.model_validate(timeline.model_dump()), {"captions": report, "part_starts": starts,
                                                            "part_durations": durations}
