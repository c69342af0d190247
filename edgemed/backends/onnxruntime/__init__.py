"""ONNX Runtime backend on the CPU execution provider (the one provider edgemed runs and tests).

FP32 copies the reference ONNX; FP16 converts with onnxconverter-common (FP32 inputs/outputs);
INT8 is static QDQ calibrated on the user's images (MinMax by default: measured best here) or
dynamic. The quantization itself lives in `onnxruntime.quant`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgemed.backends import Backend, Converted, ConvertRequest, Runner
from edgemed.backends.fp16 import FP16_MAX, fp16_from_onnx, overflowing_nodes, refuse_nonfinite
from edgemed.backends.onnxruntime import quant as oq
from edgemed.backends.quant import (
    QuantSettings,
    calibration_info,
    check_node_names,
    parse_node_list,
    quant_settings,
    write_calibration_manifest,
)
from edgemed.errors import DriftError, InputError
from edgemed.feature_output import FEATURE_NODE
from edgemed.fileio import sha256_file
from edgemed.provenance import package_version

MODEL_FILE = "model.onnx"
# Backend-specific --option keys and the precisions they apply to.
EXTRA_OPTIONS = {
    "activation_type": ("int8",),
    "weight_type": ("int8",),
    "calib_bins": ("int8",),
    "calib_percentile": ("int8",),
}


class OnnxRuntimeRunner(Runner):
    """An InferenceSession with explicit thread counts and full graph optimization."""

    def __init__(
        self,
        model_path: Path,
        threads: int | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        optimization: str = "ORT_ENABLE_ALL",
    ) -> None:
        self.model_path, self.threads, self.providers = Path(model_path), threads, providers
        self.optimization = optimization
        self.session = None

    def activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, self.optimization)
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), opts, providers=list(self.providers)
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise _load_error(self.model_path, exc) from None
        self.load_seconds = time.perf_counter() - t0
        self.input_name = self.session.get_inputs()[0].name
        dim0 = self.session.get_inputs()[0].shape[0]
        self.batch_limit = dim0 if isinstance(dim0, int) else None
        self._info = {
            "providers": self.session.get_providers(),
            "intra_op_threads": self.threads,
            "graph_optimization": self.optimization,
            "onnxruntime_version": ort.__version__,
        }

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def infer_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the feature output (the graph's second output; None without one), one run."""
        outs = self.session.run(None, {self.input_name: x})
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def deactivate(self) -> None:
        self.session = None


def _load_error(path: Path, exc: Exception) -> InputError:
    """Name the op and node ONNX Runtime has no kernel for; else its own first line."""
    unsupported = unsupported_error(path)
    if unsupported:
        return unsupported
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return InputError(f"ONNX Runtime cannot load {path} ({first}); re-export it")


def unsupported_error(path: Path) -> InputError | None:
    """An error naming the first op (and its node) ONNX Runtime has no kernel for, else None."""
    missing = unsupported_nodes(path)
    if not missing:
        return None
    node, op = missing[0]
    more = f" (and {len(missing) - 1} more nodes)" if len(missing) > 1 else ""
    return InputError(
        f"ONNX Runtime cannot run op {op} at node {node!r}{more} of the model; "
        "replace that layer with standard ONNX ops and re-export"
    )


