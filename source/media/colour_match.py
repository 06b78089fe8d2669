"""Colour matching of generated video to its anchor images: Reinhard mean/std transfer in CIE LAB.

`match_colour` moves one frame's per-channel LAB mean and standard deviation to a reference image's.
`colour_match_video` streams a segment of a travel video: frame i of n sits at t = i/(n-1) between the
segment's start anchor (t=0) and end anchor (t=1), and is matched to *interpolated target statistics*
`(1-t)*stats(start) + t*stats(end)` -- one transfer per frame, so the colour drifts smoothly from the
first anchor's look to the second's (the seed blended two separately matched frames plus some of the
original; interpolating the statistics gives the same endpoints with half the work and no ghost of two
different corrections). With no end anchor every frame is matched to the start anchor.

The std ratio is clamped to [0.5, 2.0] per channel so that a flat frame (e.g. a fade from black) is not
blown up into noise, and a flat reference does not wash a frame out completely.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from source.errors import InvalidInput
from source.media.video_io import VideoWriter, as_uint8_rgb, iter_frames

STD_RATIO_RANGE = (0.5, 2.0)


def _to_lab(frame: np.ndarray) -> np.ndarray:
    rgb = as_uint8_rgb(frame).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)  # float: L in [0, 100], a/b roughly [-128, 127]


def _from_lab(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def lab_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of an RGB image in LAB, each of shape (3,)."""
    lab = _to_lab(image).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def _transfer(lab: np.ndarray, src_stats, dst_stats, strength: float) -> np.ndarray:
    src_mean, src_std = src_stats
    dst_mean, dst_std = dst_stats
    ratio = np.clip(dst_std / np.maximum(src_std, 1e-6), *STD_RATIO_RANGE).astype(np.float32)
    matched = (lab - src_mean.astype(np.float32)) * ratio + dst_mean.astype(np.float32)
    if strength >= 1.0:
        return matched
    return lab + np.float32(strength) * (matched - lab)


def match_colour(frame: np.ndarray, reference: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """`frame` with its LAB mean/std moved toward `reference`'s; strength 0 = unchanged, 1 = full transfer."""
    strength = float(np.clip(strength, 0.0, 1.0))
    frame = as_uint8_rgb(frame)
    if strength == 0.0:
        return frame.copy()
    lab = _to_lab(frame)
    src = (lab.reshape(-1, 3).mean(axis=0), lab.reshape(-1, 3).std(axis=0))
    return _from_lab(_transfer(lab, src, lab_stats(reference), strength))


def colour_match_video(src: Path, dst: Path, start_ref: np.ndarray, end_ref: np.ndarray | None,
                       fps: float, *, strength: float = 1.0) -> int:
    """Stream `src` to `dst` (H.264), matching frame i of n to the start/end anchors by position
    t = i/(n-1) (see the module docstring). `dst` may equal `src`. Returns the number of frames written."""
    src, dst = Path(src), Path(dst)
    from source.media.stitch import count_frames  # packet count: no extra decode pass

    n = count_frames(src)
    if n == 0:
        raise InvalidInput(f"{src.name} has no frames to colour-match")
    start_stats = lab_stats(start_ref)
    end_stats = lab_stats(end_ref) if end_ref is not None else start_stats
    strength = float(np.clip(strength, 0.0, 1.0))
    tmp = dst.with_name(f".{dst.stem}.colour.part{dst.suffix}")
    with VideoWriter(tmp, fps=fps) as writer:
        for i, frame in enumerate(iter_frames(src)):
            t = min(1.0, i / (n - 1)) if n > 1 else 0.0
            target = ((1 - t) * start_stats[0] + t * end_stats[0], (1 - t) * start_stats[1] + t * end_stats[1])
            lab = _to_lab(frame)
            flat = lab.reshape(-1, 3)
            writer.write(_from_lab(_transfer(lab, (flat.mean(axis=0), flat.std(axis=0)), target, strength)))
    os.replace(tmp, dst)
    return writer.count


__all__ = ["match_colour", "colour_match_video", "lab_stats"]
