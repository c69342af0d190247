"""OpenVINO backend (CPU plugin): IR (.xml + .bin) from the reference ONNX, FP32/FP16/INT8.

FP32 really executes in f32: the IR keeps FP32 weights (`ov.save_model` would compress them to
FP16 unless told not to) and every compile sets INFERENCE_PRECISION_HINT=f32, because on CPUs with
bf16 OpenVINO otherwise runs bf16 silently (measured: 1 flip, max |dp| 0.012 on the chest X-ray
CNN). The hint also travels inside the IR (rt_info `runtime_options`; the CPU plugin does not
apply it by itself, see `embed_runtime_options`); the precision a plain `compile_model(xml)` gives
on the exporting CPU is recorded as `plain_compile_precision` and warned about when it differs. The precision read back from the compiled model is recorded in the manifest
and checked every time a runner loads. FP16 = FP16-compressed weights, executed in f32 unless
`--option inference_precision=bf16|f16` asks otherwise. INT8 = NNCF post-training quantization
(settings and why in `openvino.quant`), accuracy-controlled with `--accuracy-control`.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np

from edgemed.backends import Backend, Converted, ConvertRequest, Runner
from edgemed.backends.fp16 import refuse_nonfinite
from edgemed.backends.openvino import quant as oq
from edgemed.backends.openvino.quant import compile_config
from edgemed.backends.quant import (
    QuantSettings,
    check_node_names,
    quant_settings,
    write_calibration_manifest,
)
from edgemed.errors import InputError, UnavailableError
from edgemed.evaluation.limits import METRICS
from edgemed.fileio import sha256_file
from edgemed.provenance import package_version

MODEL_XML, MODEL_BIN = "model.xml", "model.bin"
HINTS = ("f32", "bf16", "f16")
# OpenVINO-specific --option keys and the precisions they apply to.
EXTRA_OPTIONS = {
    "overflow_fix": ("int8",),
    "bias_correction": ("int8",),
    "inference_precision": ("fp16",),
}


def embed_runtime_options(model, hint: str) -> None:
    """Store the precision the artifact is measured at inside the IR (rt_info `runtime_options`),
    so it travels with model.xml, not only in manifest.json.

    Not enough on its own: OpenVINO 2026.4's CPU plugin applies only the KV-cache and dynamic
    quantization keys of `runtime_options` (intel_cpu Config::applyRtInfo; checked here: a
    DYNAMIC_QUANTIZATION_GROUP_SIZE in rt_info is applied, INFERENCE_PRECISION_HINT and
    INFERENCE_NUM_THREADS are not). A caller outside edgemed reads the hint back and passes it:
    `core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": model.get_rt_info(
    ["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str)})`.
    """
    model.set_rt_info(hint, ["runtime_options", "INFERENCE_PRECISION_HINT"])


def plain_compile_precision(xml: Path) -> str:
    """The precision a plain `compile_model(xml, "CPU")` (no config, as a user would) runs at."""
    import openvino as ov

    return compiled_precision(ov.Core().compile_model(str(xml), "CPU"))


def compiled_precision(compiled) -> str:
    """The inference precision the compiled model really uses (e.g. 'f32', 'bf16')."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


