"""Pose detection (MediaPipe -> OpenPose 18), skeleton rendering and pose interpolation on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from source.media.pose import OPENPOSE_KEYPOINTS, Pose, detect_pose, interpolate_poses
from source.media.pose_render import LIMBS, draw_openpose

K = {name: i for i, name in enumerate(OPENPOSE_KEYPOINTS)}


@pytest.fixture(scope="module")
def astronaut_pose() -> Pose:
    pose = detect_pose(skimage.data.astronaut())
    assert pose is not None
    return pose


def test_astronaut_pose_is_plausible(astronaut_pose):
    k, ok = astronaut_pose.keypoints, astronaut_pose.present()
    assert (astronaut_pose.width, astronaut_pose.height) == (512, 512)
    for name in ("nose", "neck", "right_shoulder", "left_shoulder", "right_eye", "left_eye"):
        assert ok[K[name]], name
    nose, neck = k[K["nose"]], k[K["neck"]]
    rs, ls = k[K["right_shoulder"]], k[K["left_shoulder"]]
    # She faces the camera: her right shoulder is on the image's left, the nose between the shoulders.
    assert rs[0] < nose[0] < ls[0]
    assert nose[1] < neck[1] and nose[1] < rs[1] and nose[1] < ls[1]
    # Neck is the shoulders' midpoint; the eyes are above the nose, the right eye on the image's left.
    assert np.allclose(neck[:2], (rs[:2] + ls[:2]) / 2, atol=1)
    assert k[K["right_eye"]][1] < nose[1] and k[K["left_eye"]][1] < nose[1]
    assert k[K["right_eye"]][0] < k[K["left_eye"]][0]
    # Any hip that is found lies below the shoulders.
    for hip in ("right_hip", "left_hip"):
        if ok[K[hip]]:
            assert k[K[hip]][1] > neck[1] and k[K[hip]][1] > nose[1]
    assert ((k[:, 0] >= 0) & (k[:, 0] <= 512) & (k[:, 1] >= 0) & (k[:, 1] <= 512)).all()


def test_low_threshold_hips_are_below_the_nose():
    pose = detect_pose(skimage.data.astronaut(), min_confidence=0.05)
    k, ok = pose.keypoints, pose.present(0.05)
    hips = [K["right_hip"], K["left_hip"]]
    assert any(ok[h] for h in hips)
    for h in hips:
        if ok[h]:
            assert k[h][1] > k[K["nose"]][1] + 150


def test_render_has_skeleton_near_keypoints_and_black_far_away(astronaut_pose):
    img = draw_openpose(astronaut_pose)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    k, ok = astronaut_pose.keypoints, astronaut_pose.present()
    for i in np.flatnonzero(ok):
        x, y = int(round(k[i, 0])), int(round(k[i, 1]))
        patch = img[max(0, y - 2):y + 3, max(0, x - 2):x + 3]
        assert patch.max() > 100, OPENPOSE_KEYPOINTS[i]
    # Far from every keypoint and limb: black.
    yy, xx = np.mgrid[0:512, 0:512]
    far = np.ones((512, 512), bool)
    pts = k[ok, :2]
    for x, y in pts:
        far &= (xx - x) ** 2 + (yy - y) ** 2 > 60 ** 2
    for a, b in LIMBS:  # distance to each drawn limb segment
        if ok[a] and ok[b]:
            p, q = k[a, :2], k[b, :2]
            d = q - p
            t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / max(d @ d, 1e-6), 0, 1)
            far &= (xx - (p[0] + t * d[0])) ** 2 + (yy - (p[1] + t * d[1])) ** 2 > 20 ** 2
    assert far.sum() > 50_000
    assert img[far].max() == 0
    # The neck->nose limb has its standard colour (blue, dimmed to 60 %).
    mid = ((k[K["neck"], :2] + k[K["nose"], :2]) / 2).round().astype(int)
    r, g, b = img[mid[1], mid[0]].astype(int)
    assert b > 120 and r < 40 and g < 40


@pytest.mark.parametrize("image", ["coffee", "gradient"])
def test_no_person(image):
    img = skimage.data.coffee() if image == "coffee" else np.tile(
        np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    assert detect_pose(img) is None
    black = draw_openpose(None, img.shape[1], img.shape[0])
    assert black.shape == img.shape and black.max() == 0


def _pose(points: dict[str, tuple[float, float]], w=200, h=100) -> Pose:
    k = np.zeros((18, 3), np.float32)
    for name, (x, y) in points.items():
        k[K[name]] = (x, y, 1.0)
    return Pose(k, w, h)


def test_interpolation_middle_lies_between():
    a = _pose({"nose": (50, 20), "neck": (50, 40), "right_wrist": (10, 90), "left_ear": (60, 10)})
    b = _pose({"nose": (150, 30), "neck": (150, 60), "right_wrist": (190, 10), "left_knee": (120, 95)})
    poses = interpolate_poses(a, b, 5)
    assert len(poses) == 5
    assert np.allclose(poses[0].keypoints[[0, 1, 4], :2], a.keypoints[[0, 1, 4], :2])
    assert np.allclose(poses[-1].keypoints[[0, 1, 4], :2], b.keypoints[[0, 1, 4], :2])
    mid = poses[2].keypoints
    for name in ("nose", "neck", "right_wrist"):
        i = K[name]
        lo = np.minimum(a.keypoints[i, :2], b.keypoints[i, :2])
        hi = np.maximum(a.keypoints[i, :2], b.keypoints[i, :2])
        assert (lo <= mid[i, :2]).all() and (mid[i, :2] <= hi).all() and mid[i, 2] > 0
        assert np.allclose(mid[i, :2], (a.keypoints[i, :2] + b.keypoints[i, :2]) / 2)
    # Present in one pose only: held in place, shown in that pose's half.
    ear, knee = K["left_ear"], K["left_knee"]
    assert poses[1].keypoints[ear, 2] > 0 and np.allclose(poses[1].keypoints[ear, :2], (60, 10))
    assert poses[3].keypoints[ear, 2] == 0
    assert poses[1].keypoints[knee, 2] == 0
    assert poses[3].keypoints[knee, 2] > 0 and np.allclose(poses[3].keypoints[knee, :2], (120, 95))
    # Missing in both stays missing.
    assert all(p.keypoints[K["right_ankle"], 2] == 0 for p in poses)


def test_interpolation_across_canvas_sizes_uses_cover_fit():
    a = _pose({"nose": (100, 50)}, w=200, h=100)  # centre of a 2:1 image
    b = _pose({"nose": (32, 32)}, w=64, h=64)
    first = interpolate_poses(a, b, 3, width=64, height=64)[0]
    assert np.allclose(first.keypoints[K["nose"], :2], (32, 32))  # centre stays centre under cover + crop
    cropped = interpolate_poses(_pose({"nose": (5, 50)}), b, 3, width=64, height=64)[0]
    assert cropped.keypoints[K["nose"], 2] == 0  # cropped away


def test_openpose_json_round_trip(astronaut_pose):
    data = astronaut_pose.to_openpose_json()
    assert len(data["people"][0]["pose_keypoints_2d"]) == 54
    back = Pose.from_openpose_json(data)
    assert np.allclose(back.keypoints, astronaut_pose.keypoints, atol=0.01)
