# TensorRT 11.4 Python API, the subset edgemed uses (see ../README.md for how it was written).
from __future__ import annotations

import typing

__version__: str

class DataType:
    BF16: typing.ClassVar[DataType]
    BOOL: typing.ClassVar[DataType]
    E8M0: typing.ClassVar[DataType]
    FLOAT: typing.ClassVar[DataType]
    FP4: typing.ClassVar[DataType]
    FP8: typing.ClassVar[DataType]
    HALF: typing.ClassVar[DataType]
    INT32: typing.ClassVar[DataType]
    INT4: typing.ClassVar[DataType]
    INT64: typing.ClassVar[DataType]
    INT8: typing.ClassVar[DataType]
    UINT8: typing.ClassVar[DataType]
    @property
    def itemsize(self) -> int: ...

float32: DataType
float16: DataType
bfloat16: DataType
int8: DataType
int32: DataType
int64: DataType

class BuilderFlag:
    # 11.x removed FP16, INT8, FP8, BF16, INT4, FP4, OBEY_/PREFER_PRECISION_CONSTRAINTS, DIRECT_IO
    DEBUG: typing.ClassVar[BuilderFlag]
    DISABLE_COMPILATION_CACHE: typing.ClassVar[BuilderFlag]
    DISABLE_TIMING_CACHE: typing.ClassVar[BuilderFlag]
    DISTRIBUTIVE_INDEPENDENCE: typing.ClassVar[BuilderFlag]
    EDITABLE_TIMING_CACHE: typing.ClassVar[BuilderFlag]
    ERROR_ON_TIMING_CACHE_MISS: typing.ClassVar[BuilderFlag]
    EXCLUDE_LEAN_RUNTIME: typing.ClassVar[BuilderFlag]
    GPU_FALLBACK: typing.ClassVar[BuilderFlag]
    MONITOR_MEMORY: typing.ClassVar[BuilderFlag]
    REFIT: typing.ClassVar[BuilderFlag]
    REFIT_IDENTICAL: typing.ClassVar[BuilderFlag]
    REFIT_INDIVIDUAL: typing.ClassVar[BuilderFlag]
    REJECT_EMPTY_ALGORITHMS: typing.ClassVar[BuilderFlag]
    SAFETY_SCOPE: typing.ClassVar[BuilderFlag]
    SPARSE_WEIGHTS: typing.ClassVar[BuilderFlag]
    STRICT_NANS: typing.ClassVar[BuilderFlag]
    STRIP_PLAN: typing.ClassVar[BuilderFlag]
    TF32: typing.ClassVar[BuilderFlag]
    VERSION_COMPATIBLE: typing.ClassVar[BuilderFlag]
    WEIGHTLESS: typing.ClassVar[BuilderFlag]
    WEIGHT_STREAMING: typing.ClassVar[BuilderFlag]

class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED: typing.ClassVar[NetworkDefinitionCreationFlag]  # accepted, ignored in 11.x
    PREFER_AOT_PYTHON_PLUGINS: typing.ClassVar[NetworkDefinitionCreationFlag]
    PREFER_JIT_PYTHON_PLUGINS: typing.ClassVar[NetworkDefinitionCreationFlag]

class MemoryPoolType:
    DLA_GLOBAL_DRAM: typing.ClassVar[MemoryPoolType]
    DLA_LOCAL_DRAM: typing.ClassVar[MemoryPoolType]
    DLA_MANAGED_SRAM: typing.ClassVar[MemoryPoolType]
    TACTIC_DRAM: typing.ClassVar[MemoryPoolType]
    TACTIC_SHARED_MEMORY: typing.ClassVar[MemoryPoolType]
    WORKSPACE: typing.ClassVar[MemoryPoolType]

class ProfilingVerbosity:
    DETAILED: typing.ClassVar[ProfilingVerbosity]
    LAYER_NAMES_ONLY: typing.ClassVar[ProfilingVerbosity]
    NONE: typing.ClassVar[ProfilingVerbosity]

class LayerInformationFormat:
    JSON: typing.ClassVar[LayerInformationFormat]
    ONELINE: typing.ClassVar[LayerInformationFormat]

class DeviceType:
    DLA: typing.ClassVar[DeviceType]
    GPU: typing.ClassVar[DeviceType]

