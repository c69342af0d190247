"""Property-based fuzzing (hypothesis) of the bundle reader and the DICOM/PNG readers.

Property: whatever the bytes, the reader returns a valid result or raises an EdgemedError (one
line at the CLI); never another exception, never a hang. Examples are derived from real files
(the signed chest X-ray bundle, DICOM/PNG built from the real images) by flipping, overwriting,
truncating and inserting bytes. The budget is fixed (derandomized, a set number of examples) so
the whole file runs in well under 20 s.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemed.errors import EdgemedError
from tests.bundle_support import cxr_bundle_for, cxr_test_images, keypair, write_dicom, write_png

BUDGET = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mutated(draw, original: bytes, protect: int = 0) -> bytes:
    """`original` with 1-4 edits: flip a bit, overwrite a run, truncate, insert random bytes."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert"]))
        pos = draw(st.integers(protect, max(protect, len(data) - 1)))
        if kind == "flip" and data:
            data[pos % len(data)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            run = draw(st.binary(min_size=1, max_size=16))
            data[pos : pos + len(run)] = run
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=600))
    return bytes(data)


@pytest.fixture(scope="module")
def bundle_and_key(cxr_onnx, tmp_path_factory):
    return cxr_bundle_for(cxr_onnx, tmp_path_factory).read_bytes(), keypair(tmp_path_factory)[1]


def _verify(data: bytes, pub, path) -> None:
    from edgemed.appliance.verify import verify_bundle

    path.write_bytes(data)
    try:
        verified = verify_bundle(path, pub)
    except EdgemedError:
        return
    assert verified.manifest["format"] == "edgemed-bundle/1"


def test_bundle_reader_survives_mutations(bundle_and_key, tmp_path):
    original, pub = bundle_and_key

    @BUDGET
    @given(mutated(original))
    def check(data):
        _verify(data, pub, tmp_path / "f.bundle")

    check()


def test_bundle_reader_survives_random_tar_headers(bundle_and_key, tmp_path):
    """Random bytes in the first header blocks (where the manifest header lives)."""
    original, pub = bundle_and_key

    @BUDGET
    @given(st.binary(min_size=0, max_size=2048), st.integers(0, 3))
    def check(head, blocks):
        _verify(head + original[512 * blocks :], pub, tmp_path / "f.bundle")

    check()


@pytest.fixture(scope="module")
def spec():
    from edgemed.appliance.images import InputSpec
    from edgemed.contract import Contract

    return InputSpec(Contract(input_size=(28, 28), channels=1, class_names=("normal", "pneumonia")))


def _read(data: bytes, path, spec) -> None:
    from edgemed.appliance.images import read_input

    path.write_bytes(data)
    try:
        arr = read_input(path, spec)
    except EdgemedError:
        return
    assert arr.dtype == np.uint8 and arr.shape == (28, 28, 1)


def test_dicom_reader_survives_mutations(spec, tmp_path_factory, tmp_path):
    d = tmp_path_factory.mktemp("fuzz-dicom")
    pixels = cxr_test_images(1)[0].reshape(28, 28)
    original = write_dicom(d / "a.dcm", pixels.astype(np.uint16) * 16, bits_stored=12).read_bytes()

    @BUDGET
    @given(mutated(original, protect=132))  # keep the preamble, so it is read as DICOM
    def check(data):
        _read(data, tmp_path / "f.dcm", spec)

    check()


def test_png_reader_survives_mutations(spec, tmp_path_factory, tmp_path):
    d = tmp_path_factory.mktemp("fuzz-png")
    original = write_png(d / "a.png", cxr_test_images(1)[0].reshape(28, 28)).read_bytes()

    @BUDGET
    @given(mutated(original, protect=8))
    def check(data):
        _read(data, tmp_path / "f.png", spec)

    check()
