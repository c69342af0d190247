"""Which ONNX and typing a TensorRT generation builds, and what precision the engine really has.

TensorRT 10.x (JetPack 6, desktop 10.x) is weakly typed: FP16 comes from the builder flag on the
FP32 reference ONNX, with the nodes the export kept in FP32 pinned there by layer precision
constraints. TensorRT 11 removed the flags and builds every network strongly typed, so FP16 is
the FP16 ONNX of the artifact. INT8 is the explicit Q/DQ ONNX on both.

After the build the engine inspector's JSON (ProfilingVerbosity.DETAILED) says what each layer
runs in; `precision_problems` refuses an engine that is not what the artifact says (e.g. an
"FP16" engine whose compute layers are all FP32). Everything here but `inspect_engine` is pure,
so it is tested on machines without a GPU on JSON in the formats TensorRT 10 and 11 write.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from edgemed.errors import InputError

GENERATIONS = (10, 11)
COMPUTE_PARAMS = ("Convolution", "Deconvolution", "FullyConnected", "MatrixMultiply", "Gemm")
COMPUTE_KINDS = ("Convolution", "Gemm", "MatrixMultiply", "FullyConnected", "Myelin", "DLA")
_DTYPES = (  # word in an inspector type/format string -> precision; first match wins
    (re.compile(r"\bBF16\b|\bBFLOAT16\b"), "bf16"),
    (re.compile(r"\bFP8\b"), "fp8"),
    (re.compile(r"\bFP16\b|\bHALF\b"), "fp16"),
    (re.compile(r"\bFP32\b|\bFLOAT\b|\bTF32\b"), "fp32"),
    (re.compile(r"\bINT8\b"), "int8"),
)
REDUCED = {"fp16", "bf16", "int8", "fp8"}


@dataclass(frozen=True)
class BuildPath:
    """How this TensorRT builds the artifact: which ONNX, typing, flags, layers pinned to FP32."""

    onnx_file: str
    strongly_typed: bool
    fp16_flag: bool = False
    int8_flag: bool = False
    fp32_layers: tuple[str, ...] = ()
    how: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fp32_layers"] = list(self.fp32_layers)
        return d


def trt_major(version: str) -> int:
    return int(version.split(".")[0])


def build_path(manifest: dict, precision: str, tensorrt_version: str) -> BuildPath:
    """The build for this artifact on this TensorRT (10: weak typing + flags; 11: strongly typed)."""
    major = trt_major(tensorrt_version)
    if major not in GENERATIONS:
        raise InputError(
            f"TensorRT {tensorrt_version} is not supported (edgemed builds with TensorRT 10.x or "
            "11.x); install one of those (JetPack 6.1 ships 10.3)"
        )
    backend = manifest.get("backend") or {}
    strong = major >= 11
    if precision != "fp16":
        how = "strongly typed" if strong else "weakly typed, no precision flag"
        if precision == "int8" and not strong:
            how = "weakly typed, INT8 flag (explicit Q/DQ)"
        return BuildPath(
            manifest["model_file"], strong, int8_flag=precision == "int8" and not strong, how=how
        )
    by_major = backend.get("onnx_by_tensorrt_major") or {}
    if str(major) not in by_major:
        raise InputError(
            f"this FP16 artifact has no ONNX for TensorRT {major} (it predates strongly typed "
            "FP16); re-export it with --precision fp16 --calib ..."
        )
    if strong:
        return BuildPath(by_major["11"], True, how="strongly typed FP16 ONNX")
    layers = tuple((backend.get("fp16") or {}).get("fp32_nodes") or ())
    return BuildPath(
        by_major["10"],
        False,
        fp16_flag=True,
        fp32_layers=layers,
        how="FP32 ONNX, FP16 builder flag, kept-FP32 nodes pinned by precision constraints",
    )


# --- the engine inspector's JSON -----------------------------------------------------------------


@dataclass(frozen=True)
class LayerPrecision:
    """One engine layer: its name, kind, whether it computes (weights/GEMM), and its precisions."""

    name: str
    kind: str
    compute: bool
    precisions: tuple[str, ...]
    weights: str | None = None  # precision of its weights, when the inspector gives them


def dtype_of(text: str | None) -> str | None:
    """'Channel major FP16 format where channel % 8 == 0' -> 'fp16'; 'Half' -> 'fp16'; N/A -> None."""
    if not text:
        return None
    upper = text.upper()
    return next((p for rx, p in _DTYPES if rx.search(upper)), None)


def _tensor_dtype(t: dict) -> str | None:
    # TensorRT 10: "Format/Datatype"; TensorRT 11 split it into "DataType"/"Datatype" + "Format".
    for key in ("DataType", "Datatype", "Format/Datatype", "Format"):
        if p := dtype_of(t.get(key) if isinstance(t.get(key), str) else None):
            return p
    return None


def parse_layer(layer: Any) -> LayerPrecision:
    """One entry of the inspector's "Layers" (a dict with DETAILED verbosity, a name otherwise)."""
    if not isinstance(layer, dict):
        return LayerPrecision(str(layer), "unknown", False, ())
    kind = str(layer.get("LayerType", ""))
    param = str(layer.get("ParameterType", ""))
    weights = dtype_of((layer.get("Weights") or {}).get("Type"))
    tensors = [*(layer.get("Inputs") or []), *(layer.get("Outputs") or [])]
    found = {p for t in tensors if isinstance(t, dict) and (p := _tensor_dtype(t))}
    if weights:
        found.add(weights)
    compute = bool(weights) or param in COMPUTE_PARAMS or any(k in kind for k in COMPUTE_KINDS)
    if kind in ("Reformat", "Shuffle") and not weights:
        compute = False
    return LayerPrecision(str(layer.get("Name", "")), kind, compute, tuple(sorted(found)), weights)


