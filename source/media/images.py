"""Loading and resizing still images as uint8 RGB arrays, with clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from source.errors import InvalidInput

MAX_IMAGE_PIXELS = 8192 * 8192  # refuse decompression bombs with a clear message
MIN_IMAGE_SIDE = 8


def load_image_rgb(path: Path | str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; optionally resize to size=(width, height) with Lanczos."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise InvalidInput(f"{path.name} is {im.width}x{im.height}, larger than the "
                                   f"{MAX_IMAGE_PIXELS}-pixel limit")
            if min(im.width, im.height) < MIN_IMAGE_SIDE:
                raise InvalidInput(f"{path.name} is {im.width}x{im.height}, smaller than "
                                   f"{MIN_IMAGE_SIDE} pixels on a side")
            im = im.convert("RGB")
            if size is not None and (im.width, im.height) != tuple(size):
                im = im.resize(tuple(size), Image.LANCZOS)
            return np.asarray(im, dtype=np.uint8).copy()
    except Image.DecompressionBombError:
        raise InvalidInput(f"{path.name} is larger than the {MAX_IMAGE_PIXELS}-pixel limit") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInput(f"{path.name} is not a readable image ({exc.__class__.__name__})") from None


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 frame to size=(width, height) with Lanczos; no-op when already that size."""
    if (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    return np.asarray(Image.fromarray(frame).resize(tuple(size), Image.LANCZOS), dtype=np.uint8)


def save_png(frame: np.ndarray, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(path, format="PNG")
    return path
