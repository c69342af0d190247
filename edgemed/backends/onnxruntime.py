"""ONNX Runtime backend (CPU; CUDA execution provider when asked and present)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from edgemed.backends import Backend, Converted, ConvertRequest, Runner
from edgemed.errors import InputError
from edgemed.provenance import package_version


class OnnxRuntimeRunner(Runner):
    """An InferenceSession with explicit thread counts and full graph optimization."""

    def __init__(
        self,
        model_path: Path,
        threads: int | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        self.model_path, self.threads, self.providers = Path(model_path), threads, providers
        self.session = None

    def activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), opts, providers=list(self.providers)
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            first = str(exc).strip().splitlines()[0][:300]
            raise InputError(
                f"ONNX Runtime cannot load {self.model_path} ({first}); re-export it"
            ) from None
        self.load_seconds = time.perf_counter() - t0
        self.input_name = self.session.get_inputs()[0].name
        dim0 = self.session.get_inputs()[0].shape[0]
        self.batch_limit = dim0 if isinstance(dim0, int) else None

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def deactivate(self) -> None:
        self.session = None


class OnnxRuntimeBackend(Backend):
    name = "onnx"
    package = "onnxruntime"
    precisions = frozenset({"fp32"})

    def available(self) -> str | None:
        if package_version("onnxruntime") is None:
            return "ONNX Runtime is not installed; pip install onnxruntime"
        return None

    def convert(self, req: ConvertRequest, out: Path) -> Converted:
        self.check_precision(req.precision)
        shutil.copyfile(req.onnx_path, out / "model.onnx")
        return Converted(("model.onnx",), "model.onnx", req.contract, {"format": "onnx"})

    def open(self, artifact_dir: Path, manifest: dict, threads: int | None = None) -> Runner:
        return OnnxRuntimeRunner(Path(artifact_dir) / manifest["model_file"], threads)