def parse_engine_info(info: dict) -> list[LayerPrecision]:
    """All layers of `IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`."""
    layers = info.get("Layers")
    if not isinstance(layers, list):
        raise InputError("the TensorRT engine inspector returned no layer list; rebuild the engine")
    return [parse_layer(x) for x in layers]


def precision_problems(
    layers: list[LayerPrecision], expected: str, fp32_nodes: tuple[str, ...] = ()
) -> list[str]:
    """Why this engine is not `expected` (fp32/fp16/int8); [] when its layers say it is."""
    compute = [x for x in layers if x.compute and x.precisions]
    if not compute:
        return [
            "the engine inspector reports no precision for any compute layer (the engine was not "
            "built with ProfilingVerbosity.DETAILED, or its shapes were not resolved)"
        ]
    has = {p: [x.name for x in compute if p in x.precisions] for p in ("fp16", "int8")}
    problems = []
    if expected == "fp32":
        reduced = [x.name for x in compute if REDUCED & set(x.precisions)]
        if reduced:
            problems.append(f"{len(reduced)} compute layers run in reduced precision: {reduced[0]}")
    elif expected == "fp16":
        if not has["fp16"]:
            problems.append(f"none of its {len(compute)} compute layers runs in FP16 (all FP32)")
        if has["int8"]:
            problems.append(f"layer {has['int8'][0]} runs in INT8")
        kept = set(fp32_nodes)
        for x in compute:
            parts = [p.strip() for p in x.name.split(" + ")]
            if kept and x.weights == "fp16" and parts and set(parts) <= kept:
                problems.append(f"layer {x.name} runs in FP16 but was kept FP32 (overflow)")
    elif expected == "int8" and not has["int8"]:
        problems.append(f"none of its {len(compute)} compute layers runs in INT8")
    return problems


def precision_summary(layers: list[LayerPrecision]) -> dict:
    """Counts for the engine manifest: compute layers per precision, all layers."""
    counts: dict[str, int] = {}
    for x in layers:
        if x.compute:
            for p in x.precisions:
                counts[p] = counts.get(p, 0) + 1
    return {
        "layers": len(layers),
        "compute_layers": sum(x.compute for x in layers),
        "compute_layers_by_precision": dict(sorted(counts.items())),
    }


def check_engine_precision(info: dict, expected: str, fp32_nodes: tuple[str, ...]) -> dict:
    """Refuse an engine whose layers do not run in `expected`; return the summary for the manifest."""
    layers = parse_engine_info(info)
    problems = precision_problems(layers, expected, fp32_nodes)
    if problems:
        raise InputError(
            f"TensorRT built an engine that is not {expected.upper()} ({'; '.join(problems[:2])}); "
            "nothing was written: rebuild with the artifact's precision or re-export the artifact"
        )
    return precision_summary(layers)


def inspect_engine(engine: bytes, input_name: str, shape: tuple[int, ...], dla: int | None) -> dict:
    """The engine inspector's JSON, with the input shape set so tensor formats are resolved."""
    import tensorrt as trt
    from polygraphy.backend.trt import util as trt_util

    runtime = trt.Runtime(trt_util.get_trt_logger())
    if dla is not None:
        runtime.DLA_core = dla
    cuda_engine = runtime.deserialize_cuda_engine(engine)
    if cuda_engine is None:
        raise InputError("TensorRT cannot deserialize the engine it just built; rebuild it")
    context = cuda_engine.create_execution_context()
    context.set_input_shape(input_name, (1, *shape))
    inspector = cuda_engine.create_engine_inspector()
    inspector.execution_context = context
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
