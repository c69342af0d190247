"""The export pipeline: model source -> reference ONNX (parity-checked) -> backend artifact.

Each stage is a small function from one value to the next; `run_export` strings them together
inside a staged output directory, so a failure at any stage leaves nothing behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgemed.artifact import write_manifest
from edgemed.backends import (
    Backend,
    Converted,
    ConvertRequest,
    eval_batch,
    get_backend,
    run_batches,
)
from edgemed.backends.onnxruntime import OnnxRuntimeRunner
from edgemed.calibration import CalibrationOptions
from edgemed.contract import Contract
from edgemed.data import model_dataset
from edgemed.domain.fit import add_feature_output, domain_data, export_domain
from edgemed.errors import DriftError, InputError
from edgemed.evaluation.drift import Drift, drift_from_logits
from edgemed.evaluation.sanity import OutputError
from edgemed.fileio import staged_dir, write_json_atomic
from edgemed.models import probe
from edgemed.models.probe import onnx_with_output
from edgemed.models.source import LoadedModel, load_model_source
from edgemed.onnx_export import embed_contract, load_onnx, onnx_from_torch, save_onnx, simplify_onnx
from edgemed.pipeline.budget import BudgetOptions, budget_for
from edgemed.pipeline.calibration import calibration_for_export
from edgemed.pipeline.fallback import convert_within_budget
from edgemed.pipeline.training import predict_logits
from edgemed.profiles import Profile, resolve_target
from edgemed.provenance import provenance
from edgemed.runtimes import RUNTIMES, registration, runtimes_with

MAX_EVAL_IMAGES = 512


@dataclass(frozen=True)
class ExportRequest:
    """Everything `edgemed export` was asked to do (recorded in the manifest as the config)."""

    model: str
    target: str
    out: Path
    precision: str = "fp32"
    force: bool = False
    calib: str | None = None
    data: str | None = None
    checkpoint: str | None = None
    contract: str | None = None
    model_args: dict = field(default_factory=dict)
    opset: int = 17
    simplify: bool = False
    parity_tol: float = 1e-4
    calibration: CalibrationOptions = CalibrationOptions()  # --calib-count, --data-root
    budget: BudgetOptions = BudgetOptions()  # --max-*-drop/-rate, --accuracy-control
    options: dict = field(default_factory=dict)  # the backend's: --calib-method, --option K=V
    output: str | int | None = (
        None  # --output-name/--output-index: the logits of a multi-output model
    )
    labels: tuple[str, ...] | None = None  # --labels: the labels a multi-label artifact reports
    feature_output: str | None = None  # --feature-output NAME|none (default: found)
    domain_fpr: float = 0.01  # --domain-fpr: the guard's false-flag rate on val (0: no guard)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["out"] = str(self.out)
        d["calibration"] = self.calibration.to_dict()
        d["budget"] = self.budget.to_dict()
        return d


@dataclass(frozen=True)
class EvalSet:
    """Real images from the model's own data (validation split) used for parity and drift."""

    images: np.ndarray
    labels: np.ndarray
    ref: dict


def evaluation_set(loaded: LoadedModel, data: str | None, split: str = "val") -> EvalSet | None:
    """Images for parity: `--data` if given, else the data recorded in the model card.

    The card's data hash must still match, so parity is never measured on different data silently.
    """

    c = loaded.contract
    ds = model_dataset(loaded.card, data, c.input_size, c.channels, card_split=False)
    if ds is None:
        return None
    s = ds.split(split)
    idx = np.arange(min(len(s), MAX_EVAL_IMAGES))
    return EvalSet(
        s.images[idx],
        s.labels[idx],
        {"path": ds.path, "split": split, "n": len(idx), "data_hash": ds.data_hash},
    )


def check_onnx_source(loaded: LoadedModel, runtime: str) -> None:
    """A model goes only to runtimes that convert from its kind (`Registration.sources`): an
    .onnx source to those that convert the reference ONNX; say so before any work."""
    if loaded.kind == "onnx" and loaded.kind not in registration(runtime).sources:
        raise InputError(
            f"{registration(runtime).title} export needs the torch model (a training dir, "
            f".pt checkpoint or package.module:factory), not only an ONNX file; an .onnx model "
            f"exports to {', '.join(runtimes_with(sources='onnx'))}"
        )


def require_evaluation_data(loaded: LoadedModel, data: str | None) -> None:
    """An ONNX or factory model has no training data on record: parity and drift need --data."""
    if data or loaded.kind == "torch" and loaded.source.get("kind") != "factory":
        return
    if ((loaded.card or {}).get("data") or {}).get("path"):
        return
    what = "an ONNX model" if loaded.kind == "onnx" else "a package.module:factory model"
    raise InputError(
        f"{what} has no validation data on record, so FP32 parity and INT8 drift cannot be "
        "checked: pass --data DATA (an .npz or a folder of class folders with its images); "
        "edgemed does not skip these checks"
    )


