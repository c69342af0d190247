"""TFLite / LiteRT backend: .tflite from the torch module (litert-torch), run by the LiteRT interpreter.

The artifact takes NHWC input (recorded as the contract's layout) at a fixed batch of 1. INT8 takes
an int8 input: the runner quantizes the contract-normalized float input with the input tensor's
scale/zero point, and dequantizes int8 logits where the model has them (`integer_output=true`),
so `infer()` is float in, float out like every runner. Conversion details and why litert-torch
(not onnx2tf) are in `tflite.convert`.

Runtime choice: `ai_edge_litert.interpreter` (LiteRT, works with numpy 2); where only
`tflite_runtime` is installed (Jetson/ARM images) its interpreter runs the same file. Which one
ran is recorded in the runner's `info`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgemed.backends import Backend, Converted, ConvertRequest, Runner
from edgemed.backends.fp16 import refuse_nonfinite
from edgemed.backends.quant import (
    QuantSettings,
    calibration_info,
    check_node_names,
    quant_settings,
    write_calibration_manifest,
)
from edgemed.backends.tflite import convert as lc
from edgemed.errors import InputError, UnavailableError
from edgemed.provenance import package_version

MODEL_FILE = "model.tflite"
LAYOUT = "NHWC"


def load_interpreter_class():
    """(Interpreter class, module name): ai_edge_litert, else tflite_runtime (Jetson/ARM)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        raise UnavailableError(
            "no TFLite interpreter is installed; pip install ai-edge-litert "
            "(or tflite-runtime on Jetson/ARM)"
        ) from None


def output_details(interpreter) -> list[dict]:
    """The outputs in signature order (litert-torch names them output_0, output_1, ...): the
    logits, then the domain guard's features when the model has them."""
    return sorted(interpreter.get_output_details(), key=lambda d: d["name"])


def tensor_io(interpreter) -> dict:
    """Input/output (and feature output) dtype, shape and (scale, zero point) of the .tflite."""
    out = {}
    outs = output_details(interpreter)
    roles = [("input", interpreter.get_input_details()[0]), ("output", outs[0])]
    for role, d in roles + [("features", d) for d in outs[1:2]]:
        scale, zero = d["quantization"]
        out[role] = {
            "dtype": np.dtype(d["dtype"]).name,
            "shape": [int(v) for v in d["shape"]],
            "scale": float(scale),
            "zero_point": int(zero),
        }
    return out


def quantize_input(x: np.ndarray, dtype, scale: float, zero: int) -> np.ndarray:
    """Float -> int8/uint8 with the tensor's affine parameters (round to nearest, saturate)."""
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(scale)) + zero
    return np.clip(q, info.min, info.max).astype(dtype)


