"""DICOM inputs built with pydicom from the real images: each encoding must give back exactly the
pixels (and so the prediction) of the PNG/JPEG it was made from; bad DICOMs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemed.errors import InputError
from tests.bundle_support import (
    cxr_bundle_for,
    cxr_report_for,
    cxr_test_images,
    keypair,
    make_bundle,
    write_dicom,
    write_png,
)
from tests.conftest import assert_user_error, run_cli, tree_snapshot


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keypair(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(cxr_onnx, keys, tmp_path_factory):
    """The chest X-ray bundle (DICOM Modality CR or DX only), loaded."""
    from edgemed.appliance import load

    with load(cxr_bundle_for(cxr_onnx, tmp_path_factory), keys[1]) as p:
        yield p


@pytest.fixture(scope="module")
def any_modality(cxr_onnx, keys, tmp_path_factory):
    """The same artifact bundled without --modality: the DICOM Modality is not checked."""
    from edgemed.appliance import load

    report = cxr_report_for(cxr_onnx, tmp_path_factory)
    out = make_bundle(cxr_onnx, report, keys[0], tmp_path_factory.mktemp("any") / "any.bundle")
    with load(out, keys[1]) as p:
        yield p


@pytest.fixture(scope="module")
def cxr_pixels() -> np.ndarray:
    return cxr_test_images(1)[0]


def assert_same_as_png(predictor, dicom: Path, pixels: np.ndarray, tmp_path: Path) -> None:
    png = write_png(tmp_path / "same.png", pixels)
    assert np.array_equal(predictor.prepare(dicom), predictor.prepare(png))
    a, b = predictor.predict(dicom), predictor.predict(png)
    assert a["probabilities"] == b["probabilities"] and a["decision"] == b["decision"]


def test_8bit_monochrome2(predictor, cxr_pixels, tmp_path):
    dcm = write_dicom(tmp_path / "a.dcm", cxr_pixels)
    assert_same_as_png(predictor, dcm, cxr_pixels, tmp_path)


def test_16bit_with_rescale_slope_intercept(predictor, cxr_pixels, tmp_path):
    stored = cxr_pixels.astype(np.uint16) * 257
    dcm = write_dicom(tmp_path / "a.dcm", stored, RescaleSlope=0.5, RescaleIntercept=100)
    assert_same_as_png(predictor, dcm, cxr_pixels, tmp_path)


def test_16bit_rescale_then_window_in_modality_units(predictor, cxr_pixels, tmp_path):
    # CT-style: stored + intercept -1024 gives HU = 4 u - 500; the window spans exactly that range.
    stored = cxr_pixels.astype(np.uint16) * 4 + 524
    attrs = {
        "RescaleSlope": 1,
        "RescaleIntercept": -1024,
        "WindowCenter": 10.5,
        "WindowWidth": 1021,
    }
    dcm = write_dicom(tmp_path / "a.dcm", stored, **attrs)
    assert_same_as_png(predictor, dcm, cxr_pixels, tmp_path)
    # Control: the same window applied to stored values (rescale ignored) saturates every pixel,
    # and a blank image is refused rather than classified.
    wrong = write_dicom(tmp_path / "b.dcm", stored, WindowCenter=10.5, WindowWidth=1021)
    with pytest.raises(InputError, match="no content"):
        predictor.prepare(wrong)


def test_monochrome1_is_inverted(predictor, cxr_pixels, tmp_path):
    dcm = write_dicom(tmp_path / "a.dcm", 255 - cxr_pixels, "MONOCHROME1")
    assert_same_as_png(predictor, dcm, cxr_pixels, tmp_path)


def test_window_center_width_on_16bit(predictor, cxr_pixels, tmp_path):
    stored = cxr_pixels.astype(np.uint16) * 16 + 1000  # occupies 1000..5080 of 0..65535
    dcm = write_dicom(tmp_path / "a.dcm", stored, WindowCenter=3040.5, WindowWidth=4081)
    assert_same_as_png(predictor, dcm, cxr_pixels, tmp_path)
    unwindowed = write_dicom(tmp_path / "b.dcm", stored)
    assert predictor.prepare(unwindowed).max() < 25  # without the window the image is near black


def test_voi_lut_sequence_8bit_entries(predictor, cxr_pixels, tmp_path):
    from pydicom.dataset import Dataset

    stored = cxr_pixels.astype(np.uint16) * 16 + 1000
    item = Dataset()
    item.add_new(0x00283002, "US", [4081, 1000, 8])  # 4081 entries from 1000, 8-bit output
    item.add_new(0x00283006, "US", [round(i / 16) for i in range(4081)])
    dcm = write_dicom(tmp_path / "a.dcm", stored, VOILUTSequence=[item])
    assert_same_as_png(predictor, dcm, cxr_pixels, tmp_path)


def test_voi_lut_that_overstates_its_bit_depth(predictor, cxr_pixels, tmp_path):
    # Descriptor says 16-bit entries, the entries use 12 bits (as some CR devices write): the
    # output range is the 12 bits really used, not 0..65535 (which would render near black).
    from pydicom.dataset import Dataset

    stored = cxr_pixels.astype(np.uint16) * 16 + 1000
    item = Dataset()
    item.add_new(0x00283002, "US", [4081, 1000, 16])
    item.add_new(0x00283006, "US", [round(i / 16 * 4095 / 255) for i in range(4081)])
    dcm = write_dicom(tmp_path / "a.dcm", stored, VOILUTSequence=[item])
    assert_same_as_png(predictor, dcm, cxr_pixels, tmp_path)


def test_brain_mri_jpeg_as_dicom_matches_the_jpeg(brain_dir, any_modality, tmp_path):
    from PIL import Image

    jpeg = brain_dir / "no" / "1 no.jpeg"
    gray = np.asarray(Image.open(jpeg).convert("L"))
    assert min(gray.shape) > 100  # a real, full-size MRI slice: the resize path is exercised
    dcm = write_dicom(tmp_path / "mr.dcm", gray, Modality="MR")
    assert np.array_equal(any_modality.prepare(dcm), any_modality.prepare(jpeg))
    assert any_modality.predict(dcm)["probabilities"] == any_modality.predict(jpeg)["probabilities"]


def test_rgb_dicom_with_equal_channels_is_grayscale(brain_dir, any_modality, tmp_path):
    from PIL import Image

    jpeg = brain_dir / "no" / "1 no.jpeg"
    rgb = np.asarray(Image.open(jpeg).convert("RGB"))
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    dcm = write_dicom(tmp_path / "rgb.dcm", rgb, "RGB", Modality="MR")
    assert np.array_equal(any_modality.prepare(dcm), any_modality.prepare(jpeg))


def _predict_refused(predictor, pub: Path, path: Path, *needles: str) -> None:
    before = tree_snapshot(path.parent)
    res = run_cli("predict", predictor.bundle.path, path, "--pubkey", pub)
    assert_user_error(res, *needles)
    (record,) = [json.loads(line) for line in res.out.splitlines()]  # one record, no result
    assert record["status"] == "unreadable" and "decision" not in record
    assert all(n.lower() in record["reason"].lower() for n in needles)
    assert tree_snapshot(path.parent) == before


def test_rgb_dicom_with_color_content_is_refused(brain_dir, any_modality, keys, tmp_path):
    from PIL import Image

    rgb = np.asarray(Image.open(brain_dir / "yes" / "Y259.JPG").convert("RGB"))
    assert not np.array_equal(rgb[..., 0], rgb[..., 2])  # a real tinted image
    dcm = write_dicom(tmp_path / "c.dcm", rgb, "RGB", Modality="MR")
    _predict_refused(
        any_modality, keys[1], dcm, "color image with distinct rgb channels", "grayscale"
    )


def test_multiframe_is_refused(predictor, keys, tmp_path):
    dcm = write_dicom(tmp_path / "mf.dcm", cxr_test_images(3))
    _predict_refused(predictor, keys[1], dcm, "multi-frame (3 frames)", "single-frame")


def test_dicom_without_pixel_data_is_refused(predictor, cxr_pixels, keys, tmp_path):
    import pydicom

    dcm = write_dicom(tmp_path / "nopix.dcm", cxr_pixels)
    ds = pydicom.dcmread(dcm)
    del ds.PixelData
    ds.save_as(dcm)
    _predict_refused(predictor, keys[1], dcm, "has no pixel data")


def test_dicom_of_another_modality_is_refused(brain_dir, predictor, keys, tmp_path):
    from PIL import Image

    gray = np.asarray(Image.open(brain_dir / "no" / "1 no.jpeg").convert("L"))
    dcm = write_dicom(tmp_path / "mr.dcm", gray, Modality="MR")
    _predict_refused(predictor, keys[1], dcm, "modality mr", "takes cr or dx", "pneumoniamnist")


def test_too_small_dicom_is_refused_saying_what_was_expected(predictor, cxr_pixels, keys, tmp_path):
    dcm = write_dicom(tmp_path / "tiny.dcm", np.ascontiguousarray(cxr_pixels[:10, :10]))
    _predict_refused(
        predictor, keys[1], dcm, "only 10x10", "at least 14x14", "the model takes 28x28"
    )


def test_not_a_dicom_with_dcm_suffix_is_refused(predictor, keys, tmp_path):
    (tmp_path / "fake.dcm").write_bytes(b"\x89PNG not really")
    _predict_refused(predictor, keys[1], tmp_path / "fake.dcm", "not a dicom part 10 file")
