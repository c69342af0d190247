"""Read one image file of any common mode into uint8 (H, W, C) at a requested size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed.data.dicom import DICOM_SUFFIXES, dicom_pixels
from edgemed.errors import InputError
from edgemed.imagecheck import check_content, decode_errors, open_image

# Files a class-folder tree may hold: common image formats and single-frame DICOM images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", *DICOM_SUFFIXES)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map any integer or float pixel array to uint8 by its dtype's range (16-bit: / 257)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        top = 65535 if info.max > 255 and arr.max() > 255 else 255
        lo = 0 if info.min >= 0 else info.min
        scaled = (arr.astype(np.float64) - lo) * (255.0 / (top - lo))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def pil_to_array(img, channels: int):
    """PIL image of any mode (L, RGB, RGBA, P, I;16, I, F, LA) -> uint8 PIL image with 1 or 3 bands."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(to_uint8(np.asarray(img)))
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black: medical images with alpha are background-transparent scans.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def resize_array(arr: np.ndarray, size: tuple[int, int], resample: str = "bilinear") -> np.ndarray:
    """uint8 (H, W) or (H, W, C) -> uint8 (h, w, C) with PIL's resampling (the contract's rule)."""
    from PIL import Image

    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    method = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "bicubic": Image.BICUBIC}[
        resample
    ]
    bands = [
        np.asarray(Image.fromarray(arr[:, :, c]).resize((w, h), method))
        for c in range(arr.shape[2])
    ]
    return np.stack(bands, axis=2)


def read_image(
    path: Path, size: tuple[int, int], channels: int, resample: str = "bilinear"
) -> np.ndarray:
    """Decode an image file to uint8 (H, W, C); an unreadable file is an InputError naming it."""

    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        if not Path(path).is_file():
            raise InputError(f"image {path} does not exist")
        return image_from_pixels(dicom_pixels(Path(path)), path, size, channels, resample)
    try:
        with open_image(path) as img:
            img.load()
            arr = np.asarray(pil_to_array(img, channels))
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist") from None
    except decode_errors() as exc:
        raise InputError(f"cannot read image {path}: {exc}; remove or replace the file") from None
    check_content(arr, f"image {path}")
    return resize_array(arr, size, resample)


def image_from_pixels(
    arr: np.ndarray, path: Path, size: tuple[int, int], channels: int, resample: str = "bilinear"
) -> np.ndarray:
    """Decoded uint8 (H, W) or (H, W, 3) pixels (e.g. a DICOM image as a viewer shows it,
    edgemed.data.dicom) -> checked uint8 (h, w, channels) at `size`."""
    from PIL import Image

    out = np.asarray(pil_to_array(Image.fromarray(arr), channels)).reshape(*arr.shape[:2], channels)
    check_content(out, f"image {path}")
    return resize_array(out, size, resample)
