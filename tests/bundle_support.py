"""Helpers for the bundle/appliance/DICOM tests: keys, real bench reports, bundles, tar surgery,
DICOM files built from the real images. Everything built here is cached per session by path."""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.conftest import CXR, run_cli

_CACHE: dict[str, Path] = {}


def cached(key: str, build: Callable[[], Path]) -> Path:
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def keypair(tmp_path_factory, name: str = "keys") -> tuple[Path, Path]:
    """(edgemed.key, edgemed.pub) made by the real `edgemed keygen`, once per session per name."""

    def build() -> Path:
        out = tmp_path_factory.mktemp(name) / "keys"
        res = run_cli("keygen", "--out", out)
        assert res.code == 0, res
        return out

    d = cached(f"keys:{name}", build)
    return d / "edgemed.key", d / "edgemed.pub"


def real_bench_available() -> bool:
    from edgemed.cli import COMMANDS

    return "bench" in COMMANDS and importlib.util.find_spec("edgemed.harness.bench") is not None


def bench_report(artifact: Path, out: Path) -> Path:
    """A bench report for `artifact`: the real `edgemed bench` on the chest X-ray test split when
    it exists, else `measured_bench_report` (same schema, drift measured the same way)."""
    if real_bench_available():
        res = run_cli(
            "bench", artifact, "--data", CXR, "--out", out, "--seconds", "0.05", "--min-runs", "3"
        )
        assert res.code == 0, res
        return out
    return measured_bench_report(artifact, out)


def measured_bench_report(artifact: Path, out: Path) -> Path:
    """results.json (edgemed-bench/1) with real numbers: the artifact run by its own runtime on the
    real chest X-ray test split vs the torch FP32 reference of its source model (harness.drift)."""
    from edgemed.artifact import load_artifact
    from edgemed.backends import open_runner, run_batches
    from edgemed.data import load_dataset
    from edgemed.evaluation.drift import drift_from_logits
    from edgemed.fileio import sha256_file
    from edgemed.models.source import load_model_source
    from edgemed.pipeline.training import predict_logits

    art = load_artifact(artifact)
    test = load_dataset(CXR).split("test")
    with open_runner(art, threads=1) as runner:
        cand = run_batches(runner, art.contract, test.images)
    source = art.manifest["source"]
    loaded = load_model_source(source.get("dir") or source["path"])
    ref = predict_logits(loaded.module, loaded.contract, test.images)
    drift = drift_from_logits(art.contract, ref, cand, test.labels).to_dict()
    y = test.labels.reshape(-1).astype(bool)
    sens = [float(np.mean(art.contract.decisions(z)[y])) for z in (ref, cand)]
    drift.update(sens_drop=sens[0] - sens[1], sensitivity=sens[1], sensitivity_reference=sens[0])
    row = {
        "artifact": str(Path(artifact).resolve()),
        "label": art.label,
        "runtime": art.runtime,
        "precision": art.precision,
        "artifact_manifest_sha256": sha256_file(Path(artifact) / "manifest.json"),
        "status": "ok",
        "error": None,
        "drift": drift,
        "latency": None,
        "memory": None,
    }
    out.mkdir(parents=True, exist_ok=True)
    doc = {"format": "edgemed-bench/1", "rows": [row], "data": {"path": str(CXR), "split": "test"}}
    (out / "results.json").write_text(json.dumps(doc, indent=2))
    (out / "report.html").write_text(
        f"<html><body><pre>{json.dumps(row, indent=2)}</pre></body></html>"
    )
    return out


def degraded_artifact(src: Path, out: Path, noise: float, seed: int = 0) -> Path:
    """A real, genuinely drifted artifact: `src` with seeded noise added to every conv weight
    (noise x each tensor's std), its manifest rewritten so the artifact itself verifies."""
    import onnx
    from onnx import numpy_helper

    from edgemed.artifact import FORMAT, MANIFEST, write_manifest

    shutil.copytree(src, out)
    for name in ("domain.json", "domain.npz"):  # fitted on the model before it was perturbed
        (out / name).unlink(missing_ok=True)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.pop("domain", None)
    model = onnx.load(str(out / manifest["model_file"]))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4:
            w = w + rng.normal(0.0, noise * float(w.std()), w.shape).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(out / manifest["model_file"]))
    for key in ("files", "format"):
        manifest.pop(key, None)
    manifest["drift"] = None
    manifest["note"] = f"test artifact: conv weights perturbed by {noise} x std (seed {seed})"
    write_manifest(out, manifest)
    assert json.loads((out / MANIFEST).read_text())["format"] == FORMAT
    return out