def probe_source(loaded: LoadedModel, precision: str) -> None:
    """One forward pass at batch 2 and 1 before any data is read (see edgemed.models.probe)."""

    if loaded.kind == "torch":
        probe.probe_torch(loaded.module, loaded.contract, f"model {_source_name(loaded)}")
        return

    model = probe.onnx_with_output(load_onnx(loaded.onnx_path), loaded.output, loaded.onnx_path)
    probe.probe_onnx(model, loaded.contract, precision, loaded.onnx_path)


def _source_name(loaded: LoadedModel) -> str:
    arch = loaded.source.get("arch") or {}
    return repr(arch.get("name") or loaded.source.get("path") or "model")


def reference_onnx(loaded: LoadedModel, path: Path, opset: int) -> tuple[Path, Contract]:
    """The FP32 reference ONNX (exported from torch, or the user's ONNX, its chosen output only)
    with the contract embedded; the contract returned records its input and output names."""

    if loaded.kind == "torch":
        contract = loaded.contract.with_io_names("input", "logits")
        return onnx_from_torch(loaded.module, contract, path, opset), contract
    model = onnx_with_output(load_onnx(loaded.onnx_path), loaded.output, loaded.onnx_path)
    inits = {t.name for t in model.graph.initializer}
    first = next(i.name for i in model.graph.input if i.name not in inits)
    contract = loaded.contract.with_io_names(first, model.graph.output[0].name)
    save_onnx(embed_contract(model, contract), path)
    return path, contract


def reference_logits(loaded: LoadedModel, onnx_path: Path, ev: EvalSet) -> np.ndarray:
    """FP32 reference outputs: torch when we have the module, else ONNX Runtime on the input ONNX."""
    if loaded.kind == "torch":
        return predict_logits(loaded.module, loaded.contract, ev.images)

    with OnnxRuntimeRunner(onnx_path) as r:
        return run_batches(r, loaded.contract, ev.images)


def check_parity(
    contract: Contract, ref: np.ndarray, onnx_path: Path, ev: EvalSet, tol: float, source: str
) -> Drift:
    """ONNX Runtime vs the reference: max |delta p| <= tol and no decision flips, else DriftError."""

    with OnnxRuntimeRunner(onnx_path) as r:
        onnx_logits = run_batches(r, contract, ev.images)
    names = (f"the model ({source}, FP32)", "its ONNX export in ONNX Runtime")
    drift = drift_from_logits(contract, ref, onnx_logits, ev.labels, names=names)
    if drift.max_abs_dp > tol or drift.decisive_flips:
        raise DriftError(
            f"ONNX export does not match {source}: max |delta p| {drift.max_abs_dp:.2e} (tolerance "
            f"{tol:.0e}), {drift.decisive_flips} decisive decision flips on {drift.n} images; "
            "check for unsupported ops or pass --parity-tol",
            drift.to_dict(),
        )
    return drift


def candidate_drift(
    backend: Backend, out: Path, conv: Converted, profile: Profile, precision: str, ref, ev: EvalSet
) -> Drift:
    """Run a conversion just written to `out` with its own runtime (the backend's runner for it,
    or its simulation of another device here) and compare to the reference on `ev`."""
    model = Path(out) / conv.model_file
    runner = (
        backend.simulation_runner(model, conv.info)  # e.g. TensorRT Q/DQ run in ONNX Runtime
        if _simulated(backend, profile.device, precision)
        else backend.runner(model, conv.info, profile.threads)
    )
    with runner:
        cand = run_batches(runner, conv.contract, ev.images, eval_batch(conv.info))
    name = f"the {backend.name} {precision} artifact"
    try:
        return drift_from_logits(
            conv.contract, ref, cand, ev.labels, names=("the FP32 reference", name)
        )
    except OutputError as exc:  # the reference passed parity: the conversion broke the model
        raise DriftError(str(exc)) from None


def _simulated(backend, device: str, precision: str) -> bool:
    """A target that is not this CPU, whose runtime can simulate it here at this precision."""
    sim = RUNTIMES[backend.name].simulation
    return device != "cpu" and sim is not None and precision in sim.precisions


def _simulation_name(runtime: str) -> str | None:
    """What ran the drift measured here for another device (None: not simulated)."""
    sim = registration(runtime).simulation
    return sim.by if sim else None


