"""Streaming cross-fade stitch: exact frame arithmetic, blend values, bounded memory, fps/size post-passes."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from source.media.stitch import count_frames, crossfade_weights, stitch_videos, upsample_fps, upscale_video
from source.media.video_io import probe_video, read_frames, write_video
from source.task_context import InvalidInput


def flat_video(path: Path, values: list[int], size=(32, 24), fps=16) -> Path:
    """One flat grey frame per value (H.264 keeps flat frames within a level or two)."""
    w, h = size
    write_video((np.full((h, w, 3), v, np.uint8) for v in values), path, fps=fps)
    return path


def levels(path: Path) -> list[float]:
    return [float(f.mean()) for f in read_frames(path)]


def test_weights_are_symmetric_cosine_ease_strictly_inside():
    for o in (1, 2, 5, 12):
        a = crossfade_weights(o)
        assert len(a) == o and np.all(a > 0) and np.all(a < 1)
        assert np.all(np.diff(a) > 0)
        assert np.allclose(a + a[::-1], 1.0)
    assert crossfade_weights(1)[0] == pytest.approx(0.5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4).flatmap(
    lambda lens: st.tuples(st.just(lens),
                           st.tuples(*[st.integers(0, min(a, b)) for a, b in zip(lens, lens[1:])]))))
def test_frame_count_is_sum_of_lengths_minus_overlaps(tmp_path_factory, case):
    lengths, overlaps = case
    d = tmp_path_factory.mktemp("hyp")
    segs = [flat_video(d / f"s{i}.mp4", [30 + 40 * i] * n, size=(16, 16)) for i, n in enumerate(lengths)]
    res = stitch_videos(segs, list(overlaps), d / "out.mp4", fps=16)
    expected = sum(lengths) - sum(overlaps)
    assert res.frames == expected
    assert probe_video(d / "out.mp4").frames == expected
    assert (res.width, res.height, res.fps) == (16, 16, 16)


@pytest.mark.parametrize("lengths,overlaps", [
    ([9, 9, 9], [0, 0]),          # plain concatenation (the seed's broken path)
    ([17, 13, 21], [4, 6]),
    ([5, 5], [5]),                # a whole segment is the overlap
    ([6, 3, 6], [2, 3]),          # middle segment blended on both sides, fully used
    ([1], []),                    # single segment: a copy
])
def test_frame_count_fixed_mixes(tmp_path, lengths, overlaps):
    segs = [flat_video(tmp_path / f"s{i}.mp4", [50 + 60 * i] * n) for i, n in enumerate(lengths)]
    res = stitch_videos(segs, overlaps, tmp_path / "out.mp4", fps=16)
    assert res.frames == probe_video(tmp_path / "out.mp4").frames == sum(lengths) - sum(overlaps)


def test_zero_overlap_concatenates_in_order(tmp_path):
    a = flat_video(tmp_path / "a.mp4", [20, 40, 60])
    b = flat_video(tmp_path / "b.mp4", [120, 160])
    stitch_videos([a, b], [0], tmp_path / "out.mp4", fps=16)
    assert np.allclose(levels(tmp_path / "out.mp4"), [20, 40, 60, 120, 160], atol=2.5)


def test_blended_frames_lie_between_sources_and_follow_the_weights(tmp_path):
    a = flat_video(tmp_path / "a.mp4", [40] * 8)
    b = flat_video(tmp_path / "b.mp4", [200] * 8)
    stitch_videos([a, b], [4], tmp_path / "out.mp4", fps=16)
    lv = levels(tmp_path / "out.mp4")
    assert len(lv) == 12
    assert np.allclose(lv[:4], 40, atol=2.5) and np.allclose(lv[8:], 200, atol=2.5)
    blend = np.array(lv[4:8])
    assert np.all(blend > 42) and np.all(blend < 198) and np.all(np.diff(blend) > 0)
    assert np.allclose(blend, 40 + 160 * crossfade_weights(4), atol=3)


def test_different_sizes_are_resized_to_the_first_or_given_size(tmp_path):
    a = flat_video(tmp_path / "a.mp4", [60] * 5, size=(48, 32))
    b = flat_video(tmp_path / "b.mp4", [180] * 7, size=(64, 48))
    res = stitch_videos([a, b], [2], tmp_path / "out.mp4", fps=16)
    assert (res.frames, res.width, res.height) == (10, 48, 32)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.frames, info.width, info.height) == (10, 48, 32)
    res = stitch_videos([a, b], [2], tmp_path / "out2.mp4", fps=16, size=(64, 48), upscale_to=(96, 72))
    info = probe_video(tmp_path / "out2.mp4")
    assert (res.width, res.height) == (info.width, info.height) == (96, 72) and info.frames == 10


def test_sharpen_changes_only_blended_frames(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    base = np.repeat(np.repeat(base[::8, ::8], 8, 0), 8, 1)  # blocky texture H.264 keeps well
    write_video([base] * 6, tmp_path / "a.mp4")
    write_video([255 - base] * 6, tmp_path / "b.mp4")
    stitch_videos([tmp_path / "a.mp4", tmp_path / "b.mp4"], [3], tmp_path / "plain.mp4", fps=16)
    stitch_videos([tmp_path / "a.mp4", tmp_path / "b.mp4"], [3], tmp_path / "sharp.mp4", fps=16, sharpen=1.0)
    plain, sharp = read_frames(tmp_path / "plain.mp4"), read_frames(tmp_path / "sharp.mp4")
    assert len(plain) == len(sharp) == 9
    diff = [np.abs(p.astype(int) - s).mean() for p, s in zip(plain, sharp)]
    assert max(diff[3:6]) > 3 * max(diff[:3] + diff[6:]) and max(diff[3:6]) > 1


def test_clear_errors(tmp_path):
    a = flat_video(tmp_path / "a.mp4", [50] * 4)
    b = flat_video(tmp_path / "b.mp4", [90] * 6)
    with pytest.raises(InvalidInput, match="overlap 0 is 5 frames"):
        stitch_videos([a, b], [5], tmp_path / "o.mp4", fps=16)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(InvalidInput, match="junk.mp4"):
        stitch_videos([a, junk], [2], tmp_path / "o.mp4", fps=16)
    with pytest.raises(InvalidInput, match="not found"):
        stitch_videos([a, tmp_path / "missing.mp4"], [0], tmp_path / "o.mp4", fps=16)
    with pytest.raises(InvalidInput, match="overlaps"):
        stitch_videos([a, b], [], tmp_path / "o.mp4", fps=16)
    with pytest.raises(InvalidInput, match="fps_multiplier"):
        stitch_videos([a, b], [1], tmp_path / "o.mp4", fps=16, fps_multiplier=3.5)
    assert not (tmp_path / "o.mp4").exists()


def _stitch_peak(tmp_path: Path, tag: str, seg_len: int) -> tuple[int, int]:
    rng = np.random.default_rng(1)
    tex = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    segs = []
    for i in range(3):
        p = tmp_path / f"{tag}{i}.mp4"
        write_video((np.roll(tex, k + 7 * i, axis=1) for k in range(seg_len)), p)
        segs.append(p)
    tracemalloc.start()
    try:
        res = stitch_videos(segs, [6, 6], tmp_path / f"{tag}_out.mp4", fps=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return res.frames, peak


def test_peak_memory_does_not_grow_with_length(tmp_path):
    n1, peak1 = _stitch_peak(tmp_path, "short", 40)
    n8, peak8 = _stitch_peak(tmp_path, "long", 320)
    assert (n1, n8) == (3 * 40 - 12, 3 * 320 - 12)
    decoded_long = n8 * 96 * 128 * 3  # ~35 MB if whole segments were held
    assert peak8 < 1.5 * peak1 + 512 * 1024, (peak1, peak8)
    assert peak8 < decoded_long / 8, (peak8, decoded_long)


def test_fps_multiplier_uses_rife_and_gives_n_minus_1_times_m_plus_1(tmp_path):
    rng = np.random.default_rng(2)
    tex = np.repeat(np.repeat((rng.random((8, 12, 3)) * 255).astype(np.uint8), 8, 0), 8, 1)
    write_video((np.roll(tex, 2 * k, axis=1) for k in range(4)), tmp_path / "a.mp4")
    write_video((np.roll(tex, 2 * k + 6, axis=1) for k in range(4)), tmp_path / "b.mp4")
    res = stitch_videos([tmp_path / "a.mp4", tmp_path / "b.mp4"], [1], tmp_path / "x2.mp4", fps=8,
                        fps_multiplier=2)
    n = 4 + 4 - 1
    assert res.frames == (n - 1) * 2 + 1 == probe_video(tmp_path / "x2.mp4").frames
    assert res.fps == 16 and abs(probe_video(tmp_path / "x2.mp4").fps - 16) < 0.01
    assert upsample_fps(tmp_path / "a.mp4", tmp_path / "a4.mp4", 4, fps=8) == (4 - 1) * 4 + 1
    assert count_frames(tmp_path / "a4.mp4") == 13


def test_upscale_video_streams_to_size(tmp_path):
    a = flat_video(tmp_path / "a.mp4", [70] * 5, size=(32, 24), fps=12)
    assert upscale_video(a, tmp_path / "big.mp4", (64, 48)) == 5
    info = probe_video(tmp_path / "big.mp4")
    assert (info.frames, info.width, info.height) == (5, 64, 48) and abs(info.fps - 12) < 0.01


# -- speed work: in-place blend, pass-through frames, encoder thread, encoder choice ----------------------------

def test_in_place_blend_equals_the_float32_formula():
    from source.media.stitch import _Blender

    rng = np.random.default_rng(3)
    blend = _Blender()
    for alpha in crossfade_weights(5):
        a = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
        b = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
        want = ((a.astype(np.float32) * np.float32(1.0 - alpha) + b.astype(np.float32) * np.float32(alpha))
                + 0.5).astype(np.uint8)
        out = blend(a, b, float(alpha))
        assert out is a  # written into the earlier frame, no new frame array
        assert np.array_equal(out, want)
    ro = np.full((4, 4, 3), 10, np.uint8)
    ro.flags.writeable = False  # e.g. np.asarray of a PIL image
    assert np.array_equal(blend(ro, np.full_like(ro, 30), 0.5), np.full((4, 4, 3), 20, np.uint8))


def test_decoded_frames_and_arrays_mix_in_one_threaded_video(tmp_path):
    from source.media.video_io import VideoWriter, iter_video_frames, passthrough_ok

    a = flat_video(tmp_path / "a.mp4", [30, 60, 90])
    b = flat_video(tmp_path / "b.mp4", [150, 180])
    decoded = list(iter_video_frames(a)) + list(iter_video_frames(b))
    assert all(passthrough_ok(f, 32, 24) for f in decoded)
    with VideoWriter(tmp_path / "mix.mp4", fps=16, threaded=True) as w:
        w.write(decoded[0])
        w.write(np.full((24, 32, 3), 200, np.uint8))
        for f in decoded[1:]:  # pts of the two files restart at 0: the writer must re-time them
            w.write(f)
        w.write(np.full((24, 32, 3), 10, np.uint8))
    assert np.allclose(levels(tmp_path / "mix.mp4"), [30, 200, 60, 90, 150, 180, 10], atol=2.5)
    # a frame tagged BT.709 would shift colours if passed through: it goes the RGB way
    tagged = next(iter(iter_video_frames(a)))
    tagged.colorspace = 1
    assert not passthrough_ok(tagged, 32, 24)
    assert not passthrough_ok(decoded[0], 64, 48)


def test_threaded_writer_gives_the_same_frames_and_cleans_up_on_error(tmp_path):
    import threading

    from source.media.video_io import VideoWriter

    rng = np.random.default_rng(4)
    frames = [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(7)]
    for threaded in (False, True):
        with VideoWriter(tmp_path / f"t{threaded}.mp4", threaded=threaded) as w:
            for f in frames:
                w.write(f)
    assert np.array_equal(np.stack(read_frames(tmp_path / "tFalse.mp4")),
                          np.stack(read_frames(tmp_path / "tTrue.mp4")))
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(tmp_path / "bad.mp4", threaded=True) as w:
        for f in frames[:3]:
            w.write(f)
        raise RuntimeError("boom")
    assert not (tmp_path / "bad.mp4").exists()
    assert threading.active_count() == before  # the encoder thread was stopped
    with pytest.raises(ValueError, match="differs"), VideoWriter(tmp_path / "bad2.mp4", threaded=True) as w:
        w.write(frames[0])
        w.write(frames[0][:32])
    assert not (tmp_path / "bad2.mp4").exists()


def test_encoder_choice_cpu_fallback_is_recorded(tmp_path, monkeypatch):
    import av

    from source.media.video_io import ENCODER_ENV, choose_encoder

    a = flat_video(tmp_path / "a.mp4", [40] * 5, size=(160, 96))
    b = flat_video(tmp_path / "b.mp4", [200] * 5, size=(160, 96))
    res = stitch_videos([a, b], [2], tmp_path / "auto.mp4", fps=16)
    codec, note = choose_encoder(160, 96)
    assert res.encoder == codec and codec in ("libx264", "h264_nvenc")
    if codec == "libx264":  # no GPU encoder here: the reason is recorded (this machine: listed, fails to open)
        assert note.startswith("CPU fallback: h264_nvenc")
        assert ("did not open" in note) == ("h264_nvenc" in av.codecs_available)
    assert count_frames(tmp_path / "auto.mp4") == 8
    monkeypatch.setenv(ENCODER_ENV, "libx264")  # forcing the CPU encoder, e.g. on a shared GPU
    assert choose_encoder(160, 96) == ("libx264", "libx264 requested")
    res = stitch_videos([a, b], [2], tmp_path / "cpu.mp4", fps=16)
    assert res.encoder == "libx264" and count_frames(tmp_path / "cpu.mp4") == 8
    assert np.allclose(levels(tmp_path / "cpu.mp4"), 40 + 160 * np.r_[0, 0, 0, crossfade_weights(2), 1, 1, 1],
                       atol=3)
    with pytest.raises(ValueError, match="unknown video encoder"):
        choose_encoder(160, 96, "x265")
    monkeypatch.setenv(ENCODER_ENV, "x265")  # a typo in the worker's environment: warned, then auto
    assert choose_encoder(160, 96) == (codec, note)


def test_join_frames_match_their_passed_through_neighbours(tmp_path):
    """A still video stitched to itself: blended frames (through RGB) must not step in brightness against the
    frames passed straight to the encoder (swscale's default yuv->rgb would darken them by ~1 level)."""
    from PIL import Image

    img = np.asarray(Image.open(Path(__file__).resolve().parent.parent / "samples/images/astronaut.png")
                     .convert("RGB").resize((128, 80)))
    write_video([img] * 10, tmp_path / "still.mp4")
    stitch_videos([tmp_path / "still.mp4"] * 2, [4], tmp_path / "out.mp4", fps=16)
    frames = read_frames(tmp_path / "out.mp4")
    assert len(frames) == 16
    means = np.array([f.astype(np.float64).mean() for f in frames])
    passed, blended = np.r_[means[:6], means[10:]], means[6:10]
    assert np.abs(blended - passed.mean()).max() < 0.3, means