def cxr_report_for(cxr_onnx: Path, tmp_path_factory) -> Path:
    """The bench report of the chest X-ray ONNX FP32 artifact (once per session)."""
    return cached("report:cxr", lambda: bench_report(cxr_onnx, tmp_path_factory.mktemp("b") / "r"))


def cxr_bundle_for(cxr_onnx: Path, tmp_path_factory) -> Path:
    """The chest X-ray ONNX FP32 bundle (modalities CR, DX), signed with the session test key."""
    report = cxr_report_for(cxr_onnx, tmp_path_factory)
    key = keypair(tmp_path_factory)[0]
    out = tmp_path_factory.mktemp("bundle") / "cxr.bundle"
    args = ("--modality", "CR", "--modality", "DX")
    return cached("bundle:cxr", lambda: make_bundle(cxr_onnx, report, key, out, *args))


def make_bundle(artifact: Path, report: Path, key: Path, out: Path, *extra: str) -> Path:
    res = run_cli(
        "bundle", "--model", artifact, "--report", report, "--key", key, "--out", out, *extra
    )
    assert res.code == 0, res
    return out


# ---- tar surgery ------------------------------------------------------------------------------


def read_members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(bundle, "r:") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]


def write_members(out: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.isreg():
                info = copy.copy(info)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    out.write_bytes(buf.getvalue())
    return out


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def replace_member(members, name: str, data: bytes):
    assert any(m.name == name for m, _ in members), name
    return [regular(m.name, data) if m.name == name else (m, d) for m, d in members]


def member_bytes(members, name: str) -> bytes:
    return next(d for m, d in members if m.name == name)


def resign(members, key_path: Path, edit: Callable[[dict], None]):
    """Edit the manifest dict and sign it again with `key_path` (what an attacker with that key,
    or a test with the test key, can do)."""
    from edgemed.bundle import MANIFEST_NAME, SIGNATURE_NAME
    from edgemed.bundle.build import manifest_bytes
    from edgemed.signing import fingerprint, load_private_key

    key = load_private_key(key_path)
    manifest = json.loads(member_bytes(members, MANIFEST_NAME))
    edit(manifest)
    manifest["signer"]["public_key_sha256"] = fingerprint(key.public_key())
    data = manifest_bytes(manifest)
    members = replace_member(members, MANIFEST_NAME, data)
    return replace_member(members, SIGNATURE_NAME, key.sign(data))


# ---- DICOM from real pixels -------------------------------------------------------------------


def cxr_test_images(n: int = 4) -> np.ndarray:
    return np.load(CXR)["test_images"][:n]


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attrs) -> Path:
    """A Part 10 DICOM file holding `pixels` (uint8/uint16/int16; 2-D, (frames,H,W) or (H,W,3))."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.Modality = "TEST", attrs.pop("Modality", "CR")
    bits = attrs.pop("bits_stored", 8 * pixels.dtype.itemsize)
    ds.set_pixel_data(pixels, photometric, bits)
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return path


DICOM_VENDORS = ("GE", "Siemens", "Philips")


def dicom_tree(src: Path, root: Path) -> int:
    """Each image of the class-folder tree `src` as an 8-bit MONOCHROME2 DICOM of the grayscale
    pixels it decodes to (same relative path + .dcm: "1 no.jpg" and "1 no.jpeg" both exist),
    with Manufacturer, PatientSex and PatientAge set per image as a PACS export carries them."""
    from PIL import Image

    from edgemed.data.folder import list_class_files

    files = list_class_files(src)[1]
    for i, (f, _) in enumerate(files):
        dst = root / f"{f.relative_to(src)}.dcm"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            pixels = np.asarray(im.convert("L"))
        write_dicom(dst, pixels, Manufacturer=DICOM_VENDORS[i % 3], PatientSex="FM"[i % 2],
                    PatientAge=f"{20 + (i * 7) % 60:03d}Y", Modality="MR")  # fmt: skip
    return len(files)
