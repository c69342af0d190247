"""Drift by subgroup (bench --groups): the groups file is checked against the evaluated images,
every metric is computed per group with CIs, a group too small for a metric fails closed under
--gate-per-group; DICOM attributes and file properties make groups files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.evaluation.groups import (
    ImageKeys,
    group_drifts,
    group_violations,
    read_groups_csv,
    worst_groups,
)
from edgemed.evaluation.limits import limits_from
from tests.bundle_support import DICOM_VENDORS as VENDORS
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

BINARY = Contract(input_size=(28, 28), channels=1, class_names=("normal", "pneumonia"))
FAST = ("--seconds", "0.05", "--min-runs", "3")
KEYS = ImageKeys(
    ids=("test/0", "test/1", "test/2"),
    hashes=("a" * 64, "b" * 64, "c" * 64),
    known=frozenset({"test/0", "test/1", "test/2", "train/0", "a" * 64, "b" * 64, "c" * 64}),
)


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "groups.csv"
    p.write_text(text)
    return p


def test_ids_and_hashes_name_images_and_other_splits_may_be_listed(tmp_path):
    p = _csv(
        tmp_path, "image,site,sex\ntest/0,A,F\n" + "B" * 64 + ",B,M\ntest/2,A,M\ntrain/0,C,F\n"
    )
    table = read_groups_csv(p, KEYS)
    assert table.columns == ("site", "sex")
    assert table.values == (("A", "F"), ("B", "M"), ("A", "M"))
    members = {(c, v): idx.tolist() for c, v, idx in table.members()}
    assert members == {("site", "A"): [0, 2], ("site", "B"): [1], ("sex", "F"): [0],
                       ("sex", "M"): [1, 2]}  # fmt: skip
    assert table.to_dict()["sizes"] == {"site": {"A": 2, "B": 1}, "sex": {"F": 1, "M": 2}}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "image,site\ntest/0,A\ntest/1,A\n",
            "no row for 1 of the 3 evaluated images (first: test/2)",
        ),
        ("image,site\ntest/0,A\ntest/1,A\ntest/2,A\nno/such.png,B\n", "1 rows name no image"),
        ("image,site\ntest/0,A\ntest/1,A\ntest/2,A\ntest/0,B\n", "listed twice (lines 2 and 5)"),
        ("image\ntest/0\ntest/1\ntest/2\n", "no group columns"),
        ("", "is empty"),
        ("image,site\ntest/0,A\ntest/1,\ntest/2,A\n", "line 3"),
        ("image,site,site\ntest/0,A,A\n", "distinct"),
        ("image,site\ntest/0,A\n" + "a" * 64 + ",B\ntest/1,A\ntest/2,A\n", "different groups"),
    ],
)
def test_bad_groups_files_are_refused_with_one_reason(tmp_path, text, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_groups_csv(_csv(tmp_path, text), KEYS)


def test_huge_and_binary_groups_files_are_refused(tmp_path):
    big = tmp_path / "big.csv"
    big.write_bytes(b"image,site\n" + b"x" * (17 * 1024 * 1024))
    with pytest.raises(InputError, match="over the 16777216 byte limit"):
        read_groups_csv(big, KEYS)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00image")
    with pytest.raises(InputError, match="not a UTF-8 CSV"):
        read_groups_csv(binary, KEYS)


def _logits(n, seed):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    ref = rng.normal(3.0 * (y - 0.5), 1.0)[:, None]
    return ref, y, rng


def test_every_group_gets_its_own_drift_and_a_tiny_group_fails_closed_with_its_size(tmp_path):
    n = 300
    ref, y, rng = _logits(n, 0)
    cand = ref.copy()
    site = np.where(np.arange(n) < 150, "A", "B").astype(object)
    cand[150:] += rng.normal(0, 1.5, (150, 1))  # site B drifts, site A is untouched
    site[[0, 2]] = "C"  # two images, both negative: no AUC, no sensitivity
    ids = tuple(f"test/{i}" for i in range(n))
    keys = ImageKeys(ids, tuple(f"{i:064x}" for i in range(n)), frozenset(ids))
    p = _csv(
        tmp_path, "image,site\n" + "".join(f"{i},{s}\n" for i, s in zip(ids, site, strict=True))
    )
    groups = group_drifts(BINARY, ref, cand, y, read_groups_csv(p, keys), n_boot=200)
    by = {g.value: g for g in groups}
    assert by["A"].drift.flips == 0 and by["A"].drift.auc_drop == pytest.approx(0, abs=1e-12)
    assert by["B"].drift.auc_drop > 0.01 and by["B"].drift.flips > 0
    assert by["B"].drift.auc_candidate_ci95[0] < by["B"].drift.auc_candidate < 1
    lo, hi = by["B"].rate_ci("sens")
    assert lo < by["B"].drift.sensitivity < hi
    assert by["C"].n == 2 and by["C"].positives == 0 and by["C"].drift.auc_drop is None
    assert worst_groups(groups) == {"site": "B"}
    lines = group_violations(limits_from({"auc_drop": 0.005}, ()), groups)
    assert lines[0] == (
        "site=B (150 images, 75 positive): AUC drop beyond the band (positive = worse) "
        f"{by['B'].drift.auc_drop_decisive:.4f} > --max-auc-drop 0.005"
    )
    assert lines[1].startswith("site=C (2 images, 0 positive): AUC drop beyond the band")
    assert "could not be computed" in lines[1] and "too small" in lines[1]
    assert len(lines) == 2  # site A passes


def test_a_group_whose_outputs_cannot_be_evaluated_says_why():
    ref = np.array([[1.0], [1.0], [-1.0], [2.0]])
    keys = ImageKeys(("a", "b", "c", "d"), ("1" * 64, "2" * 64, "3" * 64, "4" * 64),
                     frozenset("abcd"))  # fmt: skip
    from edgemed.evaluation.groups import GroupTable

    table = GroupTable("x", "0" * 64, ("dup",), (("same",), ("same",), ("rest",), ("rest",)))
    assert len(keys.ids) == len(table.values)
    groups = group_drifts(BINARY, ref, ref, np.array([0, 1, 0, 1]), table)
    same = next(g for g in groups if g.value == "same")
    assert same.drift is None and "constant" in same.error
    assert group_violations(limits_from({"flip_rate": 0.01}, ()), groups)[0].startswith(
        "dup=same (2 images, 1 positive): not evaluated"
    )


def test_dicom_attributes_become_groups(tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from edgemed.evaluation.group_sources import (
        age_band,
        dicom_group_values,
        dicom_groups_csv,
        parse_dicom_spec,
    )

    files = {}
    for i, (maker, sex, age) in enumerate([("GE", "F", "045Y"), ("Siemens", "M", "006M"),
                                           ("GE", "", None)]):  # fmt: skip
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.Manufacturer, ds.PatientSex, ds.Modality = maker, sex, "CR"
        if age:
            ds.PatientAge = age
        path = tmp_path / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files[f"yes/{i}.png"] = path
    attrs = parse_dicom_spec("dicom:Manufacturer,PatientSex,AgeBand")
    assert attrs == ("Manufacturer", "PatientSex", "AgeBand")
    text = dicom_groups_csv(files, attrs)
    assert text.splitlines() == [
        "image,Manufacturer,PatientSex,AgeBand",
        "yes/0.png,GE,F,40-49",
        "yes/1.png,Siemens,M,0-9",
        "yes/2.png,GE,missing,missing",
    ]
    assert dicom_group_values(pydicom.dcmread(files["yes/0.png"]), ("Modality",)) == ("CR",)
    assert age_band("093Y") == "90+" and age_band("45") == "missing"
    with pytest.raises(InputError, match="Scanner is not a DICOM attribute keyword"):
        parse_dicom_spec("dicom:Manufacturer,Scanner")


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cxr_groups(tmp_path_factory) -> Path:
    """Every chest X-ray test image in a group by index, plus a 3-image group (one class)."""
    from edgemed.data import load_dataset

    labels = load_dataset(CXR).split("test").labels
    small = [int(i) for i in np.flatnonzero(labels == 0)[:3]]
    lines = ["image,half"]
    for i in range(len(labels)):
        lines.append(f"test/{i},{'tiny' if i in small else ('even' if i % 2 == 0 else 'odd')}")
    p = tmp_path_factory.mktemp("groups") / "groups.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_bench_reports_every_group_and_gates_each_one(cxr_onnx, cxr_groups, tmp_path):
    out = tmp_path / "b"
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--groups", cxr_groups, *FAST, "--out", out)
    assert res.code == 0, res.err
    results = json.loads((out / "results.json").read_text())
    sizes = results["subgroups"]["sizes"]["half"]
    assert sizes["tiny"] == 3 and sum(sizes.values()) == 468
    row = results["rows"][0]
    groups = {g["value"]: g for g in row["subgroups"]}
    even = groups["even"]["drift"]
    assert even["auc_reference_ci95"][0] < even["auc_reference"] < even["auc_reference_ci95"][1]
    assert groups["tiny"]["drift"]["auc_reference"] is None and groups["tiny"]["positives"] == 0
    assert "too small for AUC: 3 images, 0 positive" in res.out and "by half" in res.out
    assert "Subgroups" in (out / "report.html").read_text()
    res = run_cli(
        "bench", cxr_onnx, "--data", CXR, "--groups", cxr_groups, "--gate-per-group",
        "--max-flip-rate", "0.01", "--min-sens", "0.5", *FAST, "--out", tmp_path / "g",
    )  # fmt: skip
    assert res.code == 4
    assert_user_error(res, "half=tiny (3 images, 0 positive): sensitivity could not be computed")
    assert "half=even" not in res.err.splitlines()[-1]


def test_bench_refuses_a_bad_groups_file_before_writing_anything(cxr_onnx, tmp_path):
    bad = _csv(tmp_path, "image,site\ntest/0,A\n")
    before = tree_snapshot(tmp_path)
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--groups", bad, *FAST, "--out", tmp_path / "o")
    assert_user_error(res, "no row for 467 of the 468 evaluated images")
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--gate-per-group", "--out", tmp_path / "o")
    assert_user_error(res, "--gate-per-group needs --groups")
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--groups", "dicom:Manufacturer",
                  "--out", tmp_path / "o")  # fmt: skip
    assert_user_error(res, "an .npz keeps no header")
    res = run_cli("bench", cxr_onnx, "--data", CXR, "--groups", "dicom:Scanner",
                  "--out", tmp_path / "o")  # fmt: skip
    assert_user_error(res, "Scanner is not a DICOM attribute keyword")
    assert tree_snapshot(tmp_path) == before


def test_brain_mri_grouped_by_source_format_and_resolution(brain_model, brain_dir, tmp_path):
    """Real groups of a real folder set: the files' own format and size."""
    from edgemed.evaluation.group_sources import folder_groups_csv
    from edgemed.pipeline.export import ExportRequest, run_export

    art = tmp_path / "onnx"
    run_export(ExportRequest(model=str(brain_model), target="onnx", out=art))
    groups = tmp_path / "brain.csv"
    groups.write_text(folder_groups_csv(brain_dir))
    assert len(groups.read_text().splitlines()) == 254  # header + 253 files
    out = tmp_path / "b"
    res = run_cli("bench", art, "--data", brain_dir, "--groups", groups, *FAST, "--out", out)
    assert res.code == 0, res.err
    results = json.loads((out / "results.json").read_text())
    sizes = results["subgroups"]["sizes"]
    assert set(sizes) == {"source_format", "resolution_band"}
    assert set(sizes["source_format"]) <= {"JPEG color", "JPEG grayscale", "PNG"}
    assert sum(sizes["resolution_band"].values()) == results["data"]["n"]
    assert results["rows"][0]["worst_groups"]["resolution_band"] in sizes["resolution_band"]


