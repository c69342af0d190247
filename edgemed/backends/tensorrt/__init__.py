"""TensorRT backend: the TensorRT-ready artifact is made anywhere, the engine on the target.

`convert` writes the ONNX that TensorRT builds from (FP32: the reference ONNX; INT8: a
TensorRT-conformant Q/DQ ONNX calibrated on the user's images; FP16: both the FP32 reference ONNX,
for TensorRT 10's FP16 builder flag, and a mixed FP16/FP32 ONNX for TensorRT 11's strongly typed
build, with the layers whose activations would overflow FP16 on the calibration images kept FP32),
the FP32 reference outputs on validation images and the target profile. Its drift is simulated
here by running the ONNX (FP16: the FP16 one) in ONNX Runtime on the CPU, marked so in the manifest. `edgemed build-engine` builds the engine on
the device and re-checks the drift there; `open` runs such an engine (TensorRT + GPU only).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgemed.backends import Backend, Converted, ConvertRequest, Runner, fp16
from edgemed.backends.fp16 import THRESHOLD_OPTIONS, fp16_thresholds
from edgemed.backends.onnxruntime import OnnxRuntimeRunner
from edgemed.backends.onnxruntime import quant as oq
from edgemed.backends.onnxruntime.quant import (
    FP16_CANDIDATES,
    Preprocessed,
    ensure_contract,
    nodes_of_types,
)
from edgemed.backends.quant import (
    QuantSettings,
    calibration_info,
    check_node_names,
    quant_settings,
    write_calibration_manifest,
)
from edgemed.backends.tensorrt.device import (
    check_engine_compatible,
    device_identity,
    read_engine_file,
    tensorrt_unavailable,
)
from edgemed.backends.tensorrt.engine import TensorRTEngineRunner
from edgemed.backends.tensorrt.qdq import METHODS, WEIGHTED_OPS, trt_qdq_from_onnx
from edgemed.calibration import CalibrationSet
from edgemed.errors import InputError
from edgemed.fileio import write_json_atomic
from edgemed.profiles import Profile

if TYPE_CHECKING:
    from edgemed.artifact import Artifact
    from edgemed.backends.onnxruntime.quant import Preprocessed

MODEL_FILE = "model.onnx"
FP16_MODEL_FILE = "model-fp16.onnx"  # strongly typed FP16 (TensorRT 11); model.onnx for 10.x
PROFILE_FILE = "target-profile.json"
REFERENCE_FILES = {
    "inputs": "reference_inputs.npy",
    "labels": "reference_labels.npy",
    "logits": "reference_logits.npy",
}
REFERENCE_MAX_IMAGES = 256
REFERENCE_MAX_BYTES = 16 * 2**20
NEXT_STEP = (
    "TensorRT engine not built here: engines are tied to the GPU and TensorRT version, so run "
    "`edgemed build-engine {out}` on the target device"
)


class TensorRTBackend(Backend):
    name = "tensorrt"
    package = "tensorrt"
    fp16_calibration = True  # FP16 measures activation magnitudes on the calibration images

    def __init__(self) -> None:
        # Caches for the accuracy-aware fallback, which converts the same model many times.
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._pre: Preprocessed | None = None
        self._ranges: dict[tuple, object] = {}
        self._magnitudes: dict[tuple, dict[str, float]] = {}

    def available(self) -> str | None:
        return tensorrt_unavailable()

    def settings(self, req: ConvertRequest) -> QuantSettings:
        """Validated options: static INT8 only, per-channel weights, ORT's calibration methods;
        FP16: the thresholds above which a layer stays FP32 (`fp16_data_max`, `fp16_init_max`)."""
        self.check_precision(req.precision)
        s = quant_settings(
            req,
            self.name,
            methods=METHODS,
            default_method="minmax",
            modes=("static",),
            granularities=("per-channel",),
            default_granularity="per-channel",
            extra_keys=THRESHOLD_OPTIONS,
        )
        fp16_thresholds(s.extra)  # validates them
        return s

    def quantizable_nodes(self, req: ConvertRequest) -> tuple[str, ...]:
        precision = self.settings(req).precision
        if precision == "fp16":  # nodes of the reference ONNX the FP16 ONNX can keep FP32
            return nodes_of_types(req.onnx_path, FP16_CANDIDATES)
        if precision != "int8":
            return ()
        return nodes_of_types(self._preprocessed(req.onnx_path), WEIGHTED_OPS)

    def convert(self, req: ConvertRequest, out: Path) -> Converted:
        """Write the ONNX for TensorRT (Q/DQ for INT8) and the profile; works without a GPU."""
        s = self.settings(req)
        if s.exclude_nodes:
            check_node_names(s.exclude_nodes, self.quantizable_nodes(req), self.name)
        target = Path(out) / MODEL_FILE
        info: dict = {"format": "onnx-for-tensorrt", "next_step": NEXT_STEP}
        files, model_file = [MODEL_FILE], MODEL_FILE
        if s.precision == "int8":
            info["qdq"] = self._int8(req, target, s)
        else:
            shutil.copyfile(req.onnx_path, target)
        if s.precision == "fp16":
            info["fp16"] = self._fp16(req, Path(out) / FP16_MODEL_FILE, s)
            info["onnx_by_tensorrt_major"] = {"10": MODEL_FILE, "11": FP16_MODEL_FILE}
            files, model_file = [MODEL_FILE, FP16_MODEL_FILE], FP16_MODEL_FILE
        if cal := write_calibration_manifest(out, req.calibration):
            files.append(cal)
        if isinstance(req.profile, Profile):
            write_json_atomic(Path(out) / PROFILE_FILE, req.profile.to_dict())
            files.append(PROFILE_FILE)
        info["excluded_nodes"] = list(s.exclude_nodes)
        return Converted(tuple(files), model_file, req.contract, info)

    def _fp16(self, req: ConvertRequest, target: Path, s: QuantSettings) -> dict:
        """The strongly typed FP16 ONNX: AutoCast's rule on measured magnitudes, then the guard."""
        import onnx

        cal = req.calibration
        if not isinstance(cal, CalibrationSet):
            raise InputError(
                "FP16 for TensorRT keeps in FP32 the layers whose activations would overflow FP16, "
                "measured on calibration images: pass --calib RECIPE.toml or DATA_PATH"
            )
        th = fp16.fp16_thresholds(s.extra)
        key = (str(req.onnx_path), cal.manifest_sha256)
        if key not in self._magnitudes:
            self._magnitudes[key] = fp16.activation_magnitudes(req.onnx_path, cal, req.contract)
        model, mags = onnx.load(str(req.onnx_path)), self._magnitudes[key]
        kept = fp16.nodes_to_keep_fp32(model, mags, th)
        if any(not k.node for k in kept):
            raise InputError(
                "a node that must stay FP32 has no name; re-export the ONNX with names"
            )
        keep = tuple(dict.fromkeys([*(k.node for k in kept), *s.exclude_nodes]))
        info = fp16.mixed_fp16_onnx(req.onnx_path, target, keep)
        ensure_contract(target, req.contract)
        fp16.refuse_nonfinite(
            OnnxRuntimeRunner(target),
            req.contract,
            req.validation,
            "the FP16 ONNX for TensorRT (simulated in ONNX Runtime)",
            "lower --option fp16_data_max (default 512) to keep more layers FP32, or export fp32",
        )
        return {
            **info,
            "rule": "NVIDIA AutoCast: node I/O above data_max or initializer above init_max -> FP32",
            "thresholds": th.to_dict(),
            "kept_fp32": [k.to_dict() for k in kept],
            "fp32_nodes": list(keep),
            "largest_activation": max(mags.values(), default=0.0),
            "io_types": "float32",
            "calibration": calibration_info(cal),
            "tensorrt_10": f"{MODEL_FILE} with the FP16 builder flag, fp32_nodes pinned to FP32",
            "tensorrt_11": f"{FP16_MODEL_FILE}, strongly typed",
        }

    def _int8(self, req: ConvertRequest, target: Path, s: QuantSettings) -> dict:
        cal = req.calibration
        if not isinstance(cal, CalibrationSet):
            raise InputError(
                "INT8 for TensorRT needs calibration images: pass --calib RECIPE.toml or DATA_PATH"
            )
        pre = self._preprocessed(req.onnx_path)
        method = s.calib_method or "minmax"
        options = oq.calib_options(s)
        key = (str(pre), cal.manifest_sha256, method, repr(sorted(options.items())))
        if key not in self._ranges:
            self._ranges[key] = oq.ranges_from_calibration(pre, cal, req.contract, method, options)
        info = trt_qdq_from_onnx(pre, target, self._ranges[key], s)
        oq.ensure_contract(target, req.contract)
        return {
            **info,
            "calib_method": s.calib_method,
            "preprocess": "quant_pre_process(skip_symbolic_shape=True)",
            "calibration": calibration_info(req.calibration),
        }

    def _preprocessed(self, onnx_path: Path) -> Path:
        if self._pre is None:  # ONNX Runtime's quantization tools, imported only when used
            self._pre = Preprocessed(self._scratch)
        return self._pre(onnx_path)

    def _scratch(self) -> Path:
        self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="edgemed-trt-")
        return Path(self._tmp.name)

    def simulation_runner(self, model_path: Path, info: dict) -> Runner:
        """ONNX Runtime on this CPU over the ONNX for TensorRT: a close simulation of the engine.

        Basic optimization only: the extended level fuses Q/DQ into ORT's own integer kernels,
        whose u8s8 path saturates on x86 CPUs without VNNI (AVX2 only; measured 120 of 270 chest
        X-ray decisions flipped), arithmetic TensorRT does not do. Unfused Q/DQ is exact math.
        """

        return OnnxRuntimeRunner(Path(model_path), optimization="ORT_ENABLE_BASIC")

    def artifact_extras(self, out: Path, manifest: dict, ref: np.ndarray | None, ev) -> dict:
        """Ship FP32 reference outputs on validation images for the on-device re-check."""
        if ev is None or ref is None:
            raise InputError(
                "a TensorRT artifact carries FP32 reference outputs so the engine can be re-checked "
                "on the device; pass --data with labelled validation images"
            )
        return {"reference": ship_reference(out, ev.images, ev.labels, ref, ev.ref)}

    def runner(self, model_path: Path, info: dict, threads: int | None = None) -> Runner:
        raise InputError(
            f"{model_path} is the ONNX for TensorRT, not an engine: TensorRT runs engines built "
            "on the device; run `edgemed build-engine ARTIFACT_DIR` there and use its output"
        )

    def open(self, artifact: Artifact, threads: int | None = None) -> Runner:
        """A runner on a built engine (an engine dir from `edgemed build-engine`)."""
        self.require()
        manifest, artifact_dir = artifact.manifest, artifact.path
        engine = manifest.get("engine")
        if not engine:
            raise InputError(
                f"{artifact_dir} holds the ONNX for TensorRT, not an engine; run "
                f"`edgemed build-engine {artifact_dir}` on this device and use its output"
            )
        check_engine_compatible(engine, device_identity(), str(artifact_dir))
        data = read_engine_file(
            artifact.model_file, manifest.get("files", {}).get(manifest["model_file"])
        )
        return TensorRTEngineRunner(
            data, engine["input_name"], engine["max_batch"], engine.get("dla_core")
        )


def ship_reference(
    out: Path, images: np.ndarray, labels: np.ndarray, logits: np.ndarray, origin: dict
) -> dict:
    """Write the first validation images (uint8), labels and FP32 logits; return their manifest."""
    per_image = int(np.prod(images.shape[1:])) * images.itemsize
    n = int(min(len(images), REFERENCE_MAX_IMAGES, max(1, REFERENCE_MAX_BYTES // per_image)))
    np.save(out / REFERENCE_FILES["inputs"], np.ascontiguousarray(images[:n]))
    np.save(out / REFERENCE_FILES["labels"], np.asarray(labels[:n]))
    np.save(out / REFERENCE_FILES["logits"], np.asarray(logits[:n], dtype=np.float32))
    return {
        **REFERENCE_FILES,
        "n": n,
        "from": {k: origin.get(k) for k in ("path", "split", "data_hash")},
        "inputs_are": "uint8 images (N, H, W, C) before the contract's normalization",
    }
