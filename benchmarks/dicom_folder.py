"""Reading a class-folder tree of DICOM files vs the same images as PNG/JPEG, side by side, and the
cost of `bench --groups dicom:...` (each evaluated image's header read again).

    PYTHONPATH=$PWD python benchmarks/dicom_folder.py [--repeats 3] [--write]

The DICOM tree is the real brain MRI folder set, each image written as an 8-bit MONOCHROME2
DICOM of the grayscale pixels its PNG/JPEG decodes to, with Manufacturer/PatientSex/PatientAge
set per image. Loads alternate (PNG, DICOM, PNG, ...) so load changes hit both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average, replace_section, table  # noqa: E402
from edgemed.data.locate import find_dataset  # noqa: E402
from tests.bundle_support import dicom_tree  # noqa: E402


def timed_load(root: Path) -> tuple[float, object]:
    from edgemed.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(str(root), (64, 64), 1, 0, False)
    return time.perf_counter() - t0, ds


def groups_seconds(root: Path, ds) -> float:
    from edgemed.evaluation.group_sources import dicom_group_table
    from edgemed.evaluation.groups import ImageKeys

    test = ds.split("test")
    keys = ImageKeys(test.ids, test.hashes, frozenset((*test.ids, *test.hashes)))
    t0 = time.perf_counter()
    dicom_group_table("dicom:Manufacturer,PatientSex,AgeBand", str(root), keys)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = ap.parse_args()
    src = find_dataset("brain_mri")
    if src is None:
        sys.exit("brain_mri dataset not found (set EDGEMED_DATA)")
    start = load_average()
    with tempfile.TemporaryDirectory(prefix="edgemed-dicom-bench-") as d:
        root = Path(d) / "brain_mri_dicom"
        n = dicom_tree(src, root)
        png, dcm = [], []
        for _ in range(args.repeats):
            png.append(timed_load(src)[0])
            t, ds = timed_load(root)
            dcm.append(t)
        groups = statistics.median(groups_seconds(root, ds) for _ in range(args.repeats))
        n_test = len(ds.split("test"))
    p, q = statistics.median(png), statistics.median(dcm)
    rows = [
        ["PNG/JPEG tree (as shipped)", n, f"{p:.2f}", "1.00"],
        ["the same images as DICOM", n, f"{q:.2f}", f"{q / p:.2f}"],
    ]
    body = "\n\n".join(
        [
            f"`PYTHONPATH=$PWD python benchmarks/dicom_folder.py --repeats {args.repeats} --write`; "
            f"{start} at the start, {load_average()} at the end. `load_dataset` at 64 px, 1 channel "
            "(decode, content hash, duplicate-aware split); median of the repeats, loads alternating.",
            table(["data", "images", "load s", "ratio"], rows),
            f"`--groups dicom:Manufacturer,PatientSex,AgeBand` on the {n_test} test images: "
            f"{groups:.3f} s to read their headers and build the groups table.",
        ]
    )
    print(body)
    if args.write:
        replace_section("DICOM class folders", body)


if __name__ == "__main__":
    main()