class ILogger:
    class Severity:
        ERROR: typing.ClassVar[ILogger.Severity]
        INFO: typing.ClassVar[ILogger.Severity]
        INTERNAL_ERROR: typing.ClassVar[ILogger.Severity]
        VERBOSE: typing.ClassVar[ILogger.Severity]
        WARNING: typing.ClassVar[ILogger.Severity]
    ERROR: typing.ClassVar[ILogger.Severity]
    INFO: typing.ClassVar[ILogger.Severity]
    INTERNAL_ERROR: typing.ClassVar[ILogger.Severity]
    VERBOSE: typing.ClassVar[ILogger.Severity]
    WARNING: typing.ClassVar[ILogger.Severity]
    def log(self, severity: ILogger.Severity, msg: str) -> None: ...

class Logger(ILogger):
    min_severity: ILogger.Severity
    def __init__(self, min_severity: ILogger.Severity = ...) -> None: ...

class ITensor:
    name: str
    dtype: DataType
    shape: tuple[int, ...]

class ILayer:
    name: str
    precision: DataType
    @property
    def num_inputs(self) -> int: ...
    @property
    def num_outputs(self) -> int: ...
    def get_input(self, index: int) -> ITensor: ...
    def get_output(self, index: int) -> ITensor: ...

class INetworkDefinition:
    name: str
    @property
    def num_layers(self) -> int: ...
    @property
    def num_inputs(self) -> int: ...
    @property
    def num_outputs(self) -> int: ...
    def get_layer(self, index: int) -> ILayer: ...
    def get_input(self, index: int) -> ITensor: ...
    def get_output(self, index: int) -> ITensor: ...
    def __iter__(self) -> typing.Iterator[ILayer]: ...
    def __len__(self) -> int: ...

class IOptimizationProfile:
    def set_shape(self, input: str, min: tuple, opt: tuple, max: tuple) -> None: ...

class IBuilderConfig:
    DLA_core: int
    default_device_type: DeviceType
    profiling_verbosity: ProfilingVerbosity
    builder_optimization_level: int
    max_aux_streams: int
    def set_flag(self, flag: BuilderFlag) -> None: ...
    def clear_flag(self, flag: BuilderFlag) -> None: ...
    def get_flag(self, flag: BuilderFlag) -> bool: ...
    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None: ...
    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int: ...
    def add_optimization_profile(self, profile: IOptimizationProfile) -> int: ...

class IHostMemory:
    @property
    def nbytes(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class Builder:
    # 11.x removed platform_has_fast_fp16 / platform_has_fast_int8
    max_threads: int
    def __init__(self, logger: ILogger) -> None: ...
    @property
    def num_DLA_cores(self) -> int: ...
    @property
    def platform_has_tf32(self) -> bool: ...
    def create_network(self, flags: int = 0) -> INetworkDefinition: ...
    def create_builder_config(self) -> IBuilderConfig: ...
    def create_optimization_profile(self) -> IOptimizationProfile: ...
    def build_serialized_network(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> IHostMemory: ...

class IExecutionContext:
    name: str
    def set_input_shape(self, name: str, shape: tuple | list) -> bool: ...
    def get_tensor_shape(self, name: str) -> tuple[int, ...]: ...

class EngineInspector:
    execution_context: IExecutionContext
    def get_engine_information(self, format: LayerInformationFormat) -> str: ...
    def get_layer_information(self, layer_index: int, format: LayerInformationFormat) -> str: ...

class ICudaEngine:
    name: str
    @property
    def num_layers(self) -> int: ...
    @property
    def num_io_tensors(self) -> int: ...
    @property
    def profiling_verbosity(self) -> ProfilingVerbosity: ...
    def get_tensor_name(self, index: int) -> str: ...
    def create_execution_context(self) -> IExecutionContext: ...
    def create_engine_inspector(self) -> EngineInspector: ...
    def serialize(self) -> IHostMemory: ...

class Runtime:
    DLA_core: int
    def __init__(self, logger: ILogger) -> None: ...
    @property
    def num_DLA_cores(self) -> int: ...
    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None: ...

class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None: ...
    def parse(self, model: bytes, path: str | None = None) -> bool: ...
    @property
    def num_errors(self) -> int: ...
