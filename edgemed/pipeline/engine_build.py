"""`edgemed build-engine`: TensorRT-ready artifact -> engine artifact, built and checked on the device.

Input checks come first (artifact, precision, DLA, output path), then TensorRT/GPU availability,
then the build (timing cache read and updated), then the engine runs the artifact's shipped
validation images and its drift against the FP32 reference logits is checked against the budget.
The engine directory is itself an artifact (runtime tensorrt, model file model.engine) whose
manifest records the GPU, compute capability and TensorRT version it is tied to.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgemed.artifact import Artifact, load_artifact, write_manifest
from edgemed.backends import run_batches
from edgemed.backends.tensorrt import TensorRTBackend
from edgemed.backends.tensorrt.device import (
    check_dla_request,
    device_identity,
    tensorrt_unavailable,
)
from edgemed.backends.tensorrt.engine import EnginePlan, TensorRTEngineRunner, engine_from_onnx
from edgemed.backends.tensorrt.precision import build_path, check_engine_precision, inspect_engine
from edgemed.backends.tensorrt.profile import allow_tensorrt
from edgemed.errors import DriftError, InputError, UnavailableError
from edgemed.evaluation.drift import drift_from_logits
from edgemed.evaluation.limits import EXPORT_DEFAULTS, limits_from, verdict
from edgemed.fileio import (
    refuse_existing,
    sha256_file,
    staged_dir,
    write_bytes_atomic,
    write_json_atomic,
)
from edgemed.harness.gpu_memory import gpu_memory_sampler
from edgemed.onnx_export import load_onnx
from edgemed.profiles import Profile
from edgemed.progress import Progress
from edgemed.provenance import provenance

ENGINE_FILE = "model.engine"
LAYERS_FILE = "engine-layers.json"  # the engine inspector's JSON (ProfilingVerbosity.DETAILED)
DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class BuildEngineRequest:
    """What `edgemed build-engine` was asked to do."""

    artifact: Path
    out: Path | None = None
    precision: str | None = None
    workspace_mb: int | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    # metric key -> limit given (`--max-auc-drop` ...); the export defaults hold for the others
    limits_given: tuple[tuple[str, float], ...] = ()
    force: bool = False

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def profile_from_manifest(d: dict) -> Profile:
    """The target profile recorded in an artifact manifest."""
    d = dict(d)
    d["precisions"] = tuple(d.get("precisions") or ())
    return Profile(**d)


def tensorrt_artifact(path: Path) -> Artifact:
    """Load a TensorRT-ready artifact (ONNX for TensorRT, not already an engine)."""
    art = load_artifact(path)
    if art.runtime != TensorRTBackend.name:
        raise InputError(
            f"{path} is a {art.runtime} artifact; export one for TensorRT with "
            "`edgemed export --target tensorrt` (or a TensorRT profile such as jetson-orin-nano)"
        )
    if art.manifest.get("engine"):
        raise InputError(f"{path} already holds an engine; pass the artifact it was built from")
    if not art.manifest.get("reference"):
        raise InputError(
            f"{path} has no FP32 reference outputs to re-check the engine with; re-export it with --data"
        )
    return art


def engine_precision(art: Artifact, profile: Profile, asked: str | None) -> str:
    """The artifact's precision: an engine is built, and checked, in what the artifact says."""
    precision = asked or art.precision
    profile.allow(precision)
    if precision == art.precision:
        return precision
    if art.precision == "int8":
        raise InputError(
            f"{art.path} holds an INT8 Q/DQ ONNX; build --precision int8, or build {precision} "
            f"from an artifact exported with --precision {precision}"
        )
    if precision == "int8":
        raise InputError(
            "INT8 engines are built from the calibrated Q/DQ ONNX: export with --precision int8 "
            "--calib ... and build that artifact"
        )
    raise InputError(
        f"{art.path} is a {art.precision} artifact; a {precision} engine is built from an artifact "
        f"exported with --precision {precision} (its drift was checked at that precision)"
    )


