"""A runtime edgemed does not ship, written as a new runtime would be: ONNX Runtime with every
graph optimization off (`ORT_DISABLE_ALL`: the graph runs node by node as exported, a real and
different execution of the reference ONNX). `tests/backends/test_new_runtime.py` registers it in
a temporary registry to show that export, bench, sweep and profiles take a new runtime from one
registration alone."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from edgemed.backends import Backend, Converted, ConvertRequest, Runner
from edgemed.errors import InputError
from edgemed.runtimes import Registration

NAME = "ort-plain"
REGISTRATION = Registration(
    "tests.backends.plain_runtime:PlainOrtBackend",
    ("onnxruntime",),
    "ONNX Runtime without graph optimizations",
    frozenset({"fp32"}),
    devices=frozenset({"cpu"}),
)


class PlainOrtRunner(Runner):
    def __init__(self, path: Path, threads: int | None) -> None:
        self.path, self.threads = Path(path), threads

    def activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
        t0 = time.perf_counter()
        self._session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"]
        )
        self.load_seconds = time.perf_counter() - t0
        self._input = self._session.get_inputs()[0].name
        self._info = {"graph_optimization": "disabled", "threads": self.threads}

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: x.astype(np.float32)})[0]

    def deactivate(self) -> None:
        self._session = None


class PlainOrtBackend(Backend):
    name = NAME
    package = "onnxruntime"

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed: pip install onnxruntime"
        return None

    def convert(self, req: ConvertRequest, out: Path) -> Converted:
        if req.options:
            raise InputError(f"target {NAME} takes no options")
        shutil.copyfile(req.onnx_path, Path(out) / "model.onnx")
        return Converted(("model.onnx",), "model.onnx", req.contract, {"mode": "fp32"})

    def runner(self, model_path: Path, info: dict, threads: int | None = None) -> Runner:
        return PlainOrtRunner(model_path, threads)
