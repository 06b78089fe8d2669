"""Drawing OpenPose-style body skeletons (the look VACE / ControlNet pose guides are trained on).

Black canvas; each of the 17 standard limbs is a filled ellipse in its standard colour dimmed to 60%,
each keypoint a filled circle in its standard colour. Our own drawing code (OpenCV).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from source.media.pose import DEFAULT_MIN_CONFIDENCE, NUM_KEYPOINTS, Pose, interpolate_poses

# The standard 17 limbs as pairs of OpenPose keypoint indices (0-based).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
# The standard per-limb / per-keypoint colours (RGB).
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
LIMB_DIM = 0.6


def _scale(width: int, height: int) -> float:
    """Line widths follow the canvas size (4 px limbs at 512 px), never below the standard look on small canvases."""
    return max(1.0, max(width, height) / 512.0)


def draw_openpose(pose: Pose | None, width: int | None = None, height: int | None = None, *,
                  stick_width: int | None = None, radius: int | None = None,
                  min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                  canvas: np.ndarray | None = None) -> np.ndarray:
    """Render a pose as an (H, W, 3) uint8 RGB image; None (no person) gives a black frame.
    width/height default to the pose's canvas; a different size rescales the pose."""
    if pose is not None:
        width = int(width or pose.width)
        height = int(height or pose.height)
        if (width, height) != (pose.width, pose.height):
            pose = pose.resized(width, height)
    if width is None or height is None:
        raise ValueError("width and height are needed to draw an empty pose")
    if canvas is None:
        canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    if pose is None:
        return canvas
    s = _scale(width, height)
    stick = max(1, int(round((stick_width or 4) * (s if stick_width is None else 1))))
    rad = max(1, int(round((radius or 4) * (s if radius is None else 1))))
    k = pose.keypoints
    ok = k[:, 2] >= max(min_confidence, 1e-6)

    for i, (a, b) in enumerate(LIMBS):
        if not (ok[a] and ok[b]):
            continue
        xa, ya = float(k[a, 0]), float(k[a, 1])
        xb, yb = float(k[b, 0]), float(k[b, 1])
        cx, cy = (xa + xb) / 2, (ya + yb) / 2
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        polygon = cv2.ellipse2Poly((int(round(cx)), int(round(cy))), (int(round(length / 2)), stick),
                                   int(round(angle)), 0, 360, 1)
        color = tuple(int(c * LIMB_DIM) for c in COLORS[i])
        cv2.fillConvexPoly(canvas, polygon, color, lineType=cv2.LINE_AA)

    for i in range(NUM_KEYPOINTS):
        if not ok[i]:
            continue
        cv2.circle(canvas, (int(round(k[i, 0])), int(round(k[i, 1]))), rad, COLORS[i], thickness=-1,
                   lineType=cv2.LINE_AA)
    return canvas


__all__ = ["LIMBS", "COLORS", "draw_openpose"]


def interpolated_skeleton_frames(a: Pose, b: Pose, n: int, *, width: int | None = None,
                                 height: int | None = None, **render_kw) -> Iterator[np.ndarray]:
    """Skeleton frames (uint8 RGB) moving from pose a to pose b over n frames."""
    for pose in interpolate_poses(a, b, n, width=width, height=height):
        yield draw_openpose(pose, **render_kw)