def unsupported_nodes(path: Path) -> list[tuple[str, str]]:
    """(node name, domain::op) for nodes with no CPU kernel in this ONNX Runtime build."""
    import onnx
    import onnxruntime.capi._pybind_state as C

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable file: the session error says it better
        return []
    kernels = {(k.domain or "", k.op_name) for k in C.get_all_opkernel_def()}
    kernels.add(("", "Constant"))  # folded into an initializer at load; it has no kernel entry
    functions = {(f.domain, f.name) for f in model.functions}
    out = []
    for n in model.graph.node:
        key = ("" if n.domain in ("", "ai.onnx") else n.domain, n.op_type)
        if key not in kernels and key not in functions:
            out.append(
                (n.name or "(unnamed)", f"{n.domain}::{n.op_type}" if n.domain else n.op_type)
            )
    return out


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: fp32 copy, fp16 (onnxconverter-common), int8 static QDQ or dynamic."""

    name = "onnx"
    package = "onnxruntime"

    def __init__(self) -> None:
        # Caches for the accuracy-aware fallback, which converts the same model many times.
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._preprocessed = oq.Preprocessed(self._scratch)
        self._ranges: dict[tuple, object] = {}
        self._quantized: dict[tuple, tuple[str, ...]] = {}

    def available(self) -> str | None:
        if package_version("onnxruntime") is None:
            return "ONNX Runtime is not installed; pip install onnxruntime"
        return None

    def settings(self, req: ConvertRequest) -> QuantSettings:
        """The validated quantization settings for `req` (unknown/inapplicable options refused)."""
        self.check_precision(req.precision)
        return quant_settings(
            req,
            self.name,
            methods=oq.METHODS,
            default_method="minmax",
            modes=("static", "dynamic"),
            granularities=oq.GRANULARITIES,
            default_granularity="per-channel",
            extra_keys=EXTRA_OPTIONS,
        )

    def quantizable_nodes(self, req: ConvertRequest) -> tuple[str, ...]:
        """FP16: nodes of the candidate types. INT8: every node ONNX Runtime quantized with
        nothing excluded (read from that graph). Nodes of `exclude_op_types` are left out."""
        s = self.settings(req)
        types = oq.op_types(self._named_graph(req, s))
        nodes = self._candidates(req, s)
        # the domain guard's feature output only names a tensor: keeping it float changes nothing
        return tuple(
            n for n in nodes if types.get(n) not in s.exclude_op_types and n != FEATURE_NODE
        )

    def _candidates(self, req: ConvertRequest, s: QuantSettings) -> tuple[str, ...]:
        if s.precision == "fp16":
            return oq.nodes_of_types(req.onnx_path, oq.FP16_CANDIDATES)
        if s.precision != "int8":
            return ()
        full = replace(s, exclude_nodes=(), exclude_op_types=())
        key = (
            sha256_file(req.onnx_path),
            repr(full),
            getattr(req.calibration, "manifest_sha256", ""),
        )
        if key not in self._quantized:
            target = self._scratch() / f"full-{len(self._quantized)}.onnx"
            if s.mode == "dynamic":
                self._dynamic(req, target, full)
            else:
                self._static(req, target, full)
            self._quantized[key] = oq.quantized_nodes(self._named_graph(req, s), target)
        return self._quantized[key]

    def _named_graph(self, req: ConvertRequest, s: QuantSettings) -> Path:
        """The graph whose node names `exclude_nodes` uses (INT8 quantizes the pre-processed one)."""
        return self._preprocessed(req.onnx_path) if s.precision == "int8" else req.onnx_path

    def _exclusions(self, req: ConvertRequest, s: QuantSettings) -> QuantSettings:
        """Validate `exclude_nodes` / `exclude_op_types` against what ONNX Runtime quantizes in
        this model and expand the op types into node names (`nodes_to_exclude`)."""
        if not (s.exclude_nodes or s.exclude_op_types):
            return s
        nodes, types = self._candidates(req, s), oq.op_types(self._named_graph(req, s))
        check_node_names(s.exclude_nodes, nodes, self.name)
        present = tuple(dict.fromkeys(types[n] for n in nodes))
        check_node_names(s.exclude_op_types, present, self.name, "exclude_op_types")
        by_type = [n for n in nodes if types[n] in s.exclude_op_types]
        return replace(s, exclude_nodes=tuple(dict.fromkeys([*s.exclude_nodes, *by_type])))

    def convert(self, req: ConvertRequest, out: Path) -> Converted:
        s = self.settings(req)
        if err := unsupported_error(req.onnx_path):
            raise err
        s = self._exclusions(req, s)
        target = Path(out) / MODEL_FILE
        if s.precision == "fp32":
            shutil.copyfile(req.onnx_path, target)
            info: dict = {}
        elif s.precision == "fp16":
            info = fp16_from_onnx(req.onnx_path, target, s)
        elif s.mode == "dynamic":
            info = self._dynamic(req, target, s)
        else:
            info = self._static(req, target, s)
        oq.ensure_contract(target, req.contract)
        if s.precision == "fp16":
            self._refuse_overflow(req, target, info)
        files = [MODEL_FILE]
        if cal := write_calibration_manifest(out, req.calibration):
            files.append(cal)
        settings = {k: v for k, v in s.to_dict().items() if k != "exclude_nodes"}
        info = {"format": "onnx", **settings, **info, "excluded_nodes": list(s.exclude_nodes)}
        return Converted(tuple(files), MODEL_FILE, req.contract, info)

    def _refuse_overflow(self, req: ConvertRequest, target: Path, info: dict) -> None:
        """Refuse FP16 nodes whose values leave FP16's range on the validation images (measured
        in FP32: ONNX Runtime's CPU provider computes many FP16 ops in FP32 and would hide it),
        naming them; then refuse NaN/Inf outputs."""
        if req.validation is None:
            return
        blocked = {*parse_node_list(req.options.get("exclude_nodes")),
                   *(k["node"] for k in info["kept_fp32"])}  # fmt: skip
        found = overflowing_nodes(req.onnx_path, req.contract, req.validation.images)
        nodes = [n for n in found if n not in blocked]
        if nodes:
            floatable = [n for n in nodes if n in set(self.quantizable_nodes(req))]
            fix = f"keep them in float with --option exclude_nodes={','.join(floatable)}, or "
            raise DriftError(
                f"ONNX Runtime fp16: values at {len(nodes)} FP16 nodes ({', '.join(nodes[:3])}"
                f"{' ...' if len(nodes) > 3 else ''}) exceed FP16's range (+-{FP16_MAX:g}) on the "
                f"validation images; {fix if floatable else ''}export --precision fp32",
                {"overflowing_nodes": nodes},
            )
        refuse_nonfinite(OnnxRuntimeRunner(target), req.contract, req.validation,
                         "ONNX Runtime fp16", "export --precision fp32")  # fmt: skip

    def _static(self, req: ConvertRequest, target: Path, s: QuantSettings) -> dict:
        if req.calibration is None:
            raise InputError(
                "static INT8 needs calibration images: pass --calib RECIPE.toml or --calib DATA_PATH"
            )
        pre = self._preprocessed(req.onnx_path)
        options = oq.calib_options(s)
        key = (
            str(pre),
            req.calibration.manifest_sha256,
            s.calib_method,
            repr(sorted(options.items())),
        )
        if key not in self._ranges:
            self._ranges[key] = oq.ranges_from_calibration(
                pre, req.calibration, req.contract, s.calib_method, options
            )
        info = oq.qdq_from_onnx(pre, target, self._ranges[key], s)
        return {
            **info,
            "calib_options": options,
            "preprocess": "quant_pre_process(skip_symbolic_shape=True)",
            "calibration": calibration_info(req.calibration),
        }

    def _dynamic(self, req: ConvertRequest, target: Path, s: QuantSettings) -> dict:
        if req.calibration is not None:
            raise InputError(
                "dynamic INT8 uses no calibration images; drop --calib or use --quant-mode static"
            )
        info = oq.dynamic_int8_from_onnx(self._preprocessed(req.onnx_path), target, s)
        return {**info, "preprocess": "quant_pre_process(skip_symbolic_shape=True)"}

    def _scratch(self) -> Path:
        self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="edgemed-ort-")
        return Path(self._tmp.name)

    def runner(self, model_path: Path, info: dict, threads: int | None = None) -> Runner:
        return OnnxRuntimeRunner(Path(model_path), threads)
