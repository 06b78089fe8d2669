"""Guide and mask videos for one chained (VACE) travel segment.

Layout of a segment of T frames (frames are written one at a time, never all in memory):

- frames 0..O-1: the last O frames of the previous segment (or of the video being continued), resized to
  the segment's size, optionally toned down by the seed's "subsequent starting" adjustments;
- first segment from scratch: frame 0 is the start image instead (O = 0);
- frame T-1: the next anchor image;
- every other frame: mid grey (128, 128, 128), which VACE fills in.

The mask has the same T frames: black (0, keep) where the guide gives a frame, white (255, generate) elsewhere.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from source.errors import InvalidInput
from source.media.images import resize_frame
from source.media.video_io import VideoWriter, iter_frames

GREY = 128
KEEP = 0        # mask value: keep the guide's frame
GENERATE = 255  # mask value: generate this frame


@dataclass
class GuideLayout:
    frames: int
    width: int
    height: int
    kept: list[int] = field(default_factory=list)  # frame indices the guide gives (mask black)
    from_previous: int = 0                          # how many of them came from the previous video


def last_frames(video: Path, count: int) -> list[np.ndarray]:
    """The last `count` frames of a video, decoding it once and holding only `count` frames."""
    if count <= 0:
        return []
    tail: deque[np.ndarray] = deque(maxlen=count)
    for frame in iter_frames(video):
        tail.append(frame)
    if len(tail) < count:
        raise InvalidInput(f"{Path(video).name} has only {len(tail)} frames; the segment needs its last {count}")
    return list(tail)


def adjust_overlap_frame(frame: np.ndarray, *, strength: float = 0.0, desaturate: float = 0.0,
                         brightness: float = 0.0) -> np.ndarray:
    """The seed's optional tweaks of re-used frames: strength < 0 blends toward grey (> 0 adds contrast),
    desaturate in [0, 1] blends toward luma, brightness multiplies by (1 + brightness)."""
    if not (strength or desaturate or brightness):
        return frame
    f = frame.astype(np.float32)
    if strength:
        f = GREY + (f - GREY) * max(0.0, 1.0 + strength)
    if desaturate:
        luma = f @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        d = min(1.0, max(0.0, desaturate))
        f = f * (1 - d) + luma[..., None] * d
    if brightness:
        f = f * (1.0 + brightness)
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def write_guide_and_mask(guide_path: Path, mask_path: Path, *, frames: int, size: tuple[int, int],
                         fps: float, previous_video: Path | None = None, overlap: int = 0,
                         start_image: np.ndarray | None = None, end_image: np.ndarray | None = None,
                         adjustments: dict[str, float] | None = None) -> GuideLayout:
    """Write the guide and mask videos of a segment of `frames` frames at size=(width, height)."""
    width, height = size
    if frames < 2:
        raise ValueError(f"a travel segment needs at least 2 frames, got {frames}")
    if overlap < 0 or overlap >= frames:
        raise ValueError(f"overlap {overlap} must be in [0, {frames - 1}] for a {frames}-frame segment")
    if overlap and previous_video is None:
        raise ValueError("an overlap needs the previous video")
    head = [resize_frame(f, size) for f in last_frames(previous_video, overlap)] if overlap else []
    head = [adjust_overlap_frame(f, **(adjustments or {})) for f in head]
    if not head and start_image is not None:
        head = [resize_frame(np.asarray(start_image, dtype=np.uint8), size)]
    end = resize_frame(np.asarray(end_image, dtype=np.uint8), size) if end_image is not None else None

    grey = np.full((height, width, 3), GREY, dtype=np.uint8)
    black = np.full((height, width, 3), KEEP, dtype=np.uint8)
    white = np.full((height, width, 3), GENERATE, dtype=np.uint8)
    layout = GuideLayout(frames=frames, width=width, height=height, from_previous=overlap)
    # lossless-ish settings: these videos are inputs to the model, not for people
    with VideoWriter(guide_path, fps=fps, crf=10) as guide, VideoWriter(mask_path, fps=fps, crf=0) as mask:
        for i in range(frames):
            if i < len(head):
                frame = head[i]
            elif i == frames - 1 and end is not None:
                frame = end
            else:
                frame = None
            if frame is None:
                guide.write(grey)
                mask.write(white)
            else:
                guide.write(frame)
                mask.write(black)
                layout.kept.append(i)
    return layout
