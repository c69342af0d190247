"""TensorRT engines on the device: ONNX -> engine (Polygraphy loaders) and a runner on engine bytes.

Needs `tensorrt` and a CUDA GPU; everything here imports them inside functions. Which ONNX, typing
and flags a build uses is decided in `precision.build_path`: TensorRT 10.x (JetPack 6, desktop
10.x) builds weakly typed with precision flags (FP16: the FP32 ONNX, the nodes the export kept FP32
pinned by precision constraints); TensorRT 11 removed the flags and builds strongly typed (FP16:
the artifact's FP16 ONNX; INT8: the Q/DQ nodes say what runs in INT8). Engines are built with
ProfilingVerbosity.DETAILED so the engine inspector can report every layer's precision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgemed.backends import Runner
from edgemed.errors import InputError

if TYPE_CHECKING:  # type-checked against the tensorrt stubs (scripts/typecheck_tensorrt.py)
    import tensorrt as trt

    from edgemed.backends.tensorrt.precision import BuildPath


@dataclass(frozen=True)
class EnginePlan:
    """How to build one engine: precision, memory, DLA, timing cache and the batch range."""

    precision: str
    input_name: str
    sample_shape: tuple[int, ...]  # one input without the batch dimension, e.g. (1, 28, 28)
    max_batch: int = 32
    workspace_mb: int | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None

    def to_dict(self) -> dict:
        return {
            "precision": self.precision,
            "input_name": self.input_name,
            "sample_shape": list(self.sample_shape),
            "max_batch": self.max_batch,
            "workspace_mb": self.workspace_mb,
            "dla_core": self.dla_core,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
        }


def _polygraphy_error(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]


def engine_from_onnx(onnx_path: Path, plan: EnginePlan, path: BuildPath) -> bytes:
    """Parse the ONNX and build a serialized engine; the timing cache is read and updated."""
    import tensorrt as trt
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
        SetLayerPrecisions,
    )
    from polygraphy.exception import PolygraphyException

    network: Any = NetworkFromOnnxPath(str(onnx_path), strongly_typed=path.strongly_typed or None)
    if path.fp32_layers:  # TensorRT 10 FP16 flag: the layers the export kept FP32 stay FP32
        network = SetLayerPrecisions(network, {n: trt.float32 for n in path.fp32_layers})
    shape = plan.sample_shape
    profile = Profile().add(
        plan.input_name, min=(1, *shape), opt=(1, *shape), max=(plan.max_batch, *shape)
    )
    pools = {trt.MemoryPoolType.WORKSPACE: plan.workspace_mb * 2**20} if plan.workspace_mb else None
    cache = str(plan.timing_cache) if plan.timing_cache else None
    config = CreateConfig(
        fp16=path.fp16_flag or None,  # None: never touch a flag TensorRT 11 no longer has
        int8=path.int8_flag or None,
        precision_constraints="obey" if path.fp32_layers else None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        profiles=[profile],
        memory_pool_limits=pools,
        load_timing_cache=cache,
        use_dla=plan.dla_core is not None,
        allow_gpu_fallback=plan.dla_core is not None,
    )
    if plan.dla_core is not None:
        config = PostprocessConfig(config, _dla_core_setter(plan.dla_core))
    try:
        return bytes(EngineBytesFromNetwork(network, config, save_timing_cache=cache)())
    except PolygraphyException as exc:
        raise InputError(
            f"TensorRT could not build an engine from {onnx_path.name} ({_polygraphy_error(exc)}); "
            "check the ops with `polygraphy inspect capability` or export another precision"
        ) from None


def _dla_core_setter(
    core: int,
) -> Callable[[trt.Builder, trt.INetworkDefinition, trt.IBuilderConfig], None]:
    """Polygraphy's use_dla always picks core 0; this moves the build to `core`."""

    def set_core(
        builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig
    ) -> None:
        config.DLA_core = core

    return set_core


class TensorRTEngineRunner(Runner):
    """A deserialized engine run through Polygraphy's TrtRunner (it owns the CUDA buffers)."""

    def __init__(
        self, engine: bytes, input_name: str, max_batch: int, dla_core: int | None = None
    ) -> None:
        self._engine, self.input_name, self.dla_core = engine, input_name, dla_core
        self.batch_limit = max_batch
        self._runner: Any = None  # polygraphy's TrtRunner once active

    def activate(self) -> None:
        import tensorrt as trt
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.backend.trt import util as trt_util
        from polygraphy.exception import PolygraphyException

        t0 = time.perf_counter()
        runtime = trt.Runtime(trt_util.get_trt_logger())
        if self.dla_core is not None:
            runtime.DLA_core = self.dla_core
        try:
            engine = EngineFromBytes(self._engine, runtime=runtime)()
        except PolygraphyException as exc:
            raise InputError(
                f"TensorRT cannot deserialize this engine ({_polygraphy_error(exc)}); it is corrupt "
                "or from another TensorRT version: rebuild it with `edgemed build-engine`"
            ) from None
        runner = TrtRunner(engine)
        runner.activate()
        self._runner = runner
        self.load_seconds = time.perf_counter() - t0
        self._info = {"tensorrt_version": trt.__version__, "dla_core": self.dla_core}

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self._runner is None:
            raise RuntimeError("TensorRTEngineRunner.infer() before activate()")
        outputs = self._runner.infer({self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(next(iter(outputs.values())), dtype=np.float32)  # copy: buffers are reused

    def deactivate(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None