# ---------------------------------------------------------------- DICOM data and DICOM groups


@pytest.fixture(scope="module")
def brain_dicom_dir(brain_dir, tmp_path_factory) -> Path:
    """The real brain MRI images as a class-folder tree of DICOM files."""
    from tests.bundle_support import dicom_tree

    root = tmp_path_factory.mktemp("dicom") / "brain_mri_dicom"
    dicom_tree(brain_dir, root)
    return root


def test_a_dicom_folder_reads_as_the_pixels_a_viewer_shows(brain_dir, brain_dicom_dir):
    from edgemed.data.folder import content_hash, list_class_files
    from edgemed.data.images import read_image
    from tests.bundle_support import write_dicom

    files = list_class_files(brain_dicom_dir)[1]
    assert len(files) == len(list_class_files(brain_dir)[1])
    for f, _ in files[:: len(files) // 5]:
        src = (brain_dir / f.relative_to(brain_dicom_dir)).with_suffix("")
        np.testing.assert_array_equal(read_image(f, (64, 64), 1), read_image(src, (64, 64), 1))
    # two exports of one image (new UIDs, other header) are one image for the split
    pixels = read_image(files[0][0], (40, 30), 1)[:, :, 0]
    a = write_dicom(brain_dicom_dir.parent / "a.dcm", pixels, Manufacturer="GE")
    b = write_dicom(brain_dicom_dir.parent / "b.dcm", pixels, Manufacturer="Siemens")
    assert a.read_bytes() != b.read_bytes() and content_hash(a) == content_hash(b)


def test_bench_takes_groups_from_each_dicom_header(brain_model, brain_dicom_dir, tmp_path):
    from edgemed.pipeline.export import ExportRequest, run_export

    art = tmp_path / "onnx"
    run_export(ExportRequest(model=str(brain_model), target="onnx", out=art))
    out = tmp_path / "b"
    spec = "dicom:Manufacturer,PatientSex,AgeBand"
    res = run_cli("bench", art, "--data", brain_dicom_dir, "--groups", spec, *FAST, "--out", out)
    assert res.code == 0, res.err
    results = json.loads((out / "results.json").read_text())
    assert results["subgroups"]["path"] == spec
    sizes = results["subgroups"]["sizes"]
    assert set(sizes) == {"Manufacturer", "PatientSex", "AgeBand"}
    assert set(sizes["Manufacturer"]) == set(VENDORS) and set(sizes["PatientSex"]) == {"F", "M"}
    assert all(sum(v.values()) == results["data"]["n"] for v in sizes.values())
    assert "by Manufacturer" in res.out


def test_dicom_groups_need_dicom_files(brain_dicom_dir, tmp_path):
    from edgemed.evaluation.group_sources import dicom_group_table
    from tests.bundle_support import write_png

    shutil.copytree(brain_dicom_dir / "no", tmp_path / "d" / "no")
    write_png(tmp_path / "d" / "no" / "extra.png", np.full((64, 64), 128, np.uint8))
    dcm = next((tmp_path / "d" / "no").glob("*.dcm")).name
    keys = ImageKeys((f"no/{dcm}", "no/extra.png"), ("a" * 64, "b" * 64), frozenset())
    with pytest.raises(InputError, match="no/extra.png in .* is not a DICOM file"):
        dicom_group_table("dicom:Manufacturer", str(tmp_path / "d"), keys)
    one = ImageKeys((f"no/{dcm}",), ("a" * 64,), frozenset({f"no/{dcm}"}))
    table = dicom_group_table("dicom:Manufacturer,AgeBand", str(tmp_path / "d"), one)
    assert table.columns == ("Manufacturer", "AgeBand") and table.values[0][0] in VENDORS


def test_a_damaged_dicom_header_is_one_line(tmp_path):
    from edgemed.evaluation.group_sources import dicom_groups_csv
    from tests.bundle_support import write_dicom

    good = write_dicom(tmp_path / "a.dcm", np.full((8, 8), 7, np.uint8), Manufacturer="GE")
    bad = tmp_path / "b.dcm"
    for torn in (good.read_bytes()[:200], good.read_bytes()[:132] + bytes(range(256)) * 4):
        bad.write_bytes(torn)  # pydicom reads both leniently
        with pytest.raises(InputError, match="b.dcm holds no SOP Class UID"):
            dicom_groups_csv({"a": good, "b": bad}, ("Manufacturer",))


def test_train_and_export_read_a_dicom_folder(brain_dir, brain_dicom_dir, tmp_path):
    from edgemed.data import load_dataset

    model, art = tmp_path / "m", tmp_path / "a"
    res = run_cli("train", "--data", brain_dicom_dir, "--model", "cnn", "--width", "0.25",
                  "--epochs", "1", "--image-size", "32", "--out", model)  # fmt: skip
    assert res.code == 0, res.err
    card = json.loads((model / "card.json").read_text())
    assert sum(card["data"]["sizes"].values()) == 253
    # the same duplicate groups as the shipped tree (its copies are byte-identical files)
    shipped = load_dataset(str(brain_dir), (32, 32), 1, 0, False).duplicates
    assert card["data"]["duplicates"] == shipped.to_dict()
    res = run_cli("export", "--model", model, "--target", "onnx", "--precision", "int8",
                  "--calib", brain_dicom_dir, "--max-flip-rate", "1", "--max-auc-drop", "1",
                  "--out", art)  # fmt: skip
    assert res.code == 0, res.err
    cal = json.loads((art / "calibration.json").read_text())
    assert all(s["id"].endswith(".dcm") for s in cal["samples"])
