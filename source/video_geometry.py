"""Video geometry: the one home of the resolution and frame-count rules every handler applies.

- A resolution is 'WIDTHxHEIGHT' (also 'W*H', 'W,H', 'W×H' or [W, H]); each side 16..4096 pixels, the
  sides at most 4:1. Wan's VAE and patching need multiples of 16: sides are rounded to the NEAREST
  multiple of 16 (830x480 -> 832x480), refused if that changes the aspect ratio by more than 10 %.
- A Wan video has 4n+1 frames: a requested count L becomes 4*floor(L/4)+1 (the seed's rule: 16 -> 17,
  80 -> 81, 83 -> 81, 84 -> 85), at most MAX_FRAMES.

Every adjustment is recorded in the caller's `adjustments` dict as [asked, used], so it ends up in the
task's output (sidecar / result), not only in a log.
"""

from __future__ import annotations

import re
from typing import Any

from source.errors import InvalidInput

MIN_SIDE = 16
MAX_SIDE = 4096
MAX_ASPECT = 4.0           # sides may differ by at most 4x
MAX_ASPECT_CHANGE = 0.10   # rounding to multiples of 16 may change W/H by at most 10 %
MAX_FRAMES = 1025
SIDE_MULTIPLE = 16

_RESOLUTION = re.compile(r"^\s*(\d{1,6})\s*[xX*×,]\s*(\d{1,6})\s*$")


def format_resolution(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_resolution(value: Any, *, what: str = "resolution") -> tuple[int, int]:
    """'WxH' or [W, H] -> (W, H) as given, range-checked (no rounding)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        w, h = value
    else:
        m = _RESOLUTION.match(str(value)) if isinstance(value, str) else None
        if not m:
            raise InvalidInput(f"{what} must look like '832x480' ('WIDTHxHEIGHT'), got {str(value)[:40]!r}")
        w, h = m.group(1), m.group(2)
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must look like '832x480' ('WIDTHxHEIGHT'), got {str(value)[:40]!r}") from None
    if w < MIN_SIDE or h < MIN_SIDE:
        raise InvalidInput(f"{what} {w}x{h} is too small: each side must be at least {MIN_SIDE} pixels")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise InvalidInput(f"{what} {w}x{h} is too large: each side must be at most {MAX_SIDE} pixels")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise InvalidInput(f"{what} {w}x{h} has an aspect ratio beyond {MAX_ASPECT:g}:1")
    return w, h


def round_side(v: float) -> int:
    """The nearest multiple of 16 (at least 16)."""
    return max(SIDE_MULTIPLE, int(round(v / SIDE_MULTIPLE)) * SIDE_MULTIPLE)


def model_resolution(value: Any, adjustments: dict | None = None, *, what: str = "resolution") -> tuple[int, int]:
    """The size a Wan model renders for a requested resolution: parsed, sides rounded to multiples of 16,
    the change recorded in `adjustments[what]`."""
    w, h = parse_resolution(value, what=what)
    nw, nh = round_side(w), round_side(h)
    change = abs((nw / nh) / (w / h) - 1.0)
    if change > MAX_ASPECT_CHANGE:
        raise InvalidInput(f"{what} {w}x{h} would become {nw}x{nh} (multiples of 16), changing its aspect "
                           f"ratio by {change:.0%}; ask for a size closer to multiples of 16")
    if (nw, nh) != (w, h) and adjustments is not None:
        adjustments[what] = [format_resolution((w, h)), format_resolution((nw, nh))]
    return nw, nh


def resolution_for_aspect(width: int, height: int, area: int) -> tuple[int, int]:
    """A model size with the aspect ratio of (width, height) at about `area` pixels."""
    scale = (area / max(width * height, 1)) ** 0.5
    return round_side(width * scale), round_side(height * scale)


def wan_frame_count(n: Any, adjustments: dict | None = None, *, what: str = "video_length",
                    minimum: int = 1, maximum: int = MAX_FRAMES) -> int:
    """A requested frame count -> the 4n+1 count Wan renders (4*floor(n/4)+1), the change recorded in
    `adjustments[what]`. Refuses counts below `minimum` or above `maximum`."""
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a whole number of frames, got {str(n)[:40]!r}") from None
    if n < minimum:
        raise InvalidInput(f"{what} {n} must be at least {minimum}")
    if n > maximum:
        raise InvalidInput(f"{what} {n} is more than {maximum} frames")
    out = 4 * (n // 4) + 1
    if out > maximum:
        out -= 4
    if out != n and adjustments is not None:
        adjustments[what] = [n, out]
    return out
