"""Groups for `bench --groups`, built from the images' sources: DICOM attributes (Manufacturer,
PatientSex, an age band from PatientAge) or properties of the image files themselves (source
format and resolution band).

`bench --data FOLDER --groups dicom:Manufacturer,PatientSex,AgeBand` reads the attributes from
the headers of the evaluated images' own DICOM files (`dicom_group_table`); `dicom_groups_csv`
writes the same groups as a CSV, for DICOM files the images were converted from.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from edgemed.data.dicom import DICOM_SUFFIXES, read_dicom
from edgemed.data.folder import list_class_files
from edgemed.errors import InputError
from edgemed.evaluation.groups import GroupTable, ImageKeys, groups_from_csv
from edgemed.imagecheck import decode_errors

AGE_BAND = "AgeBand"  # derived from PatientAge: decades, "0-9", "10-19", ..., "90+"
MISSING = "missing"  # an attribute absent or empty in a file: its own, visible group
_AGE = re.compile(r"(\d{3})([DWMY])")


def parse_dicom_spec(spec: str) -> tuple[str, ...]:
    """'dicom:Manufacturer,PatientSex,AgeBand' -> the attribute keywords (checked)."""
    from pydicom.datadict import tag_for_keyword

    names = tuple(s.strip() for s in spec.removeprefix("dicom:").split(",") if s.strip())
    if not names:
        raise InputError("--groups dicom: names no attribute; e.g. dicom:Manufacturer,PatientSex")
    bad = [n for n in names if n != AGE_BAND and tag_for_keyword(n) is None]
    if bad:
        raise InputError(
            f"--groups {spec}: {', '.join(bad)} is not a DICOM attribute keyword; use keywords "
            f"such as Manufacturer, PatientSex, ManufacturerModelName, or {AGE_BAND}"
        )
    return names


def age_band(age: str | None) -> str:
    """A DICOM age string (AS, e.g. '045Y', '006M') -> its decade band; MISSING if unreadable."""
    m = _AGE.fullmatch((age or "").strip())
    if not m:
        return MISSING
    years = int(m.group(1)) if m.group(2) == "Y" else 0  # days, weeks, months: under a year
    return "90+" if years >= 90 else f"{years // 10 * 10}-{years // 10 * 10 + 9}"


def dicom_group_values(ds, attributes: tuple[str, ...]) -> tuple[str, ...]:
    """One group value per attribute of a pydicom Dataset (MISSING where absent or empty)."""
    out = []
    for name in attributes:
        if name == AGE_BAND:
            out.append(age_band(str(ds.get("PatientAge", "") or "")))
            continue
        value = ds.get(name)
        text = "" if value is None else str(value).strip()
        out.append(text or MISSING)
    return tuple(out)


def dicom_groups_csv(files: dict[str, Path], attributes: tuple[str, ...]) -> str:
    """The CSV text for `bench --groups`: image id -> one column per attribute, read from each
    image's DICOM file (header only, pixel data not loaded)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", *attributes])
    for image_id, path in files.items():
        ds = read_dicom(Path(path))  # large values deferred; damaged files are one line
        if "SOPClassUID" not in ds:  # pydicom reads a torn file leniently, as (nearly) empty
            raise InputError(
                f"DICOM {path} holds no SOP Class UID (truncated or damaged); re-export it"
            )
        try:
            values = dicom_group_values(ds, attributes)
        except Exception as exc:  # pydicom parses values on access: a damaged element
            raise InputError(
                f"DICOM {path} has a damaged header ({type(exc).__name__}); re-export it"
            ) from None
        w.writerow([image_id, *values])
    return buf.getvalue()


def dicom_group_table(spec: str, data: str, keys: ImageKeys) -> GroupTable:
    """`--groups dicom:ATTR,...`: each evaluated image's groups from its own DICOM header, for a
    class-folder tree of DICOM files at `data`."""
    attributes = parse_dicom_spec(spec)
    root = Path(data)
    if not root.is_dir():
        raise InputError(
            f"--groups {spec} reads DICOM attributes from the image files, and --data {data} is "
            "not a folder of DICOM files (an .npz keeps no header); pass the DICOM folder, or the "
            "groups as a CSV"
        )
    files = {}
    for image_id in keys.ids:
        f = root / image_id
        if f.suffix.lower() not in DICOM_SUFFIXES:
            raise InputError(
                f"--groups {spec}: {image_id} in {root} is not a DICOM file; every evaluated image "
                f"must be DICOM ({', '.join(DICOM_SUFFIXES)}) to take groups from its header, or "
                "pass the groups as a CSV"
            )
        files[image_id] = f
    text = dicom_groups_csv(files, attributes)
    return groups_from_csv(text.encode(), f"--groups {spec}", spec, keys)


# Resolution bands in stored pixels (width x height): small / medium / large source images.
RESOLUTION_BANDS = ((100_000, "<0.1 MP"), (250_000, "0.1-0.25 MP"))
LARGE_BAND = ">=0.25 MP"


def file_properties(path: Path) -> tuple[str, str]:
    """(source format, resolution band) of one image file, from its header (not decoded):
    e.g. ('JPEG grayscale', '<0.1 MP'); PNGs of any mode are one format."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
    except decode_errors() as exc:
        raise InputError(f"cannot read {path} as an image ({exc})") from None
    kind = (
        f"{fmt} {'grayscale' if mode in ('L', 'I;16', 'I') else 'color'}"
        if fmt == "JPEG"
        else str(fmt)
    )
    band = next((name for limit, name in RESOLUTION_BANDS if w * h < limit), LARGE_BAND)
    return kind, band


def folder_groups_csv(root: Path) -> str:
    """The groups CSV of a class-folder tree: image id (path relative to `root`) -> source
    format, resolution band."""

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "source_format", "resolution_band"])
    for f, _ in list_class_files(root)[1]:
        w.writerow([f.relative_to(root).as_posix(), *file_properties(f)])
    return buf.getvalue()
