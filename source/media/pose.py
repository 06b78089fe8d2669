"""Body pose: MediaPipe Tasks PoseLandmarker -> OpenPose 18-keypoint body layout, and pose interpolation.

A `Pose` holds 18 keypoints in the OpenPose/COCO body order with pixel coordinates and a confidence
(MediaPipe's visibility, 0 where the keypoint is missing). One landmarker per running mode is kept warm
per process: IMAGE mode for stills, VIDEO mode (tracking between frames) for videos.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from source.errors import InvalidInput
from source.warm import Warm

# OpenPose 18-keypoint body layout (COCO order).
OPENPOSE_KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# MediaPipe's 33 pose landmarks (the person's left/right) -> OpenPose index. Neck (1) is derived.
_MP_INDEX = {
    0: 0,    # nose
    2: 12,   # right shoulder
    3: 14,   # right elbow
    4: 16,   # right wrist
    5: 11,   # left shoulder
    6: 13,   # left elbow
    7: 15,   # left wrist
    8: 24,   # right hip
    9: 26,   # right knee
    10: 28,  # right ankle
    11: 23,  # left hip
    12: 25,  # left knee
    13: 27,  # left ankle
    14: 5,   # right eye
    15: 2,   # left eye
    16: 8,   # right ear
    17: 7,   # left ear
}
NUM_KEYPOINTS = 18
DEFAULT_MIN_CONFIDENCE = 0.3
# Landmarks MediaPipe extrapolates beyond the frame are dropped when further out than this (fraction of a side).
_OUTSIDE_MARGIN = 0.02


@dataclass
class Pose:
    """18 keypoints as an (18, 3) float array of (x, y, confidence) in pixels of a width x height image.
    A missing keypoint has confidence 0 (its x, y are then meaningless and written as 0)."""

    keypoints: np.ndarray
    width: int
    height: int

    def present(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> np.ndarray:
        return self.keypoints[:, 2] >= max(min_confidence, 1e-6)

    @property
    def count(self) -> int:
        return int(self.present().sum())

    def normalized(self) -> np.ndarray:
        """(18, 3) with x, y divided by the image size."""
        k = self.keypoints.copy()
        k[:, 0] /= max(self.width, 1)
        k[:, 1] /= max(self.height, 1)
        return k

    def resized(self, width: int, height: int) -> Pose:
        """The same pose on a width x height canvas (coordinates stretched like the image would be)."""
        k = self.normalized()
        k[:, 0] *= width
        k[:, 1] *= height
        return Pose(k, int(width), int(height))

    def fitted(self, width: int, height: int) -> Pose:
        """The pose after its image is scaled to cover width x height and centre-cropped (no stretching,
        as the generation bridge fits images); keypoints cropped away become missing."""
        scale = max(width / max(self.width, 1), height / max(self.height, 1))
        ox = (self.width * scale - width) / 2
        oy = (self.height * scale - height) / 2
        k = self.keypoints.copy()
        k[:, 0] = k[:, 0] * scale - ox
        k[:, 1] = k[:, 1] * scale - oy
        outside = (k[:, 0] < 0) | (k[:, 0] > width) | (k[:, 1] < 0) | (k[:, 1] > height)
        k[outside] = 0.0
        k[k[:, 2] <= 0, :2] = 0.0
        return Pose(k, int(width), int(height))

    def to_openpose_json(self) -> dict:
        """The OpenPose JSON layout for one frame: people[0].pose_keypoints_2d = [x, y, c] * 18."""
        flat = []
        for x, y, c in self.keypoints.tolist():
            if c <= 0:
                x = y = c = 0.0
            flat.extend([round(x, 2), round(y, 2), round(c, 4)])
        return {"version": 1.3, "canvas_width": self.width, "canvas_height": self.height,
                "people": [{"pose_keypoints_2d": flat}]}

    @classmethod
    def from_openpose_json(cls, data: dict, min_confidence: float = 0.0) -> Pose | None:
        """Inverse of to_openpose_json (None when the frame has no person)."""
        people = data.get("people") or []
        if not people:
            return None
        flat = people[0].get("pose_keypoints_2d") or []
        if len(flat) < NUM_KEYPOINTS * 3:
            raise InvalidInput(f"pose keypoints have {len(flat)} numbers, expected {NUM_KEYPOINTS * 3}")
        k = np.asarray(flat[: NUM_KEYPOINTS * 3], dtype=np.float32).reshape(NUM_KEYPOINTS, 3)
        k[k[:, 2] < min_confidence, 2] = 0.0
        return cls(k, int(data["canvas_width"]), int(data["canvas_height"]))


def empty_frame_json(width: int, height: int) -> dict:
    return {"version": 1.3, "canvas_width": int(width), "canvas_height": int(height), "people": []}


def landmarks_to_openpose(landmarks, width: int, height: int,
                          min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Pose:
    """MediaPipe NormalizedLandmark list (33) -> Pose. Confidence = visibility; keypoints below
    min_confidence or well outside the frame are marked missing."""
    k = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)

    def take(mp_i: int) -> tuple[float, float, float]:
        lm = landmarks[mp_i]
        vis = float(lm.visibility if lm.visibility is not None else 1.0)
        x, y = float(lm.x), float(lm.y)
        m = _OUTSIDE_MARGIN
        if vis < min_confidence or not (-m <= x <= 1 + m and -m <= y <= 1 + m):
            return 0.0, 0.0, 0.0
        return min(max(x, 0.0), 1.0) * width, min(max(y, 0.0), 1.0) * height, vis

    for op_i, mp_i in _MP_INDEX.items():
        k[op_i] = take(mp_i)
    rs, ls = k[2], k[5]
    if rs[2] > 0 and ls[2] > 0:  # neck = midpoint of the shoulders
        k[1] = ((rs[0] + ls[0]) / 2, (rs[1] + ls[1]) / 2, min(rs[2], ls[2]))
    return Pose(k, int(width), int(height))


# ----------------------------------------------------------------------------- detection
class PoseDetector:
    """A warm MediaPipe PoseLandmarker. `detect(frame)` for stills, `detect_video(frames, fps)` for videos."""

    def __init__(self, model_path: Path | None = None, *, video: bool = False,
                 min_detection_confidence: float = 0.5) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        from source.model_files import pose_landmarker_path

        self._mp = mp
        self.model_path = Path(model_path) if model_path else pose_landmarker_path()
        self.video = video
        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=mode, num_poses=1,
            min_pose_detection_confidence=min_detection_confidence,
            min_pose_presence_confidence=min_detection_confidence,
            min_tracking_confidence=0.5,
        )
        self._create = lambda: vision.PoseLandmarker.create_from_options(options)
        try:
            self._landmarker = self._create()
        except Exception as exc:  # noqa: BLE001 - a corrupt or wrong model file
            raise InvalidInput(f"could not load the pose model {self.model_path}: {exc}") from None
        self._lock = threading.Lock()
        self._timestamp_ms = 0  # VIDEO mode needs increasing timestamps across every call of this instance

    def _image(self, frame: np.ndarray):
        frame = np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)[:, :, :3])
        return self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=frame)

    def detect(self, frame: np.ndarray, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Pose | None:
        """The most prominent person's pose in an (H, W, 3) uint8 RGB frame, or None."""
        if self.video:
            raise RuntimeError("detect() needs an IMAGE-mode detector; use detect_video()")
        h, w = frame.shape[:2]
        with self._lock:
            result = self._landmarker.detect(self._image(frame))
        return self._to_pose(result, w, h, min_confidence)

    def detect_video(self, frames: Iterable[np.ndarray], fps: float = 16.0,
                     min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Iterator[Pose | None]:
        """Poses of a frame sequence (tracking between frames), one at a time."""
        if not self.video:
            raise RuntimeError("detect_video() needs a VIDEO-mode detector")
        step = max(1, int(round(1000.0 / (fps if fps and fps > 0 else 16.0))))
        with self._lock:
            self._reset_tracking()
            for frame in frames:
                h, w = frame.shape[:2]
                self._timestamp_ms += step
                result = self._landmarker.detect_for_video(self._image(frame), self._timestamp_ms)
                yield self._to_pose(result, w, h, min_confidence)

    def _reset_tracking(self) -> None:
        """Forget the previous video's person: MediaPipe has no reset call, but a blank frame loses the
        track (the next frame runs the detector afresh). Should a track survive, start a new landmarker."""
        self._timestamp_ms += 1000
        blank = np.zeros((64, 64, 3), np.uint8)
        result = self._landmarker.detect_for_video(self._image(blank), self._timestamp_ms)
        self._timestamp_ms += 1000
        if result.pose_landmarks:  # pragma: no cover - not seen with the full model
            self.close()
            self._landmarker = self._create()
            self._timestamp_ms = 0

    @staticmethod
    def _to_pose(result, width: int, height: int, min_confidence: float) -> Pose | None:
        if not result.pose_landmarks:
            return None
        pose = landmarks_to_openpose(result.pose_landmarks[0], width, height, min_confidence)
        return pose if pose.count > 0 else None

    def close(self) -> None:
        try:
            self._landmarker.close()
        except Exception:  # noqa: BLE001 - closing at exit is best effort
            pass


_detectors: Warm[PoseDetector] = Warm(lambda key: PoseDetector(Path(key[0]), video=key[1]),
                                      close=lambda det: det.close())
# Close warm landmarkers before the interpreter tears MediaPipe down (its __del__ fails late).
atexit.register(_detectors.clear)


def get_pose_detector(*, video: bool = False, model_path: Path | None = None) -> PoseDetector:
    """The process-wide warm detector for the mode (created on first use)."""
    from source.model_files import pose_landmarker_path

    path = str(Path(model_path) if model_path else pose_landmarker_path())
    return _detectors.get((path, video))


def detect_pose(frame: np.ndarray, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Pose | None:
    return get_pose_detector(video=False).detect(frame, min_confidence)


# ----------------------------------------------------------------------------- interpolation
def interpolate_poses(a: Pose, b: Pose, n: int, *, width: int | None = None, height: int | None = None,
                      min_confidence: float = DEFAULT_MIN_CONFIDENCE, fit: str = "cover") -> list[Pose]:
    """n poses from a (first) to b (last), linear per keypoint, on a width x height canvas (default b's size).

    Both poses are placed on the canvas as their images would be: fit="cover" (scale to cover, centre-crop,
    as the generation bridge fits images) or fit="stretch".
    A keypoint present in both moves linearly; one present only in `a` stays where it was and disappears
    after the halfway point; one present only in `b` appears at the halfway point at its final place;
    missing in both stays missing.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    width = int(width or b.width)
    height = int(height or b.height)
    if fit not in ("cover", "stretch"):
        raise ValueError(f"fit must be 'cover' or 'stretch', got {fit!r}")
    place = (lambda p: p.fitted(width, height)) if fit == "cover" else (lambda p: p.resized(width, height))
    ka = place(a).keypoints
    kb = place(b).keypoints
    pa = ka[:, 2] >= max(min_confidence, 1e-6)
    pb = kb[:, 2] >= max(min_confidence, 1e-6)
    out = []
    for i in range(n):
        t = 0.0 if n == 1 else i / (n - 1)
        k = np.zeros_like(ka)
        both = pa & pb
        k[both] = ka[both] * (1 - t) + kb[both] * t
        if t < 0.5:
            k[pa & ~pb] = ka[pa & ~pb]
        else:
            k[pb & ~pa] = kb[pb & ~pa]
        out.append(Pose(k, width, height))
    return out


__all__ = [
    "OPENPOSE_KEYPOINTS", "Pose", "PoseDetector", "get_pose_detector", "detect_pose", "landmarks_to_openpose",
    "interpolate_poses", "empty_frame_json",
]