def engine_plan(req: BuildEngineRequest, art: Artifact, profile: Profile, precision: str):
    """Resolve flags over profile settings (flags win; each is recorded in the manifest)."""

    workspace = req.workspace_mb if req.workspace_mb is not None else profile.workspace_mb
    dla = req.dla_core if req.dla_core is not None else profile.dla_core
    if workspace is not None and workspace < 1:
        raise InputError(f"--workspace-mb must be >= 1, got {workspace}")
    if dla is not None and dla < 0:
        raise InputError(f"--dla-core must be >= 0, got {dla}")
    if req.max_batch < 1:
        raise InputError(f"--max-batch must be >= 1, got {req.max_batch}")
    shape = art.contract.input_shape(1)[1:]
    return EnginePlan(precision, _input_name(art.model_file), shape, req.max_batch, workspace, dla)


def _input_name(onnx_path: Path) -> str:

    graph = load_onnx(onnx_path).graph
    inits = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in inits)


def default_out(req: BuildEngineRequest, precision: str) -> Path:
    return req.out or Path(f"{req.artifact}-engine-{precision}")


def default_timing_cache(here) -> Path:
    """One cache per GPU and TensorRT version, under $EDGEMED_CACHE or ~/.cache/edgemed."""
    root = Path(os.environ.get("EDGEMED_CACHE") or Path.home() / ".cache" / "edgemed")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", here.gpu_name).strip("-").lower()
    return (
        root
        / TensorRTBackend.name
        / f"timing-{slug}-cc{here.compute_capability}-trt{here.tensorrt}.cache"
    )


def check_target_gpu(profile: Profile, here) -> None:
    """An artifact exported for a device profile is built on that device's GPU architecture."""
    if not profile.gpu_arch:
        return
    arch = "sm_" + here.compute_capability.replace(".", "")
    if arch != profile.gpu_arch:
        raise InputError(
            f"this artifact targets {profile.name} ({profile.gpu_arch}) but this GPU is "
            f"{here.gpu_name} ({arch}); build the engine on the target, or export with "
            "--target tensorrt for any GPU"
        )


def engine_limits(req: BuildEngineRequest):
    """The drift limits the engine is held to: those given, the export defaults for the rest."""

    return limits_from(dict(req.limits_given), EXPORT_DEFAULTS)


def build_engine(req: BuildEngineRequest) -> dict:
    """Build, check and write one engine artifact; returns its manifest."""

    engine_limits(req)  # a bad limit is refused before any work
    art = tensorrt_artifact(req.artifact)
    profile = profile_from_manifest(art.manifest["profile"])
    precision = engine_precision(art, profile, req.precision)
    plan = engine_plan(req, art, profile, precision)
    out = default_out(req, precision)
    refuse_existing(out, req.force)
    if msg := tensorrt_unavailable():
        raise UnavailableError(msg)
    here = device_identity()
    check_target_gpu(profile, here)
    check_dla_request(plan.dla_core, here, precision)
    allow_tensorrt(profile, here.tensorrt)
    path = build_path(art.manifest, precision, here.tensorrt)
    cache = req.timing_cache or (default_timing_cache(here) if profile.timing_cache else None)
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
    plan = replace(plan, timing_cache=Path(cache) if cache else None)
    return _build_and_write(req, art, profile, plan, path, here, out)


