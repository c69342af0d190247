"""Runtime backends behind one small interface, imported lazily by name.

Adding a runtime = its package here + one `Registration` in `edgemed.runtimes.RUNTIMES` (what it
can do) + one test class subclassing the shared backend test template. Each backend imports its
runtime inside its methods, never at import time.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgemed.contract import Contract
from edgemed.errors import InputError, UnavailableError
from edgemed.runtimes import RUNTIMES, registration

if TYPE_CHECKING:  # types only: torch is imported lazily
    import torch

    from edgemed.artifact import Artifact
    from edgemed.calibration import CalibrationSet
    from edgemed.evaluation.limits import Limits
    from edgemed.profiles import Profile


class ValidationImages(Protocol):
    """The validation split a backend may score: uint8 `images` (N, H, W, C) and `labels`."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class ConvertRequest:
    """What a backend converts: the FP32 reference ONNX (always), the torch module when there is
    one, the contract, the precision, calibration (INT8), the target profile, the backend's
    options (quantization flags and `--option KEY=VALUE`, checked by `quant.quant_settings`), the
    validation images (uint8 `images` + `labels`) that backend-side accuracy control scores, and
    with `--accuracy-control` the drift limits it is held to (NNCF's own search reads them)."""

    onnx_path: Path
    contract: Contract
    precision: str
    module: torch.nn.Module | None = None
    calibration: CalibrationSet | None = None
    profile: Profile | None = None
    options: dict = field(default_factory=dict)
    validation: ValidationImages | None = None
    accuracy_control: Limits | None = None
    features: bool = False  # the domain guard's feature output is wanted (converters from torch)


@dataclass(frozen=True)
class Converted:
    """What a backend wrote: files (relative to the output dir), the main model file, the contract
    as the artifact expects input (e.g. NHWC for TFLite), and backend facts for the manifest."""

    files: tuple[str, ...]
    model_file: str
    contract: Contract
    info: dict = field(default_factory=dict)


class Runner(ABC):
    """A loaded model, Polygraphy-style: activate() loads, infer() runs, deactivate() frees."""

    load_seconds: float = 0.0
    batch_limit: int | None = None  # e.g. 1 for fixed-batch TFLite models
    _info: dict | None = None  # set by activate()

    @property
    def info(self) -> dict:
        """What the runtime actually does once active (execution precision, providers, threads,
        interpreter, ...), recorded with every bench row. Runners set `self._info` in activate()."""
        return dict(self._info or {})

    @abstractmethod
    def activate(self) -> None: ...

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Contract-normalized float32 input in the artifact's layout -> logits (N, outputs)."""

    def deactivate(self) -> None:
        return None

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()


class _RegisteredPrecisions:
    """`Backend.precisions`, on the class and its instances alike: what its registration in
    `edgemed.runtimes.RUNTIMES` declares (none for a class no runtime name registers)."""

    def __get__(self, obj, cls) -> frozenset[str]:
        return RUNTIMES[cls.name].precisions if cls.name in RUNTIMES else frozenset()


class Backend(ABC):
    """One runtime: can it run here, convert the reference ONNX, open a runner on an artifact.

    Quantization options: validate `req.options` with `edgemed.backends.quant.quant_settings`
    (inapplicable options are refused, never ignored) and write the calibration manifest with
    `quant.write_calibration_manifest` (-> `calibration.json`, listed in `Converted.files`).

    Accuracy-aware fallback hook (`edgemed.pipeline.fallback`): a backend that can keep layers in float
    returns their names from `quantizable_nodes(req)` and, in `convert`, keeps every name in
    `req.options["exclude_nodes"]` (a tuple of those names) in float, recording them in
    `Converted.info["excluded_nodes"]`. The default returns () and `--accuracy-control` is refused.
    """

    name: str = ""  # its key in `edgemed.runtimes.RUNTIMES`, where its capabilities are declared
    package: str = ""  # pip distribution that provides the runtime
    fp16_calibration: bool = False  # FP16 needs calibration images too (activation magnitudes)

    @abstractmethod
    def available(self) -> str | None:
        """None when usable here, else one line saying what is missing and how to get it."""

    @abstractmethod
    def convert(self, req: ConvertRequest, out: Path) -> Converted: ...

    @abstractmethod
    def runner(self, model_path: Path, info: dict, threads: int | None = None) -> Runner:
        """A not-yet-activated runner on `model_path`, a file this backend wrote, given the
        backend facts it recorded (`Converted.info`, the manifest's `backend`): accuracy control
        scores each attempt with it before any manifest exists."""

    def open(self, artifact: Artifact, threads: int | None = None) -> Runner:
        """A runner on an artifact, with its profile's thread count unless `threads` is given."""
        threads = threads or (artifact.manifest.get("profile") or {}).get("threads")
        return self.runner(artifact.model_file, artifact.manifest.get("backend") or {}, threads)

    def artifact_extras(self, out: Path, manifest: dict, ref, ev) -> dict:
        """Manifest entries for files the artifact ships beside the model (e.g. reference outputs
        for an on-device re-check), written into `out`; none by default."""
        return {}

    def simulation_runner(self, model_path: Path, info: dict) -> Runner:
        """A runner on this CPU for an artifact meant for another device (the registration's
        `simulation`)."""
        raise UnavailableError(f"{self.name} artifacts for another device cannot run here")

    def quantizable_nodes(self, req: ConvertRequest) -> tuple[str, ...]:
        """Layers `options["exclude_nodes"]` can keep in float at req.precision, in graph order."""
        return ()

    def require(self) -> None:
        msg = self.available()
        if msg:
            raise UnavailableError(msg)

    precisions = _RegisteredPrecisions()

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise InputError(
                f"target {self.name} cannot do precision {precision!r}; it can do "
                f"{', '.join(sorted(self.precisions))}"
            )


def get_backend(name: str) -> Backend:
    """The backend registered under `name` (its module is imported only now, by the dotted name
    its registration gives in the fixed table `edgemed.runtimes.RUNTIMES`)."""
    module_name, _, attr = registration(name).entry.partition(":")
    return getattr(importlib.import_module(module_name), attr)()


def open_runner(artifact: Artifact, threads: int | None = None) -> Runner:
    """A not-yet-activated Runner for the artifact's runtime."""
    return get_backend(artifact.runtime).open(artifact, threads)


# Dynamic INT8 computes activation ranges per call, over the whole batch: its outputs depend on
# the batch (measured: 4 flips at batch 32, 0 one image at a time), so it is scored as the
# appliance runs it, one image per call, and the manifest says so (`drift.eval_batch`).
DYNAMIC_EVAL_BATCH = 1


def eval_batch(info: dict, default: int = 64) -> int:
    """The batch an artifact's accuracy is measured at (export and bench alike), from its backend
    facts (`Converted.info`, the manifest's `backend`)."""
    mode = info.get("mode")
    return DYNAMIC_EVAL_BATCH if mode == "dynamic" else default


def run_batches(
    runner: Runner, contract: Contract, images: np.ndarray, batch: int = 64
) -> np.ndarray:
    """Normalize uint8 images (N, H, W, C) by the contract and collect logits in batches."""
    step = min(batch, runner.batch_limit or batch)
    outs = [
        runner.infer(contract.normalize(images[i : i + step])) for i in range(0, len(images), step)
    ]
    return np.concatenate(outs).reshape(len(images), -1).astype(np.float32)
