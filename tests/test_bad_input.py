"""Table-driven bad input across every command: each case exits non-zero with one line naming the
problem, prints no traceback, changes no file, and leaves no litter (no `.partial`, no temp dir).

Every case runs the real CLI on real files: the trained chest X-ray model, its ONNX artifact, a
real signed bundle and bench report, and hostile or broken files built from them below.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.bundle_support import (
    cxr_bundle_for,
    cxr_report_for,
    keypair,
    read_members,
    regular,
    write_dicom,
    write_members,
    write_png,
)
from tests.conftest import CXR, assert_user_error, run_cli, tree_snapshot

BAD_INPUT, UNAVAILABLE, ENVIRONMENT = 2, 3, 5


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid PNG header that claims width x height, with a tiny (truncated) IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def npz_like(path: Path, edit) -> Path:
    """The real chest X-ray npz with `edit(arrays)` applied."""
    with np.load(CXR) as f:
        arrays = {k: f[k] for k in f.files}
    edit(arrays)
    np.savez(path, **arrays)
    return path


def _nan_images(a):
    im = a["train_images"].astype(np.float32) / 255.0
    im[3, 5, 5] = np.nan
    a["train_images"] = im


def _nan_labels(a):
    lab = a["train_labels"].astype(np.float32)
    lab[7, 0] = np.nan
    a["train_labels"] = lab


def _blank_image(a):
    a["val_images"] = a["val_images"].copy()
    a["val_images"][2] = 0


def _neg_labels(a):
    a["train_labels"] = a["train_labels"].astype(np.int64)
    a["train_labels"][0, 0] = -1


def _labels_n22(a):
    n = len(a["train_labels"])
    a["train_labels"] = np.zeros((n, 2, 2), np.uint8)


def _missing_key(a):
    del a["test_labels"]


def encapsulated_dicom(path: Path, transfer_syntax: str) -> Path:
    """A CR DICOM whose compressed pixel data (in `transfer_syntax`) is garbage."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CR", 64, 64, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not really a JPEG stream" * 3])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def unwritable(root: Path) -> Path:
    """An --out whose parent cannot be written: a 0500 dir (non-root) or /sys (root: EPERM)."""
    if os.geteuid() != 0:
        d = root / "readonly"
        d.mkdir(exist_ok=True)
        d.chmod(0o500)
        return d / "out"
    probe = Path("/sys/edgemed-bad-input-probe")
    try:
        probe.mkdir()
    except OSError:
        return Path("/sys/edgemed-bad-input-out")
    probe.rmdir()
    pytest.skip("no unwritable location available as root here")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, cxr_model, cxr_onnx) -> dict[str, str]:
    """The workspace: every file a case refers to, by name."""
    import torch

    root = tmp_path_factory.mktemp("bad-input")
    priv, pub = keypair(tmp_path_factory)
    bundle = cxr_bundle_for(cxr_onnx, tmp_path_factory)
    report = cxr_report_for(cxr_onnx, tmp_path_factory)
    w: dict[str, Path] = {"root": root, "priv": priv, "pub": pub}
    w["model"] = root / "model"
    shutil.copytree(cxr_model, w["model"])
    w["onnx"] = root / "onnx"
    shutil.copytree(cxr_onnx, w["onnx"])
    w["bundle"] = root / "cxr.bundle"
    shutil.copy(bundle, w["bundle"])
    w["report"] = root / "report"
    shutil.copytree(report, w["report"])
    w["existing"] = root / "existing"
    w["existing"].mkdir()
    (w["existing"] / "keep.txt").write_text("keep me")
    # checkpoints
    data = torch.load(cxr_model / "model.pt", map_location="cpu", weights_only=True)
    evil = dict(data, arch={"name": "subprocess:getoutput", "kwargs": {"cmd": "touch PWNED"}})
    w["evil"] = root / "evil"
    w["evil"].mkdir()
    torch.save(evil, w["evil"] / "model.pt")
    w["corrupt_pt"] = root / "corrupt.pt"
    w["corrupt_pt"].write_bytes(b"PK\x03\x04 not a checkpoint")
    w["plain_pt"] = root / "plain.pt"
    torch.save({"w": torch.zeros(3)}, w["plain_pt"])
    w["corrupt_onnx"] = root / "corrupt.onnx"
    w["corrupt_onnx"].write_bytes(b"\x08\x07garbage")
    contract = json.loads((cxr_model / "card.json").read_text())["contract"]
    w["contract32"] = root / "contract32.json"
    w["contract32"].write_text(json.dumps({**contract, "input_size": [32, 32]}))
    w["contract"] = root / "contract.json"
    w["contract"].write_text(json.dumps(contract))
    # data
    for name, edit in [
        ("nan_images", _nan_images),
        ("nan_labels", _nan_labels),
        ("blank_npz", _blank_image),
        ("neg_labels", _neg_labels),
        ("labels_n22", _labels_n22),
        ("missing_key", _missing_key),
    ]:
        w[name] = npz_like(root / f"{name}.npz", edit)
    w["corrupt_npz"] = root / "corrupt.npz"
    w["corrupt_npz"].write_bytes(b"PK\x03\x04 truncated")
    with np.load(CXR) as f:
        pixels = f["test_images"][0]
    for name, extra in [("one_class", None), ("blank_folder", "blank"), ("bomb_folder", "bomb")]:
        d = root / name
        for cls in ("a",) if extra is None else ("a", "b"):
            (d / cls).mkdir(parents=True)
            for i in range(3):
                write_png(d / cls / f"{i}.png", np.roll(pixels, i))
        if extra == "blank":
            write_png(d / "b" / "blank.png", np.zeros((28, 28), np.uint8))
        if extra == "bomb":
            png_claiming(d / "b" / "bomb.png", 20000, 20000)
    (root / "empty_folder" / "a").mkdir(parents=True)
    w["empty_folder"] = root / "empty_folder"
    for name in ("one_class", "blank_folder", "bomb_folder"):
        w[name] = root / name
    # images
    w["png"] = write_png(root / "ok.png", pixels)
    w["blank_png"] = write_png(root / "blank.png", np.full((28, 28), 17, np.uint8))
    w["bomb_png"] = png_claiming(root / "bomb.png", 20000, 20000)
    w["tiny_png"] = write_png(root / "tiny.png", pixels[:4, :4])
    w["text_png"] = root / "notes.png"
    w["text_png"].write_text("not an image")
    w["blank_dcm"] = write_dicom(root / "blank.dcm", np.zeros((64, 64), np.uint8))
    w["bomb_dcm"] = write_dicom(root / "bomb.dcm", pixels, Rows=20000, Columns=20000)
    w["frames_dcm"] = write_dicom(
        root / "frames.dcm", pixels, NumberOfFrames=4000, Rows=4000, Columns=4000
    )
    w["jpeg_dcm"] = encapsulated_dicom(root / "jpeg.dcm", "1.2.840.10008.1.2.4.50")
    w["htj2k_dcm"] = encapsulated_dicom(root / "htj2k.dcm", "1.2.840.10008.1.2.4.201")
    # bundles and keys
    members = read_members(bundle)
    w["extra_bundle"] = write_members(
        root / "extra.bundle", [*members, regular("model/x.onnx", b"x")]
    )
    w["order_bundle"] = write_members(root / "order.bundle", [*members[2:], *members[:2]])
    raw = bundle.read_bytes()
    w["trunc_bundle"] = root / "trunc.bundle"
    w["trunc_bundle"].write_bytes(raw[: len(raw) // 2])
    w["append_bundle"] = root / "append.bundle"
    w["append_bundle"].write_bytes(raw + b"\0" * 512 + b"MZ payload")
    w["tar_bundle"] = root / "zip.bundle"
    w["tar_bundle"].write_bytes(b"PK\x03\x04 not a tar")
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 1 << 20
    w["pax_bundle"] = root / "pax.bundle"
    with open(w["pax_bundle"], "wb") as f:
        f.write(info.tobuf(tarfile.USTAR_FORMAT))
        f.seek(1 << 20, os.SEEK_CUR)
        f.write(raw)
    w["fifo"] = root / "key.fifo"
    os.mkfifo(w["fifo"])
    w["keysdir"] = root / "keys"
    shutil.copytree(priv.parent, w["keysdir"])
    w["afile"] = root / "afile"
    w["afile"].write_text("x")
    # bench output with a damaged line
    w["bench_bad"] = root / "bench-bad"
    shutil.copytree(report, w["bench_bad"])
    with open(w["bench_bad"] / "results.jsonl", "a") as f:
        f.write(json.dumps({"status": "ok"}) + "\n" + json.dumps({"status": "ok"}) + "\n")
    w["ro"] = unwritable(root)
    return {k: str(v) for k, v in w.items()}


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    code: int = BAD_INPUT


def C(id: str, argv: str, *needles: str, code: int = BAD_INPUT) -> Case:
    return Case(id, tuple(argv.split()), needles, code)


TRAIN = "train --data {cxr} --epochs 1 --out {out}"
EXPORT = "export --model {model} --target onnx --out {out}"
BENCH = "bench {onnx} --data {cxr} --seconds 0.05 --min-runs 3 --out {out}"
PREDICT = "predict {bundle} --pubkey {pub}"
COMPRESS = "compress --model {model} --method prune --amount 0.5 --epochs 1 --out {out}"

CASES = [
    # train: flags
    C("train-threads-neg", TRAIN + " --threads -3", "--threads"),
    C("train-threads-zero", TRAIN + " --threads 0", "--threads"),
    C("train-lr-nan", TRAIN + " --lr nan", "--lr", "finite"),
    C("train-lr-inf", TRAIN + " --lr inf", "--lr"),
    C("train-lr-neg", TRAIN + " --lr -1", "--lr"),
    C("train-lr-zero", TRAIN + " --lr 0", "--lr"),
    C("train-epochs-zero", TRAIN.replace("--epochs 1", "--epochs 0"), "--epochs"),
    C("train-batch-zero", TRAIN + " --batch-size 0", "--batch-size"),
    C("train-patience-zero", TRAIN + " --patience 0", "--patience"),
    C("train-image-size-zero", TRAIN + " --image-size 0", "--image-size"),
    C("train-image-size-neg", TRAIN + " --image-size -5", "--image-size"),
    C("train-width-zero", TRAIN + " --width 0", "--width"),
    C("train-width-nan", TRAIN + " --width nan", "--width"),
    C("train-depth-neg", TRAIN + " --depth -1", "--depth"),
    C("train-model-arg-width-zero", TRAIN + " --model-arg width=0", "width"),
    C("train-model-arg-no-value", TRAIN + " --model-arg justakey", "--model-arg", "KEY=VALUE"),
    C("train-unknown-model", TRAIN + " --model vgg-huge", "unknown model"),
    C("train-factory-missing", TRAIN + " --model no_such_pkg.nets:Net", "cannot import"),
    C("train-channels-2", TRAIN + " --channels 2", "--channels"),
    C("train-max-pixels-zero", TRAIN + " --max-pixels 0", "--max-pixels"),
    C("train-out-exists", TRAIN.replace("{out}", "{existing}"), "already exists", "--force"),
    C("train-out-unwritable", TRAIN.replace("{out}", "{ro}"), "cannot write", code=ENVIRONMENT),
    # train: data
    C("train-data-missing", "train --data {root}/nope.npz --out {out}", "does not exist"),
    C("train-npz-labels-n22", "train --data {labels_n22} --out {out}", "shape (2428, 2, 2)"),
    C("train-npz-nan-images", "train --data {nan_images} --out {out}", "nan"),
    C("train-npz-nan-labels", "train --data {nan_labels} --out {out}", "train_labels", "nan"),
    C("train-npz-neg-labels", "train --data {neg_labels} --out {out}", "negative"),
    C(
        "train-npz-blank-image",
        "train --data {blank_npz} --out {out}",
        "val_images[2]",
        "no content",
    ),
    C("train-npz-missing-key", "train --data {missing_key} --out {out}", "test_labels"),
    C("train-npz-corrupt", "train --data {corrupt_npz} --out {out}", "cannot read"),
    C("train-folder-one-class", "train --data {one_class} --out {out}", "only one class"),
    C("train-folder-empty", "train --data {empty_folder} --out {out}", "holds no images"),
    C("train-folder-blank", "train --data {blank_folder} --out {out}", "blank.png", "no content"),
    C("train-folder-bomb", "train --data {bomb_folder} --out {out}", "bomb.png", "megapixels"),
    # export
    C("export-model-missing", "export --model {root}/nope --target onnx --out {out}", "not found"),
    C("export-evil-factory", EXPORT.replace("{model}", "{evil}"), "subprocess:getoutput"),
    C("export-corrupt-pt", EXPORT.replace("{model}", "{corrupt_pt}"), "corrupt"),
    C("export-plain-state-dict", EXPORT.replace("{model}", "{plain_pt}"), "not an edgemed"),
    C("export-opset-3", EXPORT + " --opset 3", "--opset"),
    C("export-opset-99", EXPORT + " --opset 99", "--opset"),
    C("export-unknown-target", "export --model {model} --target nope --out {out}", "nope"),
    C("export-option-no-value", EXPORT + " --option justakey", "--option", "KEY=VALUE"),
    C("export-parity-tol-nan", EXPORT + " --parity-tol nan", "--parity-tol"),
    C("export-max-auc-drop-neg", EXPORT + " --max-auc-drop -1", "--max-auc-drop"),
    C("export-max-flip-rate-nan", EXPORT + " --max-flip-rate nan", "--max-flip-rate"),
    C("export-calib-count-zero", EXPORT + " --calib-count 0", "--calib-count"),
    C(
        "export-onnx-shape-vs-contract",
        "export --model {onnx}/model.onnx --contract {contract32} --target onnx --out {out}",
        "shape",
        "32x32",
    ),
    C("export-corrupt-onnx", EXPORT.replace("{model}", "{corrupt_onnx}"), "not a valid onnx"),
    C(
        "export-factory-vs-checkpoint",
        "export --model edgemed.models.zoo:CompactCNN --checkpoint {evil}/model.pt "
        "--target onnx --out {out}",
        "subprocess:getoutput",
    ),
    C(
        "export-factory-needs-contract",
        "export --model edgemed.models.zoo:CompactCNN --target onnx --out {out}",
        "--contract",
    ),
    C("export-blank-data", EXPORT + " --data {blank_npz}", "no content"),
    C("export-out-exists", EXPORT.replace("{out}", "{existing}"), "already exists"),
    C("export-out-unwritable", EXPORT.replace("{out}", "{ro}"), "cannot write", code=ENVIRONMENT),
    # demo, build-engine, study
    C("demo-out-exists", "demo --out {existing}", "already exists"),
    C("demo-epochs-zero", "demo --epochs 0 --out {out}", "--epochs"),
    C(
        "build-engine-workspace-zero",
        "build-engine {onnx} --workspace-mb 0 --out {out}",
        "--workspace-mb",
    ),
    C("study-threads-zero", "study --data {cxr} --threads 0 --out {out}", "--threads"),
    # fleet / sweep (Ray)
    C(
        "fleet-join-unknown-target",
        "fleet join --target nosuch --address 127.0.0.1:1",
        "unknown target",
    ),
    C("sweep-plan-missing", "sweep {out}-plan.toml --out {out}", "sweep plan"),
    C("study-epochs-zero", "study --data {cxr} --epochs 0 --out {out}", "--epochs"),
    C("study-image-size-zero", "study --data {cxr} --image-size 0 --out {out}", "--image-size"),
    # keygen, bundle
    C("keygen-out-exists", "keygen --out {keysdir}", "already exist"),
    C("keygen-out-is-file", "keygen --out {afile}", "not a directory"),
    C("keygen-out-unwritable", "keygen --out {ro}", "cannot write", code=ENVIRONMENT),
    C(
        "bundle-report-missing",
        "bundle --model {onnx} --report {root}/nope --key {priv} --out {out}",
        "report",
    ),
    C(
        "bundle-public-key-as-key",
        "bundle --model {onnx} --report {report} --key {pub} --out {out}",
        "not a PEM private key",
    ),
    C(
        "bundle-key-missing",
        "bundle --model {onnx} --report {report} --key {root}/nope.key --out {out}",
        "does not exist",
    ),
    C(
        "bundle-key-fifo",
        "bundle --model {onnx} --report {report} --key {fifo} --out {out}",
        "not a regular file",
    ),
    C(
        "bundle-out-exists",
        "bundle --model {onnx} --report {report} --key {priv} --out {bundle}",
        "already exists",
    ),
    C(
        "bundle-out-unwritable",
        "bundle --model {onnx} --report {report} --key {priv} --out {ro}",
        "cannot write",
        code=ENVIRONMENT,
    ),
    C(
        "bundle-flip-rate-nan",
        "bundle --model {onnx} --report {report} --key {priv} --max-flip-rate nan --out {out}",
        "--max-flip-rate",
    ),
    # verify
    C("verify-missing", "verify {root}/nope.bundle --pubkey {pub}", "does not exist"),
    # serve / audit
    C("serve-no-allowed-aets", "serve {bundle} --pubkey {pub} --spool {out}", "allowed-aets"),
    C(
        "serve-bad-forward",
        "serve {bundle} --pubkey {pub} --spool {out} --allowed-aets A --forward bad-forward",
        "AET@HOST:PORT",
    ),  # fmt: skip
    C(
        "serve-bad-port",
        "serve {bundle} --pubkey {pub} --spool {out} --allowed-aets A --dicom-port 70000",
        "dicom-port",
    ),  # fmt: skip
    C("serve-no-spool", "serve {bundle} --pubkey {pub} --allowed-aets A", "spool"),
    C(
        "serve-missing-bundle",
        "serve {root}/nope.bundle --pubkey {pub} --spool {out} --allowed-aets A",
        "does not exist",
    ),  # fmt: skip
    C(
        "serve-missing-config",
        "serve {bundle} --pubkey {pub} --config {root}/nope.toml",
        "cannot read config",
    ),  # fmt: skip
    C("audit-missing", "audit verify {root}/nope.jsonl", "cannot read audit log"),
    C(
        "monitor-not-a-spool",
        "monitor {root} --out {root}/surveillance",
        "not an edgemed serve spool",
    ),
    C("audit-not-a-log", "audit verify {afile}", "line 1 is not JSON"),
    C("verify-not-tar", "verify {tar_bundle} --pubkey {pub}", "not a complete uncompressed tar"),
    C("verify-truncated", "verify {trunc_bundle} --pubkey {pub}", "truncated"),
    C("verify-appended", "verify {append_bundle} --pubkey {pub}", "appended"),
    C("verify-extra-member", "verify {extra_bundle} --pubkey {pub}", "not in the signed manifest"),
    C("verify-manifest-not-first", "verify {order_bundle} --pubkey {pub}", "bundle-manifest.json"),
    C("verify-pax-bomb", "verify {pax_bundle} --pubkey {pub}", "extended tar header"),
    C("verify-pubkey-fifo", "verify {bundle} --pubkey {fifo}", "not a regular file"),
    C("verify-pubkey-missing", "verify {bundle} --pubkey {root}/nope.pub", "does not exist"),
    C("verify-pubkey-is-private", "verify {bundle} --pubkey {priv}", "not a PEM public key"),
    C("verify-max-members", "verify {bundle} --pubkey {pub} --max-members 3", "--max-members"),
    C(
        "verify-max-bundle-mb-zero",
        "verify {bundle} --pubkey {pub} --max-bundle-mb 0",
        "--max-bundle-mb",
    ),
    # predict
    C("predict-blank-png", PREDICT + " {blank_png}", "blank.png", "no content"),
    C("predict-blank-dicom", PREDICT + " {blank_dcm}", "blank.dcm", "no content"),
    C("predict-bomb-png", PREDICT + " {bomb_png}", "20000x20000", "--max-pixels"),
    C("predict-bomb-dicom", PREDICT + " {bomb_dcm}", "20000x20000", "--max-pixels"),
    C("predict-frames-dicom", PREDICT + " {frames_dcm}", "frames", "--max-pixels"),
    C("predict-max-pixels-small", PREDICT + " --max-pixels 100 {png}", "--max-pixels 784"),
    C("predict-corrupt-jpeg-dicom", PREDICT + " {jpeg_dcm}", "JPEG Baseline", "damaged"),
    C(
        "predict-htj2k-no-decoder",
        PREDICT + " {htj2k_dcm}",
        "High-Throughput",
        "pylibjpeg-openjpeg",
    ),
    C("predict-image-missing", PREDICT + " {root}/nope.png", "does not exist"),
    C("predict-not-an-image", PREDICT + " {text_png}", "cannot read image"),
    C("predict-tiny", PREDICT + " {tiny_png}", "only 4x4"),
    C("predict-threads-zero", PREDICT + " --threads 0 {png}", "--threads"),
    C("predict-extra-member", "predict {extra_bundle} --pubkey {pub} {png}", "signed manifest"),
    C("predict-pubkey-fifo", "predict {bundle} --pubkey {fifo} {png}", "not a regular file"),
    # bench
    C("bench-threads-neg", BENCH + " --threads -3", "--threads"),
    C("bench-batch-zero", BENCH + " --batch 0", "--batch"),
    C("bench-seconds-nan", BENCH + " --seconds nan", "--seconds"),
    C("bench-gate-neg", BENCH + " --max-auc-drop -0.1", "--max-auc-drop"),
    C("bench-data-missing", BENCH.replace("{cxr}", "{root}/nope.npz"), "does not exist"),
    C("bench-data-labels-n22", BENCH.replace("{cxr}", "{labels_n22}"), "labels"),
    C("bench-data-blank", BENCH.replace("{cxr}", "{blank_npz}"), "no content"),
    C("bench-artifact-missing", BENCH.replace("{onnx}", "{root}/nope"), "nope"),
    C("bench-out-exists", BENCH.replace("{out}", "{existing}"), "already exists"),
    C("bench-resume-bad-line", BENCH.replace("{out}", "{bench_bad}") + " --resume", "line", "key"),
    C("bench-out-unwritable", BENCH.replace("{out}", "{ro}"), "cannot write", code=ENVIRONMENT),
    # compress
    C("compress-evil-factory", COMPRESS.replace("{model}", "{evil}"), "subprocess:getoutput"),
    C("compress-amount-nan", COMPRESS.replace("0.5", "nan"), "--amount"),
    C("compress-threads-zero", COMPRESS + " --threads 0", "--threads"),
    C("compress-lr-inf", COMPRESS + " --lr inf", "--lr"),
    C("compress-out-exists", COMPRESS.replace("{out}", "{existing}"), "already exists"),
]


def _litter(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".partial"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws, tmp_path, monkeypatch):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    out = tmp_path / "out"
    names = {**ws, "cxr": str(CXR), "out": str(out)}
    argv = [a.format(**names) for a in case.argv]
    root = Path(ws["root"])
    before = tree_snapshot(root)
    res = run_cli(*argv)
    assert res.code == case.code, res
    assert_user_error(res, *case.needles)
    assert len([ln for ln in res.err.splitlines() if ln.startswith("edgemed: error:")]) == 1
    assert tree_snapshot(root) == before, "a file in the workspace changed"
    assert not out.exists()
    assert _litter(root) == [] and _litter(tmp_path) == []
    assert sorted(p.name for p in tmp.glob("edgemed-*")) == []
    assert not (root / "PWNED").exists() and not Path("PWNED").exists()


def test_there_are_at_least_80_cases_across_every_command():
    from edgemed.cli import COMMANDS

    assert len(CASES) >= 80
    covered = {c.argv[0] for c in CASES}
    assert covered == set(COMMANDS), set(COMMANDS) - covered