def run_export(req: ExportRequest) -> dict:
    """Export one model to one target and precision; returns the written manifest."""
    profile: Profile = resolve_target(req.target)
    profile.allow(req.precision)
    backend = get_backend(profile.runtime)
    backend.check_precision(req.precision)
    drift_budget = budget_for(req.budget, req.precision)
    loaded = load_model_source(req.model, req.checkpoint, req.model_args, req.contract, req.output)
    loaded = replace(loaded, contract=loaded.contract.with_reported(req.labels))
    check_onnx_source(loaded, backend.name)
    probe_source(loaded, req.precision)
    require_evaluation_data(loaded, req.data)
    ev = evaluation_set(loaded, req.data)
    with staged_dir(req.out, req.force) as tmp:
        work = tmp / ".work"
        work.mkdir()
        onnx_path, contract = reference_onnx(loaded, work / "reference.onnx", req.opset)
        loaded = replace(loaded, contract=contract)
        features = _feature_output(onnx_path, req) if _guarded(profile) else None
        simplified = _maybe_simplify(onnx_path, req.simplify)
        ref = reference_logits(loaded, onnx_path, ev) if ev else None
        against = "torch" if loaded.kind == "torch" else "source ONNX"
        parity = (
            check_parity(loaded.contract, ref, onnx_path, ev, req.parity_tol, against).to_dict()
            | {"against": against}
            if ev
            else None
        )
        calibration = _calibration(req, loaded, backend.fp16_calibration)
        control = drift_budget.limits if drift_budget and drift_budget.accuracy_control else None
        creq = ConvertRequest(
            onnx_path,
            loaded.contract,
            req.precision,
            loaded.module,
            calibration,
            profile,
            req.options,
            ev,
            control,
            features is not None,
        )
        facts = (req, profile, backend, loaded)
        rest = (parity, simplified, ev, calibration)

        def measure(d: Path, c: Converted) -> Drift:  # run an attempt on the validation split
            return candidate_drift(backend, d, c, profile, req.precision, ref, ev)

        runnable = ev is not None and (
            profile.device == "cpu" or _simulated(backend, profile.device, req.precision)
        )
        conv, drift, budget = convert_within_budget(
            backend, creq, drift_budget, tmp, work / "attempts", measure if runnable else None
        )
        shutil.rmtree(work)
        if loaded.card:
            write_json_atomic(tmp / "card.json", loaded.card)
        manifest = _manifest(*facts, conv, *rest)
        if budget:
            manifest["accuracy_control"] = budget
        if drift is None and runnable:
            drift = candidate_drift(backend, tmp, conv, profile, req.precision, ref, ev)
        if drift is not None:
            manifest["drift"] = drift.to_dict() | {"eval_batch": eval_batch(conv.info)}
            if profile.device != "cpu":
                manifest["drift"]["simulated"] = _simulation_name(profile.runtime)
        if ev is not None and profile.device == "cpu" and req.domain_fpr > 0:  # fitted here
            manifest["domain"] = _domain(req, loaded, backend, tmp, conv, profile, features)
        manifest.update(backend.artifact_extras(tmp, manifest, ref, ev))  # e.g. TensorRT
        return write_manifest(tmp, manifest)


def _guarded(profile) -> bool:
    """The artifact exposes the domain guard's feature output: its runtime runs one (registry) and
    the reference can be fitted here (a CPU target)."""
    return profile.device == "cpu" and registration(profile.runtime).feature_output


def _feature_output(onnx_path: Path, req: ExportRequest) -> dict | None:
    """The penultimate features as the reference ONNX's second output (edgemed.domain)."""

    if req.domain_fpr <= 0 and not req.feature_output:
        return None
    return add_feature_output(onnx_path, req.feature_output, f"model {req.model}")


def _domain(req, loaded, backend, tmp: Path, conv: Converted, profile, features) -> dict | None:
    """Fit the domain guard's reference with the converted artifact (edgemed.domain.fit)."""

    data = domain_data(loaded.card, req.data, loaded.contract)
    if data is None:
        return None
    return export_domain(backend, tmp, conv, profile.threads, data, req.domain_fpr, features)


def _maybe_simplify(onnx_path: Path, simplify: bool) -> dict | None:
    if not simplify:
        return None

    return simplify_onnx(onnx_path)


def _calibration(req: ExportRequest, loaded: LoadedModel, fp16_calibration: bool = False):
    """Resolve `--calib` for static INT8 (never silently: INT8 without calibration is an error),
    and for FP16 where the backend measures activation magnitudes (TensorRT)."""

    return calibration_for_export(
        req.calib,
        req.precision,
        loaded.contract,
        loaded.card,
        req.calibration,
        static=req.options.get("quant_mode", "static") == "static",
        fp16_calibration=fp16_calibration,
    )


def _manifest(req, profile, backend, loaded, conv, parity, simplified, ev, calibration) -> dict:
    inputs = {"model": loaded.source.get("sha256", "")}
    if ev:
        inputs["data"] = ev.ref["data_hash"]
    if profile.sha256:
        inputs["target_profile"] = profile.sha256
    cal = getattr(calibration, "manifest_sha256", None)
    if cal:
        inputs["calibration_manifest"] = cal
    return {
        "runtime": backend.name,
        "runtime_package": backend.package,
        "target": profile.name,
        "profile": profile.to_dict(),
        "precision": req.precision,
        "model_file": conv.model_file,
        "contract": conv.contract.to_dict(),
        "source": loaded.source,
        "parity": parity,
        "evaluation": ev.ref if ev else None,
        "simplify": simplified,
        "backend": conv.info,
        "provenance": provenance(inputs=inputs, config=req.to_dict()),
    }