class OpenVINORunner(Runner):
    """A model compiled for the CPU plugin with an explicit precision hint and thread count."""

    def __init__(self, model_path: Path, hint: str = "f32", threads: int | None = None) -> None:
        self.model_path, self.hint, self.threads = Path(model_path), hint, threads
        self.request = None

    def activate(self) -> None:
        import openvino as ov

        t0 = time.perf_counter()
        core = ov.Core()
        try:
            compiled = core.compile_model(
                str(self.model_path), "CPU", compile_config(self.hint, self.threads)
            )
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            raise InputError(
                f"OpenVINO cannot load {self.model_path} ({first}); re-export it"
            ) from None
        self.load_seconds = time.perf_counter() - t0
        got = compiled_precision(compiled)
        if got != self.hint:
            raise UnavailableError(
                f"this CPU runs {got} where the artifact asks for {self.hint}; re-export with "
                "--option inference_precision=f32 (or run it on a CPU with that precision)"
            )
        self._info = {
            "execution_precision": got,
            "threads": compiled.get_property("INFERENCE_NUM_THREADS"),
            "streams": compiled.get_property("NUM_STREAMS"),
            "openvino": ov.__version__,
        }
        dim0 = compiled.input(0).get_partial_shape()[0]
        self.batch_limit = dim0.get_length() if dim0.is_static else None
        self.request = compiled.create_infer_request()

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x}).to_tuple()[0]

    def infer_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the feature output (the IR's second output; None without one), one run."""
        outs = self.request.infer({0: x}).to_tuple()
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def deactivate(self) -> None:
        self.request = None


def ov_model_from_onnx(onnx_path: Path):
    """Read the ONNX into OpenVINO; an op its frontend cannot convert is named, with its node."""
    import openvino as ov

    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpConversionFailure, GeneralFailure: both mean "cannot convert"
        raise conversion_error(str(exc), onnx_path) from None


def conversion_error(text: str, onnx_path: Path) -> InputError:
    """InputError naming the op(s) OpenVINO reported and the ONNX node(s) that use them."""
    ops = []
    for line in text.splitlines():
        if m := re.match(r"\s*-- .*?: (.+)$", line):
            ops += [o.strip() for o in m.group(1).split(",") if o.strip()]
    if not ops:
        last = [ln for ln in text.strip().splitlines() if ln.strip()] or ["unknown error"]
        return InputError(f"OpenVINO cannot convert the model ({last[-1][:300]}); re-export it")
    op = re.sub(r"-\d+$", "", ops[0])
    domain, _, op_type = op.rpartition(".")
    nodes = _nodes_of(onnx_path, op_type, domain)
    where = f" at node {nodes[0]!r}" if nodes else ""
    more = f" (and {len(nodes) - 1} more nodes)" if len(nodes) > 1 else ""
    also = f"; also unsupported: {', '.join(ops[1:])}" if len(ops) > 1 else ""
    return InputError(
        f"OpenVINO cannot convert op {op_type}{where}{more}{also}; replace that layer with "
        "ops OpenVINO's ONNX frontend supports and re-export"
    )


def _nodes_of(onnx_path: Path, op_type: str, domain: str) -> list[str]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [
        n.name or "(unnamed)"
        for n in graph.node
        if n.op_type == op_type and (not domain or n.domain == domain)
    ]


class OpenVINOBackend(Backend):
    """OpenVINO IR for the CPU plugin: fp32 (f32 weights and execution), fp16 weights, NNCF int8."""

    name = "openvino"
    package = "openvino"

    def __init__(self) -> None:
        self._quantized: dict[tuple, dict[str, str]] = {}  # accuracy control's candidates

    def available(self) -> str | None:
        if package_version("openvino") is None:
            return "OpenVINO is not installed; pip install 'edgemed[openvino]'"
        return None

    def settings(self, req: ConvertRequest) -> QuantSettings:
        """Validated options: unknown or inapplicable ones are refused, saying what OpenVINO does."""
        self.check_precision(req.precision)
        s = quant_settings(
            req,
            self.name,
            methods=oq.METHODS,
            default_method="minmax",
            modes=("static",),
            granularities=oq.GRANULARITIES,
            default_granularity="per-channel",
            extra_keys=EXTRA_OPTIONS,
        )
        oq.check_extra(s)
        hint = s.extra.get("inference_precision", "f32")
        if hint not in HINTS:
            raise InputError(
                f"--option inference_precision={hint} is not an OpenVINO precision; "
                f"choose one of {', '.join(HINTS)}"
            )
        if (s.exclude_nodes or s.exclude_op_types) and s.precision != "int8":
            raise InputError(
                f"OpenVINO {s.precision} keeps no layers in float selectively; "
                "exclude_nodes and exclude_op_types apply to int8 only"
            )
        return s

    def quantizable_nodes(self, req: ConvertRequest) -> tuple[str, ...]:
        """Every op NNCF quantized with nothing excluded (read from that model), in graph order."""
        s = self.settings(req)
        if s.precision != "int8" or req.calibration is None:
            return ()
        return tuple(self._candidates(req, ov_model_from_onnx(req.onnx_path), s))

    def _candidates(self, req: ConvertRequest, model, s: QuantSettings) -> dict[str, str]:
        """{ONNX node name: OpenVINO op name} NNCF can keep in float; one quantization per model
        and calibration set (accuracy control asks for them once per attempt)."""
        key = (
            sha256_file(req.onnx_path),
            s.calib_method,
            s.granularity,
            repr(sorted(s.extra.items())),
            getattr(req.calibration, "manifest_sha256", ""),
        )
        if key not in self._quantized:
            self._quantized[key] = {**oq.weighted_ops(model), **oq.candidate_ops(model, req, s)}
        return self._quantized[key]

    def convert(self, req: ConvertRequest, out: Path) -> Converted:
        import openvino as ov

        s = self.settings(req)
        model = ov_model_from_onnx(req.onnx_path)
        hint = s.extra.get("inference_precision", "f32")
        info: dict = {"weights": {"fp32": "f32", "fp16": "f16", "int8": "int8"}[s.precision]}
        if s.precision == "int8":
            model, qinfo = self._int8(req, model, s)
            info.update(qinfo)
        xml = Path(out) / MODEL_XML
        embed_runtime_options(model, hint)
        ov.save_model(model, str(xml), compress_to_fp16=s.precision == "fp16")
        files = [MODEL_XML, MODEL_BIN]
        if cal := write_calibration_manifest(out, req.calibration):
            files.append(cal)
        with OpenVINORunner(xml, hint) as runner:  # compile once: proves it loads, reads precision
            executed = runner.info["execution_precision"]
        plain = plain_compile_precision(xml)
        if plain != executed:  # e.g. a CPU with bf16: say what a plain compile_model would do
            print(
                f"edgemed: warning: a plain compile_model of this IR runs {plain} on this CPU, "
                f"not the measured {executed}; compile it with INFERENCE_PRECISION_HINT={hint} "
                "(stored in the IR's rt_info runtime_options)",
                file=sys.stderr,
            )
        if s.precision == "fp16":
            refuse_nonfinite(
                OpenVINORunner(xml, hint), req.contract, req.validation,
                f"OpenVINO fp16 (executed in {executed})",
                "drop --option inference_precision (f32 execution) or export fp32",
            )  # fmt: skip
        settings = {k: v for k, v in s.to_dict().items() if k not in ("exclude_nodes", "extra")}
        info = {
            "format": "openvino-ir",
            "device": "CPU",
            **settings,
            **info,
            "compress_to_fp16": s.precision == "fp16",
            "inference_precision_hint": hint,
            "execution_precision": executed,
            "runtime_options_in_ir": {"INFERENCE_PRECISION_HINT": hint},
            "plain_compile_precision": plain,
            "excluded_nodes": list(s.exclude_nodes),
        }
        return Converted(tuple(files), MODEL_XML, req.contract, info)

    def _int8(self, req: ConvertRequest, model, s: QuantSettings):
        if req.calibration is None:
            raise InputError(
                "INT8 needs calibration images: pass --calib RECIPE.toml or --calib DATA_PATH"
            )
        ops = oq.weighted_ops(model)
        if not set(s.exclude_nodes) <= set(ops):  # a non-weighted op: read what NNCF quantizes
            ops = self._candidates(req, model, s)
        if s.exclude_nodes:
            check_node_names(s.exclude_nodes, tuple(ops), self.name)
        if s.exclude_op_types:  # NNCF ignored_scope types are OpenVINO op types (MVN, SoftMax, ...)
            types = oq.model_op_types(model)
            check_node_names(s.exclude_op_types, types, self.name, "exclude_op_types")
        control = None
        if req.accuracy_control is not None:
            given = req.accuracy_control.get("auc_drop")
            control = METRICS["auc_drop"].default if given is None else given
        ignored = [ops[n] for n in s.exclude_nodes]
        return oq.int8_from_ov(model, req, s, ignored, control)

    def runner(self, model_path: Path, info: dict, threads: int | None = None) -> Runner:
        hint = info.get("inference_precision_hint", "f32")
        return OpenVINORunner(Path(model_path), hint, threads)
