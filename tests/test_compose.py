"""The compositor on tiny sizes: real ffmpeg renders of real images, videos and audio, checked by decoding
the output (frame counts, transitions, text, audio length, ducking, codecs, poster)."""

from __future__ import annotations

import math
import subprocess
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from pydantic import ValidationError

from source.compose.captions import escape_text
from source.compose.render import ffmpeg_exe, render
from source.compose.timeline import Timeline
from source.task_context import InvalidInput
from tests.worker_process import REPO

IMAGES = REPO / "samples" / "images"


def resolve(ref: str, what: str) -> Path:
    p = Path(ref)
    if not p.is_file():
        raise InvalidInput(f"{what} not found: {ref}")
    return p


def tone(path: Path, seconds: float, freq: float = 440.0, amp: float = 0.5, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    data = (np.sin(2 * math.pi * freq * t) * amp * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def tiny_video(path: Path, seconds: float, size: str = "80x60", fps: int = 10) -> Path:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r={fps}:d={seconds}",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def decode(path: Path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        codec = v.codec_context.name
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    audio = None
    with av.open(str(path)) as c:
        if c.streams.audio:
            audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
    return frames, codec, audio


def go(tmp_path: Path, spec: dict):
    tl = Timeline.model_validate(spec)
    out = tmp_path / "out.mp4"
    res = render(tl, output=out, poster=tmp_path / "poster.png", work=tmp_path / "work", resolve=resolve)
    return tl, res, decode(out)


def test_frame_arithmetic_and_validation():
    tl = Timeline.model_validate({"width": 64, "height": 48, "fps": 10, "clips": [
        {"kind": "colour", "duration": 1.0},
        {"kind": "colour", "duration": 1.0, "transition_in": {"type": "crossfade", "duration": 0.3}},
        {"kind": "colour", "duration": 0.5, "transition_in": {"type": "cut"}}]})
    assert tl.clip_frames() == [10, 10, 5] and tl.transition_frames() == [0, 3, 0]
    assert tl.clip_start_frames() == [0, 7, 17] and tl.total_frames == 22
    with pytest.raises(ValidationError, match="shorter than both clips"):
        Timeline.model_validate({"width": 64, "height": 48, "clips": [
            {"kind": "colour", "duration": 0.5},
            {"kind": "colour", "duration": 2, "transition_in": {"type": "wipe", "duration": 0.6}}]})
    with pytest.raises(ValidationError, match="even"):
        Timeline.model_validate({"width": 63, "height": 48, "clips": [{"kind": "colour", "duration": 1}]})
    with pytest.raises(ValidationError, match="colour"):
        Timeline.model_validate({"width": 64, "height": 48, "clips": [{"kind": "colour", "colour": "pink!",
                                                                       "duration": 1}]})


def test_clips_transitions_text_and_audio(tmp_path):
    video = tiny_video(tmp_path / "clip.mp4", 0.8)  # shorter than its clip: the last frame is held
    music = tone(tmp_path / "music.wav", 10.0)
    tl, res, (frames, codec, audio) = go(tmp_path, {
        "width": 64, "height": 48, "fps": 10,
        "clips": [
            {"kind": "colour", "colour": "#FFFFFF", "duration": 1.0},
            {"kind": "colour", "colour": "#FFFFFF", "duration": 1.0,
             "transition_in": {"type": "fade_black", "duration": 0.4}},
            {"kind": "image", "source": str(IMAGES / "rocket.png"), "duration": 1.0, "ken_burns": {},
             "transition_in": {"type": "wipe", "duration": 0.4, "direction": "left"}},
            {"kind": "video", "source": str(video), "duration": 1.2, "transition_in": {"type": "cut"}},
        ],
        "texts": [{"text": "Hi {there}", "start": 0.0, "duration": 0.5,
                   "style": {"size": 14, "colour": "red", "outline": 0, "shadow": 0, "margin": 4}}],
        "audio": [{"source": str(music), "start": 0.5, "volume": 0.5, "fade_in": 0.2, "role": "music"}],
    })
    assert len(frames) == tl.total_frames == 10 + 10 + 10 + 12 - 4 - 4
    assert codec == "h264" and res.has_audio and abs(res.audio_duration - tl.duration) < 0.05
    assert any("held" in a for a in res.adjustments)
    # fade through black: the overlap (frames 6-9) dips far toward black, both sides white
    assert frames[4].mean() > 240 and min(f.mean() for f in frames[6:10]) < 90 and frames[11].mean() > 240
    # the red text is drawn in the first half second only
    red = lambda f: int(((f[..., 0] > 180) & (f[..., 1] < 80) & (f[..., 2] < 80)).sum())  # noqa: E731
    assert red(frames[2]) > 5 and red(frames[7]) == 0
    # music starts at 0.5 s: silence before
    rate = len(audio) / tl.duration
    assert np.abs(audio[: int(0.45 * rate)]).max() < 1e-3 and np.abs(audio[int(1.0 * rate):]).max() > 0.1
    assert (tmp_path / "poster.png").is_file()


def test_music_is_ducked_under_speech(tmp_path):
    music = tone(tmp_path / "music.wav", 6.0, 220.0, 0.4)
    speech = tone(tmp_path / "speech.wav", 1.5, 880.0, 0.0001)  # near-silent "speech": only its span matters
    tl, res, (_, _, audio) = go(tmp_path, {
        "width": 32, "height": 32, "fps": 10, "clips": [{"kind": "colour", "duration": 5.0}],
        "audio": [{"source": str(music), "role": "music"},
                  {"source": str(speech), "start": 2.0, "role": "speech"}],
        "ducking": {"gain": 0.25, "ramp": 0.2}})
    rate = len(audio) / tl.duration
    rms = lambda a, b: float(np.sqrt(np.mean(audio[int(a * rate):int(b * rate)] ** 2)))  # noqa: E731
    assert rms(2.5, 3.2) / rms(0.5, 1.5) == pytest.approx(0.25, abs=0.03)
    assert rms(4.0, 4.8) / rms(0.5, 1.5) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("codec,name", [("h265", "hevc"), ("vp9", "vp9"), ("av1", "av1")])
def test_other_codecs(tmp_path, codec, name):
    tl, res, (frames, got, _) = go(tmp_path, {
        "width": 64, "height": 64, "fps": 8, "clips": [{"kind": "image", "source": str(IMAGES / "chelsea.png"),
                                                        "duration": 0.5}],
        "output": {"codec": codec, "quality": "low", "speed": "fast"}})
    assert got in (name, "libdav1d", "libaom-av1") and len(frames) == 4 and not res.has_audio


def test_missing_source_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        go(tmp_path, {"width": 32, "height": 32, "clips": [{"kind": "image", "source": str(tmp_path / "no.png"),
                                                             "duration": 1}]})


def test_text_is_literal():
    assert escape_text("a {\\b1} b\nc") == "a \\{\\\u2060b1\\} b\\Nc"


def test_storyboard_document_renders_with_overlapping_transitions(tmp_path):
    from source.compose.storyboard import Storyboard, render_size, storyboard_timeline

    a, b = tiny_video(tmp_path / "a.mp4", 1.5), tiny_video(tmp_path / "b.mp4", 1.5)
    music = tone(tmp_path / "m.wav", 2.0)
    doc = Storyboard.model_validate({
        "projectId": "p1", "render": "final",
        "outputSettings": {"resolution": {"width": 96, "height": 64}, "fps": 10, "codec": "h264", "quality": "low"},
        "timeline": [
            {"clipId": "c1", "sourceImage": str(IMAGES / "rocket.png"), "duration": 1.5,
             "transitionOut": {"type": "fade", "duration": 0.5}},
            {"clipId": "c2", "sourceImage": str(IMAGES / "chelsea.png"), "duration": 1.5,
             "transitionIn": {"type": "wipe", "duration": 0.3}},  # wins over c1's transitionOut
            {"clipId": "c3", "sourceImage": str(IMAGES / "coffee.png"), "duration": 1.0,
             "transitionIn": {"type": "cut"}, "sourceFile": str(b)},
        ],
        "audioLayers": [{"file": str(music), "start": 0.5, "volume": 0.8, "fadeOut": 0.5}],
        "textLayers": [{"content": "Title", "start": 0, "duration": 1, "x": 48, "y": 32, "fontSize": 12}],
    })
    tl = storyboard_timeline(doc, {"c1": str(a)})
    assert [c.kind for c in tl.clips] == ["video", "image", "video"]  # c2 not generated yet: a still preview
    assert [c.transition_in.type for c in tl.clips[1:]] == ["wipe", "cut"]
    out = tmp_path / "sb.mp4"
    res = render(tl, output=out, poster=tmp_path / "sb.png", work=tmp_path / "w", resolve=resolve)
    frames, _, audio = decode(out)
    assert len(frames) == tl.total_frames == 15 + 15 + 10 - 3
    assert res.has_audio and abs(res.audio_duration - 3.7) < 0.05 and frames[0].shape == (64, 96, 3)
    big = doc.model_copy(update={"render": "preview", "outputSettings": doc.outputSettings.model_copy(
        update={"resolution": doc.outputSettings.resolution.model_copy(update={"width": 1920, "height": 1080})})})
    assert render_size(big) == (1280, 720)


def test_paths_with_filtergraph_characters_and_gpu_fallback(tmp_path):
    from source.compose.render import encoder_opens

    odd = tmp_path / "it's [a]; b,c:d"
    odd.mkdir()
    tl = Timeline.model_validate({"width": 64, "height": 48, "fps": 10,
                                  "clips": [{"kind": "colour", "colour": "#FFFFFF", "duration": 0.5}],
                                  "texts": [{"text": "x", "start": 0, "duration": 0.5,
                                             "style": {"size": 30, "colour": "red", "margin": 2}}],
                                  "output": {"encoder": "gpu"}})
    res = render(tl, output=odd / "o.mp4", poster=odd / "p.png", work=odd / "work", resolve=resolve)
    frames, _, _ = decode(odd / "o.mp4")
    assert len(frames) == 5 and int(((frames[2][..., 0] > 180) & (frames[2][..., 1] < 80)).sum()) > 5
    if not encoder_opens("h264_nvenc"):  # no GPU here: the CPU encoder, and the output says so
        assert res.encoder == "libx264" and any("GPU" in a for a in res.adjustments)
    assert sorted(p.name for p in odd.iterdir()) == ["o.mp4", "p.png", "work"]  # no partial files left
