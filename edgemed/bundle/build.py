"""Build a signed bundle: artifact + contract + bench evidence -> one tar with a signed manifest."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgemed import __version__
from edgemed.artifact import MANIFEST as ARTIFACT_MANIFEST
from edgemed.artifact import Artifact, load_artifact
from edgemed.backends import get_backend
from edgemed.bundle import (
    CALIBRATION_NAME,
    CONTRACT_NAME,
    FORMAT,
    MANIFEST_NAME,
    MODEL_DIR,
    REPORT_DIR,
    SIGNATURE_NAME,
)
from edgemed.bundle.gate import REPORT_HTML, RESULTS_NAME, GateDecision, release_gate
from edgemed.domain import POLICIES
from edgemed.domain.evidence import check_limits
from edgemed.domain.guard import POLICY_KEY
from edgemed.domain.reference import check_matches, load_reference
from edgemed.errors import InputError
from edgemed.evaluation.limits import Limits
from edgemed.fileio import publish, read_json, refuse_existing, remove_stale, sha256_bytes, writing
from edgemed.provenance import package_version, runtime_versions
from edgemed.signing import fingerprint, load_private_key

MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")


@dataclass(frozen=True)
class BundleRequest:
    """What `edgemed bundle` was asked to do."""

    model: Path
    report: Path
    key: Path
    out: Path
    limits: Limits
    override_reason: str | None = None
    force: bool = False
    modalities: tuple[str, ...] = ()
    description: str | None = None
    selection: dict | None = None  # the sweep's rule and candidates, when a sweep chose the model
    domain_policy: str = "flag"  # what the appliance does with an image outside the domain
    max_domain_fpr: float | None = None  # limits on the guard's measured evidence (bench --ood)
    min_ood_auroc: float | None = None


def manifest_bytes(manifest: dict) -> bytes:
    """The exact bytes that are signed and stored as bundle-manifest.json."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def build_bundle(req: BundleRequest) -> dict:
    """Gate, collect, sign and write the bundle atomically; returns the signed manifest."""

    out = Path(req.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name such as {out}/model.bundle")
    refuse_existing(out, req.force)
    modalities = check_modalities(req.modalities)
    key = load_private_key(req.key)
    art = load_artifact(req.model, verify=True)
    backend = get_backend(art.runtime)
    domain = domain_block(art, req.domain_policy)  # a mismatched reference: refused first
    gate = release_gate(Path(req.report), art.path, req.limits, req.override_reason)
    files, documents = collect_files(art, Path(req.report))
    manifest = bundle_manifest(art, backend, files, documents, gate, key, modalities, req)
    manifest.update(domain)
    manifest["domain_gate"] = domain_gate(art, Path(req.report), req)
    data = manifest_bytes(manifest)
    write_bundle_tar(out, data, key.sign(data), files, req.force)
    return manifest


def domain_block(art: Artifact, policy: str) -> dict:
    """The signed domain policy and the reference's numbers; a reference that does not match the
    model's files or data is refused here, before anything is signed."""

    if policy not in POLICIES:
        raise InputError(f"--domain-policy {policy!r} is not one of {', '.join(POLICIES)}")
    ref = load_reference(art.path)
    if ref is None:
        return {POLICY_KEY: policy, "domain": None}
    inputs = (art.manifest.get("provenance") or {}).get("inputs") or {}
    check_matches(ref, art.manifest.get("files") or {}, inputs.get("data"))
    keys = ("feature_output", "feature_size", "target_fpr", "thresholds", "val_flag_rate")
    return {POLICY_KEY: policy, "domain": {k: ref.meta.get(k) for k in keys}}


def domain_gate(art: Artifact, report: Path, req: BundleRequest) -> dict | None:
    """The guard's measured evidence, held to --max-domain-fpr / --min-ood-auroc when given."""

    results = read_json(report / RESULTS_NAME, "bench results")
    sha = sha256_bytes((art.path / ARTIFACT_MANIFEST).read_bytes())
    return check_limits(results, sha, req.max_domain_fpr, req.min_ood_auroc)


def check_modalities(modalities: tuple[str, ...]) -> tuple[str, ...]:
    codes = tuple(dict.fromkeys(m.strip().upper() for m in modalities))
    bad = [m for m in codes if not MODALITY.match(m)]
    if bad:
        raise InputError(
            f"--modality {bad[0]!r} is not a DICOM Modality code; use codes like CR, DX, MR, CT, US"
        )
    return codes


def collect_files(art: Artifact, report_dir: Path) -> tuple[dict[str, bytes], dict]:
    """Every bundle file (name -> bytes, read once so hashes and tar agree) and where each
    document lives in the bundle."""
    files: dict[str, bytes] = {}
    for name in sorted([*art.manifest.get("files", {}), ARTIFACT_MANIFEST]):
        files[f"{MODEL_DIR}/{name}"] = (art.path / name).read_bytes()
    files[CONTRACT_NAME] = (
        json.dumps(art.contract.to_dict(), indent=2, sort_keys=True) + "\n"
    ).encode()
    calibration = _calibration_document(art, files)
    files[f"{REPORT_DIR}/{RESULTS_NAME}"] = (report_dir / RESULTS_NAME).read_bytes()
    html = report_dir / REPORT_HTML
    if html.is_file():
        files[f"{REPORT_DIR}/{REPORT_HTML}"] = html.read_bytes()
    card = f"{MODEL_DIR}/card.json"
    documents = {
        "contract": CONTRACT_NAME,
        "artifact_manifest": f"{MODEL_DIR}/{ARTIFACT_MANIFEST}",
        "model_file": f"{MODEL_DIR}/{art.manifest['model_file']}",
        "model_card": card if card in files else None,
        "calibration_manifest": calibration,
        "bench_results": f"{REPORT_DIR}/{RESULTS_NAME}",
        "bench_report_html": f"{REPORT_DIR}/{REPORT_HTML}" if html.is_file() else None,
    }
    return files, documents


def _calibration_document(art: Artifact, files: dict[str, bytes]) -> str | None:
    """The calibration manifest: a calibration file the artifact ships, else the manifest's own
    `calibration` block written out; None for artifacts made without calibration (FP32/FP16)."""
    shipped = sorted(n for n in files if "calib" in n.rsplit("/", 1)[-1].lower())
    if shipped:
        return shipped[0]
    block = art.manifest.get("calibration")
    if isinstance(block, dict):
        files[CALIBRATION_NAME] = (json.dumps(block, indent=2, sort_keys=True) + "\n").encode()
        return CALIBRATION_NAME
    return None


def bundle_manifest(
    art, backend, files, documents, gate: GateDecision, key, modalities, req
) -> dict:

    package = art.manifest.get("runtime_package") or backend.package
    built_with = (art.manifest.get("provenance") or {}).get("runtimes", {}).get(package)
    version = built_with or package_version(package)
    c = art.contract
    return {
        "format": FORMAT,
        "bundle_id": str(uuid.uuid4()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "signer": {"algorithm": "Ed25519", "public_key_sha256": fingerprint(key.public_key())},
        "model": {
            "label": art.label,
            "runtime": art.runtime,
            "precision": art.precision,
            "target": art.manifest.get("target"),
            "model_file": documents["model_file"],
            "artifact_manifest_sha256": sha256_bytes(files[documents["artifact_manifest"]]),
        },
        "runtime": {"name": art.runtime, "package": package, "version": version},
        "class_names": list(c.class_names),
        "task": c.task,
        "threshold": c.threshold,
        "input": {
            "size": list(c.input_size),
            "channels": c.channels,
            "modalities": list(modalities),
            "description": req.description or _describe(art),
        },
        "documents": documents,
        "gate": gate.to_dict(),
        "selection": req.selection,
        "versions": {"edgemed": __version__, "runtimes": runtime_versions()},
        "files": {
            n: {"sha256": sha256_bytes(b), "bytes": len(b)} for n, b in sorted(files.items())
        },
    }


def _describe(art: Artifact) -> str:
    """A short human description of what the model takes, from its card (for error messages)."""
    names = " vs ".join(art.contract.class_names)
    card_path = art.path / "card.json"
    if card_path.is_file():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(card_path.read_text()).get("data") or {}
            if data.get("name"):
                return f"{data['name']}: {names}"
    return names


def write_bundle_tar(
    out: Path, manifest: bytes, signature: bytes, files: dict[str, bytes], force: bool = False
) -> None:
    """Manifest, signature, then files sorted by name; fixed owner, mode and mtime; published
    atomically (without `force`, only if `out` is still free when the bundle is complete)."""
    members = [(MANIFEST_NAME, manifest), (SIGNATURE_NAME, signature), *sorted(files.items())]
    mtime = int(datetime.now(timezone.utc).timestamp())
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out.parent, f".{out.name}.", ".partial")
        fd, tmp = tempfile.mkstemp(
            prefix=f".{out.name}.{os.getpid()}-", suffix=".partial", dir=out.parent
        )
    try:
        with writing(out):
            with os.fdopen(fd, "wb") as f:
                with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name, data in members:
                        tar.addfile(_tarinfo(name, len(data), mtime), io.BytesIO(data))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            publish(Path(tmp), out, force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
