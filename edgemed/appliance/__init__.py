"""The appliance side: verify a signed bundle, then classify images with it (DICOM in, result out).

    from edgemed.appliance import load
    with load("cxr.bundle", "keys/edgemed.pub") as predictor:
        result = predictor.predict("study.dcm")   # {"probabilities": {...}, "decision": ...}

Needs numpy, the bundle's one runtime, cryptography, Pillow and pydicom - never torch. `load`
verifies everything (`edgemed.appliance.verify`) before a single byte of the model is used, extracts
into a private temp directory (mode 0700, removed on close) and opens the runner through the
backend registry. Preprocessing comes only from the bundle's contract.json.
"""

from __future__ import annotations

import json
import shutil
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgemed.appliance.images import InputSpec, read_input
from edgemed.appliance.tarstream import Limits
from edgemed.appliance.verify import VerifiedBundle, verify_bundle
from edgemed.artifact import load_artifact
from edgemed.backends import open_runner
from edgemed.bundle import CONTRACT_NAME, MODEL_DIR
from edgemed.contract import Contract
from edgemed.domain import POLICIES
from edgemed.domain.guard import POLICY_KEY, UNKNOWN, artifact_guard, infer_features
from edgemed.errors import InputError
from edgemed.evaluation.sanity import check_outputs
from edgemed.fileio import private_tempdir
from edgemed.provenance import package_version

__all__ = ["Limits", "Predictor", "load", "verify_bundle"]
WORKDIR_PREFIX = "edgemed-appliance-"


def load(
    bundle: str | Path,
    pubkey: str | Path,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
    limits: Limits | None = None,
) -> Predictor:
    """Verify `bundle` with `pubkey`, extract it privately and return a ready Predictor.

    The private dir is TMPDIR/edgemed-appliance-PID-XXXX; those left by killed processes are
    removed here, and this one on close, on any error and at interpreter exit."""

    workdir = private_tempdir(WORKDIR_PREFIX)
    try:
        verified = verify_bundle(bundle, pubkey, extract_to=workdir, echo=echo, limits=limits)
        return Predictor(verified, workdir, threads)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


class Predictor:
    """A verified bundle with its runner activated: `predict(path) -> dict`."""

    def __init__(self, verified: VerifiedBundle, workdir: Path, threads: int | None = None) -> None:

        self.bundle = verified
        self.contract = Contract.from_json((workdir / CONTRACT_NAME).read_text())
        artifact = load_artifact(workdir / MODEL_DIR, verify=True)
        if artifact.contract != self.contract:
            raise InputError(
                f"bundle {verified.path}: contract.json differs from the model's own contract; "
                "rebuild the bundle with `edgemed bundle`"
            )
        self.spec = InputSpec.from_manifest(self.contract, verified.manifest)
        self.runtime = artifact.runtime
        self.precision = artifact.precision
        self.runtime_version = package_version(verified.manifest["runtime"]["package"])
        self.runner = open_runner(artifact, threads)
        self.runner.activate()
        self.guard, self.domain_policy = _domain_guard(artifact, self.runner, verified.manifest)
        _import_decoders()
        self._finalizer = weakref.finalize(self, _release, self.runner, workdir)

    def prepare(self, path: str | Path) -> np.ndarray:
        """Read and check one input: uint8 (H, W, C) at the contract size."""
        return read_input(path, self.spec)

    def predict(self, path: str | Path) -> dict:
        """Classify one image file (PNG/JPEG/DICOM); latency covers decode, preprocessing and run."""
        t0 = time.perf_counter()
        image = self.prepare(path)
        return self.predict_image(image, str(path), t0)

    def predict_image(self, image: np.ndarray, name: str = "", t0: float | None = None) -> dict:
        """Classify an already prepared uint8 (H, W, C) image."""
        t0 = time.perf_counter() if t0 is None else t0

        t1 = time.perf_counter()
        logits, feats = infer_features(self.runner, self.contract.normalize(image[None]))
        logits = np.asarray(logits, np.float32)
        domain = self.guard.verdicts(image[None], feats)[0] if self.guard else dict(UNKNOWN)
        done = time.perf_counter()
        refused = domain["domain"] == "out" and self.domain_policy == "refuse"
        return {
            "image": name,
            "status": "refused" if refused else "ok",
            **({"reason": "outside the validated domain"} if refused else {}),
            **({} if refused else self.decide(logits.reshape(1, -1))),
            **domain,
            "domain_policy": self.domain_policy,
            "bundle_id": self.bundle.bundle_id,
            "bundle_sha256": self.bundle.sha256,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "precision": self.precision,
            "gate": (self.bundle.manifest.get("gate") or {}).get("decision"),
            "latency_ms": round((done - t0) * 1000.0, 3),
            "inference_ms": round((done - t1) * 1000.0, 3),
        }

    def decide(self, logits: np.ndarray) -> dict:
        """Probabilities per class name and the decision at the contract's threshold."""

        c = self.contract
        # Never a decision from NaN/Inf or from the wrong number of outputs (one line, non-zero).
        p = c.probabilities(check_outputs(c, logits, "the bundle's model"))[0]
        if c.task == "binary":
            probs = {c.class_names[0]: float(1.0 - p[0]), c.class_names[1]: float(p[0])}
            positive = bool(p[0] >= c.threshold)
            decision: object = c.class_names[1] if positive else c.class_names[0]
            return {
                "probabilities": probs,
                "decision": decision,
                "positive": positive,
                "threshold": c.threshold,
            }
        if c.task == "multiclass":
            probs = {name: float(v) for name, v in zip(c.class_names, p, strict=True)}
            decision = c.class_names[int(np.argmax(p))]
            return {"probabilities": probs, "decision": decision, "threshold": c.threshold}
        cols = c.reported_index  # export --labels: only the labels this artifact reports
        names, p, t = c.reported_names, p[cols], c.thresholds[cols]
        probs = {name: float(v) for name, v in zip(names, p, strict=True)}
        decision = [n for n, v, th in zip(names, p, t, strict=True) if v >= th]
        threshold = [float(v) for v in t] if isinstance(c.threshold, tuple) else c.threshold
        return {"probabilities": probs, "decision": decision, "threshold": threshold}

    def close(self) -> None:
        """Free the runner and delete the extracted files."""
        self._finalizer()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _domain_guard(artifact, runner, manifest: dict):
    """The bundle's domain guard (None for bundles without a reference) and its signed policy."""

    policy = manifest.get(POLICY_KEY, "flag")  # bundles made before the guard: flag (unknown)
    if policy not in POLICIES:
        raise InputError(f"bundle domain policy {policy!r} is not one of {', '.join(POLICIES)}")
    return artifact_guard(artifact, runner), policy


def _import_decoders() -> None:
    """Import the image decoders at load, so per-image latency is not charged the one-time import."""
    import PIL.Image  # noqa: F401
    import PIL.PngImagePlugin  # noqa: F401
    import pydicom  # noqa: F401
    import pydicom.pixels  # noqa: F401


def _release(runner, workdir: Path) -> None:
    try:
        runner.deactivate()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def result_line(result: dict) -> str:
    """One JSON object per line (what `edgemed predict` prints)."""
    return json.dumps(result, sort_keys=False)
