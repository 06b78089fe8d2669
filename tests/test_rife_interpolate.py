"""RIFE v4.x IFNet (our PyTorch implementation with the MIT flownet.pkl weights) and the
`rife_interpolate_images` handler, on real photographs from scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from source.handler_registry import run_handler
from source.media.rife import RifeInterpolator, load_ifnet_state
from source.media.video_io import probe_video, read_frames
from source.model_files import rife_weights_path
from source.storage import Storage
from source.task_context import InvalidInput, TaskContext


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="session")
def rife() -> RifeInterpolator:
    return RifeInterpolator.load(device="cpu")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return np.asarray(Image.fromarray(data.astronaut()).resize((700, 700), Image.LANCZOS))


def shifted_triplet(img: np.ndarray, h: int, w: int, dx: int, dy: int = 0):
    """Crops at offsets 0, d, 2d: a camera pan whose true middle frame is the centre crop."""
    y0, x0 = 40, 40
    def crop(k):
        return img[y0 + k * dy:y0 + k * dy + h, x0 + k * dx:x0 + k * dx + w].copy()
    return crop(0), crop(1), crop(2)


def test_weights_drop_training_keys_and_fit_the_network():
    state = load_ifnet_state(rife_weights_path())
    assert not any(k.startswith(("teacher.", "module.")) for k in state)
    assert "block4.lastconv.0.weight" in state and "encode.cnn3.weight" in state


def test_middle_frame_beats_plain_blend(rife, photo):
    a, mid, b = shifted_triplet(photo, 240, 320, dx=8, dy=3)  # neither side a multiple of 64: pad + crop
    out = rife.interpolate(a, b, 0.5)
    assert out.shape == a.shape and out.dtype == np.uint8
    blend = ((a.astype(np.float32) + b) / 2 + 0.5).astype(np.uint8)
    inner = (slice(16, -16), slice(16, -16))  # borders see content that is in neither input
    p_rife, p_blend = psnr(out[inner], mid[inner]), psnr(blend[inner], mid[inner])
    assert p_rife > 32, (p_rife, p_blend)
    assert p_rife > p_blend + 10, (p_rife, p_blend)


def test_quarter_time_lands_a_quarter_of_the_way(rife, photo):
    a, _, b = shifted_triplet(photo, 192, 256, dx=8)
    truth = photo[40:40 + 192, 44:44 + 256]  # 1/4 of the 16-pixel pan
    out = rife.interpolate(a, b, 0.25)
    inner = (slice(16, -16), slice(16, -16))
    assert psnr(out[inner], truth[inner]) > 30


def test_transition_gives_exactly_n_frames_with_endpoints(rife, photo):
    a, _, b = shifted_triplet(photo, 64, 96, dx=4)
    for n in (2, 3, 12):  # more than the seed's cap of 9 real frames
        frames = list(rife.transition(a, b, n))
        assert len(frames) == n
        assert np.array_equal(frames[0], a) and np.array_equal(frames[-1], b)
        assert all(f.shape == a.shape for f in frames)
    frames = list(rife.transition(a, b, 12))
    # the sequence moves monotonically away from a: distance to a grows along the transition
    d = [np.abs(f.astype(int) - a).mean() for f in frames]
    assert all(d[i] <= d[i + 1] + 0.5 for i in range(len(d) - 1))
    assert len({f.tobytes() for f in frames}) == 12  # no frozen tail


def test_transition_rejects_bad_input(rife, photo):
    a = photo[:64, :64]
    with pytest.raises(InvalidInput):
        list(rife.transition(a, a, 1))
    with pytest.raises(InvalidInput):
        rife.interpolate(a, photo[:64, :80])


# -- the rife_interpolate_images handler ------------------------------------------------------------------

@pytest.fixture
def ctx_factory(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    storage = Storage(tmp_path / "public" / "files", location_base=tmp_path / "public", input_roots=[inputs])
    reports: list[tuple[float, str | None]] = []

    def make(task_id="t-rife"):
        return TaskContext(task_id=task_id, task_type="rife_interpolate_images", attempt=1, worker_id="w",
                           storage=storage, report_progress=lambda f, m: reports.append((f, m)))

    make.inputs = inputs
    make.reports = reports
    make.storage = storage
    return make


def test_handler_writes_requested_frames_at_requested_size(ctx_factory, tmp_path):
    p1, p2 = ctx_factory.inputs / "a.png", ctx_factory.inputs / "b.jpg"
    Image.fromarray(data.chelsea()).save(p1)
    Image.fromarray(data.coffee()).save(p2)
    ctx = ctx_factory()
    res = run_handler("rife_interpolate_images",
                      {"input_image_path1": str(p1), "input_image_path2": str(p2), "frames": 11,
                       "resolution": "96x64", "fps": 12, "output_path": "/ignored/out.mp4"}, ctx)
    assert res.result == {"frames": 11, "width": 96, "height": 64, "fps": 12.0}
    assert res.output_location.startswith("files/rife_")
    path = ctx_factory.storage.location_base / res.output_location
    info = probe_video(path)
    assert (info.frames, info.width, info.height) == (11, 96, 64)
    assert abs(info.fps - 12) < 0.01
    frames = read_frames(path)
    ref1 = np.asarray(Image.fromarray(data.chelsea()).resize((96, 64), Image.LANCZOS)).astype(int)
    assert np.abs(frames[0].astype(int) - ref1).mean() < 8  # first frame is image 1 (after H.264)
    fractions = [f for f, _ in ctx_factory.reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not (tmp_path / "ignored").exists()


def test_handler_missing_file_is_a_clear_error(ctx_factory):
    p1 = ctx_factory.inputs / "a.png"
    Image.fromarray(data.chelsea()).save(p1)
    with pytest.raises(InvalidInput, match="not found"):
        run_handler("rife_interpolate_images",
                    {"input_image_path1": str(p1), "input_image_path2": str(ctx_factory.inputs / "nope.png"),
                     "frames": 3}, ctx_factory())


def test_handler_non_image_bytes_is_a_clear_error(ctx_factory):
    p1, p2 = ctx_factory.inputs / "a.png", ctx_factory.inputs / "b.png"
    Image.fromarray(data.chelsea()).save(p1)
    p2.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InvalidInput, match="not a readable image"):
        run_handler("rife_interpolate_images",
                    {"input_image_path1": str(p1), "input_image_path2": str(p2), "frames": 3}, ctx_factory())


def test_handler_validates_params(ctx_factory):
    with pytest.raises(InvalidInput, match="frames"):
        run_handler("rife_interpolate_images",
                    {"input_image_path1": "a.png", "input_image_path2": "b.png", "frames": 1}, ctx_factory())
    with pytest.raises(InvalidInput, match="resolution"):
        run_handler("rife_interpolate_images",
                    {"input_image_path1": "a.png", "input_image_path2": "b.png", "frames": 3,
                     "resolution": "big"}, ctx_factory())


def test_odd_and_tiny_sizes_are_padded_and_cropped_back(rife, photo):
    for h, w in ((33, 47), (8, 8), (70, 130)):
        a, _, b = shifted_triplet(photo, h, w, dx=2)
        out = rife.interpolate(a, b, 0.3)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_handler_caps_frames_and_total_pixels_and_quotes_only_an_excerpt(ctx_factory):
    from source.handlers.rife_interpolate import MAX_FRAMES, MAX_TOTAL_PIXELS

    p1, p2 = ctx_factory.inputs / "a.png", ctx_factory.inputs / "b.png"
    Image.fromarray(data.chelsea()).save(p1)
    Image.fromarray(data.coffee()).save(p2)
    base = {"input_image_path1": str(p1), "input_image_path2": str(p2)}
    with pytest.raises(InvalidInput, match=f"frames: Input should be less than or equal to {MAX_FRAMES}"):
        run_handler("rife_interpolate_images", {**base, "frames": 10**9}, ctx_factory())
    # within the frame cap but over the pixel budget: refused before any image is decoded at that size
    frames = MAX_TOTAL_PIXELS // (4096 * 4096) + 1
    with pytest.raises(InvalidInput, match=f"{frames} frames of 4096x4096 exceed the cap"):
        run_handler("rife_interpolate_images", {**base, "frames": frames, "resolution": "4096x4096"}, ctx_factory())
    huge = "9" * 100_000
    for params in ({**base, "frames": 3, "resolution": huge}, {**base, "frames": 3, "resolution": f"{huge}x16"},
                   {**base, "input_image_path1": huge, "frames": 3}):
        with pytest.raises(InvalidInput) as info:
            run_handler("rife_interpolate_images", params, ctx_factory())
        assert len(str(info.value)) < 300, str(info.value)[:300]
    assert not list(ctx_factory.storage.files_dir.glob("rife_*"))