def _build_and_write(req, art, profile, plan, path, here, out: Path) -> dict:

    bar = Progress(3, "build-engine")
    bar.note(f"building {plan.precision} engine on {here.gpu_name} (TensorRT {here.tensorrt}, "
             f"{path.how})")  # fmt: skip
    t0 = time.perf_counter()
    engine = engine_from_onnx(art.path / path.onnx_file, plan, path)
    build_s = time.perf_counter() - t0
    layers = inspect_engine(engine, plan.input_name, plan.sample_shape, plan.dla_core)
    checked = check_engine_precision(layers, plan.precision, _fp32_nodes(art))
    bar.advance(1)
    bar.note("running the shipped validation images")
    drift, memory = _device_drift(engine, plan, art, req)
    bar.advance(1)
    facts = {"build_s": build_s, "path": path, "layers": checked}
    with staged_dir(out, req.force) as tmp:
        write_bytes_atomic(tmp / ENGINE_FILE, engine)
        write_json_atomic(tmp / LAYERS_FILE, layers)
        for key in ("inputs", "labels", "logits"):
            shutil.copyfile(
                art.path / art.manifest["reference"][key], tmp / art.manifest["reference"][key]
            )
        manifest = _engine_manifest(req, art, profile, plan, here, facts, drift, memory)
        written = write_manifest(tmp, manifest)
    bar.advance(1)
    bar.close()
    return written


def _fp32_nodes(art: Artifact) -> tuple[str, ...]:
    """The nodes the FP16 export kept in FP32 (an FP16 engine must not run them in FP16)."""
    return tuple(((art.manifest.get("backend") or {}).get("fp16") or {}).get("fp32_nodes") or ())


def _device_drift(engine: bytes, plan, art: Artifact, req: BuildEngineRequest):
    """Run the engine on the artifact's reference images; drift vs FP32 and GPU memory peak."""

    ref = art.manifest["reference"]
    images = np.load(art.path / ref["inputs"])
    labels = np.load(art.path / ref["labels"])
    logits = np.load(art.path / ref["logits"])
    memory = None
    with (
        _memory_sampler() as sampler,
        TensorRTEngineRunner(engine, plan.input_name, plan.max_batch, plan.dla_core) as runner,
    ):
        cand = run_batches(runner, art.contract, images)
    if sampler is not None:
        memory = sampler.result().to_dict()
    drift = drift_from_logits(art.contract, logits, cand, labels)
    limits = engine_limits(req)
    failed = verdict(limits, drift).failed
    if failed:
        raise DriftError(
            f"the {plan.precision} engine drifted beyond the budget on {drift.n} reference images: "
            + "; ".join(c.detail for c in failed)
            + "; build another precision or relax the limit named",
            drift.to_dict(),
        )
    return drift, memory


class _NoSampler:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _memory_sampler():
    """tegrastats on Jetson, NVML elsewhere; none (memory not recorded) when neither is there."""

    try:
        return gpu_memory_sampler(pid=os.getpid())
    except UnavailableError:
        return _NoSampler()


def _engine_manifest(req, art, profile, plan, here, facts: dict, drift, memory) -> dict:

    path = facts["path"]
    onnx_sha = sha256_file(art.path / path.onnx_file)
    return {
        "runtime": TensorRTBackend.name,
        "runtime_package": TensorRTBackend.package,
        "target": art.manifest.get("target"),
        "profile": profile.to_dict(),
        "precision": plan.precision,
        "model_file": ENGINE_FILE,
        "contract": art.contract.to_dict(),
        "source": art.manifest.get("source"),
        "engine": {
            **here.to_dict(),
            **plan.to_dict(),
            "build_seconds": round(facts["build_s"], 3),
            "built_from": {
                "artifact": str(art.path),
                "onnx_file": path.onnx_file,
                "onnx_sha256": onnx_sha,
            },
            "build_path": {"tensorrt_major": here.trt_major, **path.to_dict()},
            # read back from the engine inspector and checked against the artifact's precision
            "layer_precisions": {**facts["layers"], "inspector_json": LAYERS_FILE},
        },
        "reference": art.manifest["reference"],
        "drift": {**drift.to_dict(), "simulated": None, "measured_on": here.gpu_name},
        "memory": memory,
        "provenance": provenance(
            inputs={"onnx": onnx_sha, "artifact_manifest": sha256_file(art.path / "manifest.json")},
            config=req.to_dict(),
        ),
    }
