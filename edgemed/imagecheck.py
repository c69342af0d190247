"""Image limits checked before decoding, and the content check after: for train, bench, predict.

- pixel count from the header (PIL size x frames; DICOM Rows x Columns x frames) at most
  `max_pixels()` (default DEFAULT_MAX_PIXELS; `--max-pixels N` raises it for one run), so a
  decompression bomb is refused before a byte of it is decoded;
- an image with no content (all pixels equal, or fewer than MIN_DYNAMIC_RANGE grey levels between
  darkest and brightest) is refused: a blank frame has no diagnosis to give;
- float pixels must be finite.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from edgemed.errors import InputError

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; a large CR/DX plate is ~ 9-25 megapixels
MIN_DYNAMIC_RANGE = 8  # grey levels (of 255) between the darkest and the brightest pixel

_MAX_PIXELS: ContextVar[int] = ContextVar("edgemed_max_pixels", default=DEFAULT_MAX_PIXELS)


def max_pixels() -> int:
    """The pixel-count limit for this run."""
    return _MAX_PIXELS.get()


def set_max_pixels(n: int) -> None:
    """Set the limit for this run (the CLI's --max-pixels)."""
    if n < 1:
        raise InputError(f"--max-pixels must be >= 1, got {n}")
    _MAX_PIXELS.set(int(n))


def check_pixel_count(path: Path | str, height: int, width: int, frames: int = 1) -> None:
    """Refuse an image whose header promises more pixels than the limit (before decoding)."""
    n, limit = int(height) * int(width) * max(1, int(frames)), max_pixels()
    if int(height) < 1 or int(width) < 1:
        raise InputError(
            f"image {path} declares an empty size {width}x{height}; the file is damaged"
        )
    if n > limit:
        frames_text = f" x {frames} frames" if frames > 1 else ""
        raise InputError(
            f"image {path} is {width}x{height}{frames_text} = {n / 1e6:.1f} megapixels by its "
            f"header, over the limit of {limit / 1e6:g} megapixels; pass --max-pixels {n} if the "
            "image is genuine"
        )


def check_content(arr: np.ndarray, what: str) -> None:
    """Refuse a blank image (`what` names it: 'image X', 'npz X: train_images[3]')."""
    if arr.size == 0:
        raise InputError(f"{what} has no pixels")
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo < MIN_DYNAMIC_RANGE:
        detail = f"every pixel is {lo}" if hi == lo else f"pixels only span {lo}..{hi}"
        raise InputError(
            f"{what} has no content ({detail}; at least {MIN_DYNAMIC_RANGE} grey levels of "
            "contrast expected): a blank or test frame; pass the real image"
        )


def check_finite(arr: np.ndarray, what: str) -> None:
    """Refuse NaN/Inf in float pixel data or labels (they would silently become 0 or INT64_MIN)."""
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{what} holds {bad} NaN/Inf value(s); fix or remove them")


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[object]:
    """PIL Image.open with our header check instead of PIL's bomb error (which is a traceback)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # checked here, with the run's limit, before any decoding
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with img:
        w, h = img.size
        check_pixel_count(path, h, w, getattr(img, "n_frames", 1))
        yield img


def decode_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for a file it cannot decode (each becomes one error line)."""
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
