"""DICOM -> display-ready uint8 pixels, the way a viewer would show them (pydicom 3).

Grayscale (MONOCHROME1/2), in the standard's order:
  1. modality transform: Modality LUT Sequence or Rescale Slope/Intercept (`apply_modality_lut`)
  2. VOI transform: the first VOI LUT Sequence item (see `voi_lut_sequence`), else the first
     Window Center/Width (`apply_voi_lut`, LINEAR, LINEAR_EXACT or SIGMOID)
  3. map the VOI output range to 0..255: for a LUT 0..2^n-1 (n = LUT bits); for a window, or with
     no VOI at all, the range of the modality output (stored-value range of Bits Stored and Pixel
     Representation, through the rescale) - so 8-bit data stays as is and 16-bit data is scaled
  4. MONOCHROME1: invert (0 = white)
Color (RGB, or YBR which pydicom converts to RGB) is returned as RGB uint8; whether it may feed a
grayscale model is decided by the caller. Refused with one line: files without pixel data, float
pixel data, multi-frame images, palette color, pixel data this installation cannot decode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed.errors import InputError
from edgemed.imagecheck import check_pixel_count

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
GRAY = ("MONOCHROME1", "MONOCHROME2")


def is_dicom(path: Path) -> bool:
    """A DICOM file: the DICM magic at byte 128 (Part 10), or a DICOM suffix."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def read_dicom(path: Path):
    """The dataset; a file pydicom cannot parse is an InputError naming it."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, defer_size="1 MB")  # pixel data read after the size check
    except InvalidDicomError:
        raise InputError(
            f"{path} is not a DICOM Part 10 file (no DICM preamble); pass a DICOM image, PNG or JPEG"
        ) from None
    except MemoryError:
        raise
    except (
        Exception
    ) as exc:  # hostile bytes: pydicom raises struct.error, BytesLengthException, ...
        raise InputError(f"cannot read DICOM {path} ({_first(exc)}); the file is damaged") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def check_pixel_module(ds, path: Path) -> None:
    """Refuse what has no single 2-D image in it, before decoding anything."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise InputError(
                f"DICOM {path} holds float pixel data, which is not supported; pass an integer image"
            )
        raise InputError(
            f"DICOM {path} has no pixel data (Pixel Data element missing: a report, presentation "
            "state or header-only file?); pass the image DICOM"
        )
    frames = _int_tag(ds, "NumberOfFrames", 1, path)
    check_pixel_count(path, _int_tag(ds, "Rows", 0, path), _int_tag(ds, "Columns", 0, path), frames)
    if frames > 1:
        raise InputError(
            f"DICOM {path} is multi-frame ({frames} frames); the model takes one 2-D image: "
            "pass a single-frame DICOM (one image per file)"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR" or samples not in (1, 3):
        raise InputError(
            f"DICOM {path} is {photometric or 'of unknown photometric interpretation'} with "
            f"{samples} sample(s) per pixel; pass a MONOCHROME1/2 or RGB image"
        )
    if samples == 1 and photometric not in GRAY:
        raise InputError(
            f"DICOM {path} has 1 sample per pixel but photometric interpretation {photometric!r}; "
            "expected MONOCHROME1 or MONOCHROME2"
        )


def _int_tag(ds, keyword: str, default: int, path: Path) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        raise InputError(f"DICOM {path} has an invalid {keyword}; the header is damaged") from None


# Transfer syntax UID prefix -> the packages whose pydicom plugins decode it.
DECODERS = {
    "1.2.840.10008.1.2.4.20": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K (.201, .202, .203)
    "1.2.840.10008.1.2.4.9": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.8": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS
    "1.2.840.10008.1.2.4.": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline/extended/lossless
}


def decode_failure(ds, path: Path, exc: BaseException) -> str:
    """Why the pixel data did not decode: a missing decoder (which to install) or damaged data."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    text = str(exc).strip()
    first = text.splitlines()[0][:200] if text else type(exc).__name__
    name = f"transfer syntax {getattr(ts, 'name', ts)}"
    if "missing dependencies" in text or "no pixel data decoders" in text.lower():
        uid = str(ts or "")
        need = next((v for k, v in DECODERS.items() if uid.startswith(k)), None)
        fix = f"pip install {need}" if need else "install a pydicom decoder for it"
        return f"cannot decode DICOM {path}: no decoder for {name} is installed here; {fix}"
    return (
        f"cannot decode the pixel data of DICOM {path} ({name}: {first}): the compressed data is "
        "damaged or truncated; re-export the image from the PACS"
    )


def decode(ds, path: Path) -> np.ndarray:
    """ds.pixel_array with decoder failures turned into one line."""
    try:
        arr = ds.pixel_array
    except (
        RuntimeError,
        ValueError,
        AttributeError,
        NotImplementedError,
        KeyError,
        TypeError,
        OSError,
        EOFError,
    ) as exc:
        raise InputError(decode_failure(ds, path, exc)) from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected = 2 if samples == 1 else 3
    if arr.ndim != expected or (samples == 3 and arr.shape[-1] != 3):
        raise InputError(
            f"DICOM {path} decodes to pixel array shape {arr.shape}; expected a single 2-D "
            f"{'grayscale' if samples == 1 else 'RGB'} image"
        )
    return arr


def dicom_pixels(path: Path, modalities: tuple[str, ...] = (), expected: str = "") -> np.ndarray:
    """A DICOM file -> uint8 (H, W) grayscale or (H, W, 3) RGB, display-mapped as described above."""
    ds = read_dicom(path)
    try:
        check_modality(ds, path, modalities, expected)
        check_pixel_module(ds, path)
        arr = decode(ds, path)
        if arr.ndim == 3:
            return _color_uint8(arr, ds)
        return gray_uint8(arr, ds, path)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # a damaged element read lazily (pydicom parses values on access)
        raise InputError(
            f"DICOM {path} has a damaged header ({_first(exc)}); re-export it"
        ) from None


def check_modality(ds, path: Path, modalities: tuple[str, ...], expected: str) -> None:
    """When the bundle names modalities, the DICOM's (0008,0060) Modality must be one of them."""
    if not modalities:
        return
    modality = str(ds.get("Modality", "") or "").upper()
    if modality not in modalities:
        raise InputError(
            f"DICOM {path} has Modality {modality or '(none)'}; this bundle's model takes "
            f"{' or '.join(modalities)} images ({expected}); pass an image of that modality"
        )


def gray_uint8(arr: np.ndarray, ds, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds)
    lo, hi = modality_range(ds)
    if _has_voi_lut(ds):
        out, hi = voi_lut_sequence(values, ds)
        lo = 0.0
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            out = apply_voi_lut(values, ds, prefer_lut=False)
        except ValueError as exc:
            raise InputError(
                f"DICOM {path} has an invalid window ({exc}); fix the header"
            ) from None
    else:
        out = values
        lo, hi = min(lo, hi), max(lo, hi)
    if hi == lo:
        raise InputError(f"DICOM {path} has an empty display range; check Bits Stored and Rescale")
    scaled = np.clip((np.asarray(out, np.float64) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    u8 = np.rint(scaled).astype(np.uint8)
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        u8 = 255 - u8
    return u8


def modality_range(ds) -> tuple[float, float]:
    """(y_min, y_max) of the modality output, as pydicom's windowing defines it (PS3.3 C.11.2)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return lo, hi


def voi_lut_sequence(values: np.ndarray, ds) -> tuple[np.ndarray, float]:
    """The first VOI LUT: output values and the top of their range.

    Applied here rather than by pydicom 3.0.2's `apply_voi`, which indexes with an array of the
    LUT entry type, so an 8-bit LUT with more than 256 entries wraps its indices. The range is
    0..2^n-1 for n = the descriptor's bits, unless the entries use at most n-4 bits (LUTs whose
    descriptor overstates the depth, as some CR devices write); then the bits they really use.
    """
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    elem = item["LUTData"]
    if isinstance(elem.value, bytes):
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        lut = np.frombuffer(elem.value, dtype="<u2" if little else ">u2").astype(np.int64)
    else:
        lut = np.asarray(elem.value, dtype=np.int64).reshape(-1)
    lut = lut[: entries or 65536]
    index = np.clip(
        np.rint(np.asarray(values, np.float64)).astype(np.int64) - first, 0, len(lut) - 1
    )
    top = 2**bits - 1
    used = int(lut.max()) if len(lut) else 0
    if 0 < used < 2 ** (bits - 4):
        top = 2 ** used.bit_length() - 1
    return lut[index].astype(np.float64), float(top)


def _has_voi_lut(ds) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def _color_uint8(arr: np.ndarray, ds) -> np.ndarray:
    bits = int(ds.get("BitsStored", 8) or 8)
    if bits <= 8 and arr.dtype == np.uint8:
        return arr
    top = float(2**bits - 1)
    return np.rint(np.clip(arr.astype(np.float64) / top, 0, 1) * 255.0).astype(np.uint8)