class TFLiteRunner(Runner):
    """A LiteRT interpreter with an explicit thread count; float in, float logits out."""

    def __init__(self, model_path: Path, threads: int | None = None) -> None:
        self.model_path, self.threads = Path(model_path), threads
        self.feat = None
        self.interpreter = None

    def activate(self) -> None:
        cls, which = load_interpreter_class()
        t0 = time.perf_counter()
        try:
            it = cls(model_path=str(self.model_path), num_threads=self.threads)
            it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InputError(
                f"LiteRT cannot load {self.model_path} ({first}); re-export it"
            ) from None
        self.load_seconds = time.perf_counter() - t0
        self.interpreter = it
        outs = output_details(it)
        self.inp, self.out = it.get_input_details()[0], outs[0]
        self.feat = outs[1] if len(outs) > 1 else None
        dim0 = int(self.inp.get("shape_signature", self.inp["shape"])[0])
        self.batch_limit = dim0 if dim0 > 0 else None  # litert-torch exports a fixed batch of 1
        self._info = {"interpreter": which, "threads": self.threads, "io": tensor_io(it)}

    def infer(self, x: np.ndarray) -> np.ndarray:
        step = self.batch_limit or len(x)
        return np.concatenate([self._invoke(x[i : i + step]) for i in range(0, len(x), step)])

    def infer_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the feature output (the model's second output; None without one)."""
        if self.feat is None:
            return self.infer(x), None
        step = self.batch_limit or len(x)
        pairs = [self._invoke(x[i : i + step], True) for i in range(0, len(x), step)]
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

    def _invoke(self, x: np.ndarray, features: bool = False):
        inp, it = self.inp, self.interpreter
        if inp["dtype"] != np.float32:
            x = quantize_input(x, inp["dtype"], *inp["quantization"])
        it.set_tensor(inp["index"], np.ascontiguousarray(x))
        it.invoke()
        logits = _dequantized(it, self.out, len(x))
        return (logits, _dequantized(it, self.feat, len(x))) if features else logits

    def deactivate(self) -> None:
        self.interpreter = None


def _dequantized(interpreter, detail: dict, n: int) -> np.ndarray:
    y = interpreter.get_tensor(detail["index"])
    if detail["dtype"] != np.float32:
        scale, zero = detail["quantization"]
        y = (y.astype(np.float32) - zero) * np.float32(scale)
    return y.reshape(n, -1).astype(np.float32)


class TFLiteBackend(Backend):
    """.tflite via litert-torch from the torch module: fp32, fp16 weights, int8 (float logits
    unless `--option integer_output=true`)."""

    name = "tflite"
    package = "ai-edge-litert"

    def available(self) -> str | None:
        if package_version("ai-edge-litert") or package_version("tflite-runtime"):
            return None
        return "no TFLite interpreter is installed; pip install 'edgemed[tflite]'"

    def settings(self, req: ConvertRequest) -> QuantSettings:
        """Validated options: unknown or inapplicable ones are refused, saying what TFLite does."""
        self.check_precision(req.precision)
        s = quant_settings(
            req,
            self.name,
            methods=lc.METHODS,
            default_method="minmax",
            modes=("static",),
            granularities=lc.GRANULARITIES,
            default_granularity="per-channel",
            extra_keys={"integer_output": ("int8",)},
        )
        if s.extra.get("integer_output", False) not in (True, False):
            raise InputError(
                f"--option integer_output={s.extra['integer_output']!r} must be true or false"
            )
        if (s.exclude_nodes or s.exclude_op_types) and s.precision != "int8":
            raise InputError(
                f"TFLite {s.precision} casts every weight; exclude_nodes and exclude_op_types "
                "apply to int8 only"
            )
        return s

    def quantizable_nodes(self, req: ConvertRequest) -> tuple[str, ...]:
        if self.settings(req).precision != "int8" or req.module is None:
            return ()
        return lc.weighted_modules(req.module)

    def convert(self, req: ConvertRequest, out: Path) -> Converted:
        s = self.settings(req)
        self._require_converter(req)
        contract = req.contract.with_layout(LAYOUT)
        target = Path(out) / MODEL_FILE
        if s.precision == "fp32":
            info = lc.tflite_fp32(req.module, contract, target, req.features)
        elif s.precision == "fp16":
            with tempfile.TemporaryDirectory(prefix="edgemed-tflite-") as tmp:
                fp32 = lc.tflite_fp32(req.module, contract, Path(tmp) / "fp32.tflite", req.features)
                info = lc.tflite_fp16(Path(tmp) / "fp32.tflite", target)
                info["feature_output"] = fp32["feature_output"]

            refuse_nonfinite(
                TFLiteRunner(target), contract, req.validation, "TFLite fp16 (float16 weights)",
                "export --precision fp32 or int8",
            )  # fmt: skip
        else:
            info = self._int8(req, contract, s, target)
        files = [MODEL_FILE]
        if cal := write_calibration_manifest(out, req.calibration):
            files.append(cal)
        cls, _ = load_interpreter_class()
        it = cls(model_path=str(target))
        io_facts = tensor_io(it)
        settings = {k: v for k, v in s.to_dict().items() if k != "exclude_nodes"}
        info = {
            "format": "tflite",
            **settings,
            **info,
            "layout": LAYOUT,
            "fixed_batch": io_facts["input"]["shape"][0],
            "int8_input": io_facts["input"]["dtype"] == "int8",
            "int8_output": io_facts["output"]["dtype"] == "int8",
            "io": io_facts,
            "excluded_nodes": info.get("excluded_nodes", list(s.exclude_nodes)),
        }
        return Converted(tuple(files), MODEL_FILE, contract, info)

    def _require_converter(self, req: ConvertRequest) -> None:
        if req.module is None:
            raise InputError(
                "TFLite export needs the torch model (a training dir, .pt checkpoint or "
                "package.module:factory), not only an ONNX file; pass --model accordingly"
            )
        if package_version("litert-torch") is None:
            raise UnavailableError(
                "TFLite export needs litert-torch; pip install 'edgemed[tflite]' torch==2.13.0"
            )

    def _int8(self, req: ConvertRequest, contract, s: QuantSettings, target: Path) -> dict:
        if req.calibration is None:
            raise InputError(
                "INT8 needs calibration images: pass --calib RECIPE.toml or --calib DATA_PATH"
            )
        if s.exclude_nodes:
            check_node_names(s.exclude_nodes, lc.weighted_modules(req.module), self.name)
        s = self._by_type(req, s)
        info = lc.tflite_int8(req.module, contract, req.calibration, s, target, req.features)
        return {
            **info,
            "calibration": calibration_info(req.calibration),
            "excluded_nodes": list(s.exclude_nodes),
        }

    def _by_type(self, req: ConvertRequest, s: QuantSettings) -> QuantSettings:
        """`exclude_op_types` names torch module classes (Linear, LayerNorm, MultiheadAttention,
        ...): every submodule of those classes stays float (its PT2E annotations are dropped)."""
        if not s.exclude_op_types:
            return s
        classes = lc.module_classes(req.module)
        check_node_names(s.exclude_op_types, tuple(classes), self.name, "exclude_op_types")
        by_type = [n for c in s.exclude_op_types for n in classes[c]]
        return replace(s, exclude_nodes=tuple(dict.fromkeys([*s.exclude_nodes, *by_type])))

    def runner(self, model_path: Path, info: dict, threads: int | None = None) -> Runner:
        return TFLiteRunner(Path(model_path), threads)
