"""Appliance inputs: a PNG/JPEG/... or DICOM file -> uint8 (H, W, C) at the contract's size.

What an input must be, so a wrong image is refused instead of silently classified:
- one 2-D image (multi-frame DICOM, animated/multi-page files and non-2-D arrays are refused);
- at most `--max-pixels` pixels by the file's header, checked before decoding; not blank (a
  dynamic range of at least `imagecheck.MIN_DYNAMIC_RANGE` grey levels) - see edgemed.imagecheck;
- at least half the model's input size on each side (up-scaling more than 2x invents detail: a
  thumbnail or an icon is not the study) and no more elongated than 4:1;
- DICOM: one of the bundle's modalities when the bundle names any (`edgemed bundle --modality`);
- a grayscale model takes RGB DICOM only when its three channels are identical (grayscale stored
  as RGB); true color is refused, since which gray it should become is ambiguous. PNG/JPEG files
  follow the training reader's rule (PIL luminance), exactly as the model was trained.
Preprocessing is the contract's only: resize (its resample rule), then normalize in the runner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.contract import Contract
from edgemed.data.dicom import dicom_pixels, is_dicom
from edgemed.data.images import pil_to_array, resize_array
from edgemed.errors import InputError
from edgemed.imagecheck import check_content, decode_errors, open_image

MAX_ASPECT = 4.0
MIN_FRACTION = 0.5


@dataclass(frozen=True)
class InputSpec:
    """What the bundled model takes: the contract plus the bundle's modality list and description."""

    contract: Contract
    modalities: tuple[str, ...] = ()
    description: str = ""

    @classmethod
    def from_manifest(cls, contract: Contract, manifest: dict) -> InputSpec:
        block = manifest.get("input") or {}
        return cls(
            contract, tuple(block.get("modalities") or ()), str(block.get("description") or "")
        )

    @property
    def min_size(self) -> tuple[int, int]:
        h, w = self.contract.input_size
        return math.ceil(h * MIN_FRACTION), math.ceil(w * MIN_FRACTION)

    def expected(self) -> str:
        h, w = self.contract.input_size
        kind = "grayscale" if self.contract.channels == 1 else "color"
        mh, mw = self.min_size
        what = f" ({self.description})" if self.description else ""
        mods = f", DICOM Modality {' or '.join(self.modalities)}" if self.modalities else ""
        return (
            f"expected a single-frame {kind} image of at least {mh}x{mw} pixels, at most "
            f"{MAX_ASPECT:g}:1{mods}; the model takes {h}x{w}{what}"
        )


def read_input(path: str | Path, spec: InputSpec) -> np.ndarray:
    """Decode, check and resize one input file to uint8 (H, W, C) by the contract."""

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist (or is not a file)")
    if is_dicom(path):
        arr = to_channels(dicom_pixels(path, spec.modalities, spec.description), spec, path)
    else:
        arr = raster_pixels(path, spec)
    check_geometry(arr, spec, path)
    check_content(arr, f"image {path}")
    return resize_array(arr, spec.contract.input_size, spec.contract.resample)


def raster_pixels(path: Path, spec: InputSpec) -> np.ndarray:
    """PNG/JPEG/BMP/TIFF -> uint8 (H, W) or (H, W, 3) by the training reader's conversion rule."""

    try:
        with open_image(path) as img:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise InputError(f"image {path} has {frames} frames; {spec.expected()}")
            img.load()
            return np.asarray(pil_to_array(img, spec.contract.channels))
    except decode_errors() as exc:
        raise InputError(
            f"cannot read image {path} ({exc}); pass a DICOM, PNG or JPEG file"
        ) from None


def to_channels(arr: np.ndarray, spec: InputSpec, path: Path) -> np.ndarray:
    """Grayscale <-> the model's channels; RGB for a grayscale model only when channels are equal."""
    channels = spec.contract.channels
    if arr.ndim == 2:
        return arr if channels == 1 else np.repeat(arr[:, :, None], 3, axis=2)
    if channels == 3:
        return arr
    if np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 1], arr[:, :, 2]):
        return arr[:, :, 0]
    raise InputError(
        f"DICOM {path} is a color image with distinct RGB channels, and turning color into the "
        f"model's grayscale is ambiguous; {spec.expected()}"
    )


def check_geometry(arr: np.ndarray, spec: InputSpec, path: Path) -> None:
    if arr.ndim not in (2, 3):
        raise InputError(f"image {path} has pixel array shape {arr.shape}; {spec.expected()}")
    h, w = arr.shape[:2]
    mh, mw = spec.min_size
    if h < mh or w < mw:
        raise InputError(f"image {path} is only {h}x{w} pixels; {spec.expected()}")
    if max(h, w) / max(1, min(h, w)) > MAX_ASPECT:
        raise InputError(f"image {path} is {h}x{w} pixels (too elongated); {spec.expected()}")
