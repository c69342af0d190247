"""Which NVIDIA device is this, and may an engine built elsewhere run on it?

TensorRT engines run only on the GPU model and TensorRT version that built them, so every engine
manifest records both and loading refuses a mismatch. The check functions here are pure (dicts and
dataclasses in, an InputError out) so they are tested on machines without a GPU; only
`tensorrt_unavailable` and `device_identity` touch TensorRT and the CUDA runtime.
"""

from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass
from pathlib import Path

from edgemed.errors import InputError, UnavailableError
from edgemed.fileio import sha256_bytes

REBUILD = "rebuild it on this device with `edgemed build-engine ARTIFACT_DIR`"
_CC_MAJOR, _CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor
_WHERE = (
    "build and run engines on the target: a Jetson with JetPack (see Dockerfile.jetson) or a "
    "machine with an NVIDIA GPU, its driver and TensorRT"
)


@dataclass(frozen=True)
class DeviceIdentity:
    """What an engine is tied to: GPU model, compute capability, TensorRT version (+ DLA cores)."""

    gpu_name: str
    compute_capability: str
    tensorrt: str
    dla_cores: int = 0
    board: str | None = None  # Jetson board model from the device tree

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def trt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _cudart():
    """Polygraphy's handle on libcudart (ctypes), or an UnavailableError."""
    try:
        from polygraphy import cuda

        return cuda.wrapper().handle
    except Exception as exc:  # OSError (no libcudart) or PolygraphyException
        raise UnavailableError(
            f"the CUDA runtime is not available here ({_first_line(exc)}); {_WHERE}"
        ) from None


def tensorrt_unavailable() -> str | None:
    """None when TensorRT imports and a CUDA GPU is visible, else one line saying what is missing."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from missing libnvinfer/libnvonnxparser
        return f"TensorRT is not installed here ({_first_line(exc)}); {_WHERE}"
    try:
        count = _device_count(_cudart())
    except UnavailableError as exc:
        return str(exc)
    if count == 0:
        return f"no CUDA GPU is visible here; {_WHERE}"
    return None


def _device_count(cudart) -> int:
    n = ctypes.c_int(0)
    status = cudart.cudaGetDeviceCount(ctypes.byref(n))
    return n.value if status == 0 else 0


def _gpu_name(cudart, index: int) -> str:
    buf = ctypes.create_string_buffer(4096)  # cudaDeviceProp starts with char name[256]
    fn = getattr(cudart, "cudaGetDeviceProperties_v2", None) or cudart.cudaGetDeviceProperties
    if fn(buf, index) != 0:
        return "unknown NVIDIA GPU"
    return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace")


def _board_model() -> str | None:
    p = Path("/proc/device-tree/model")
    return p.read_bytes().decode(errors="ignore").strip("\0 \n") if p.exists() else None


def device_identity(index: int = 0) -> DeviceIdentity:
    """This machine's GPU, compute capability, TensorRT version and DLA core count."""
    msg = tensorrt_unavailable()
    if msg:
        raise UnavailableError(msg)
    import tensorrt as trt

    cudart = _cudart()
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cudart.cudaDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, index)
    cudart.cudaDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, index)
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    return DeviceIdentity(
        gpu_name=_gpu_name(cudart, index),
        compute_capability=f"{major.value}.{minor.value}",
        tensorrt=str(trt.__version__),
        dla_cores=int(builder.num_DLA_cores),
        board=_board_model(),
    )


def engine_mismatch(recorded: dict, here: DeviceIdentity) -> list[str]:
    """How the device an engine was built on (its manifest's `engine` block) differs from this one."""
    diffs = []
    if recorded.get("tensorrt") != here.tensorrt:
        diffs.append(f"TensorRT {recorded.get('tensorrt')} there, {here.tensorrt} here")
    if recorded.get("compute_capability") != here.compute_capability:
        diffs.append(
            f"compute capability {recorded.get('compute_capability')} there, "
            f"{here.compute_capability} here"
        )
    if recorded.get("gpu_name") != here.gpu_name:
        diffs.append(f"GPU {recorded.get('gpu_name')!r} there, {here.gpu_name!r} here")
    return diffs


def check_engine_compatible(recorded: dict, here: DeviceIdentity, where: str) -> None:
    """Refuse an engine built for another GPU or TensorRT version (it would fail or misbehave)."""
    diffs = engine_mismatch(recorded, here)
    if diffs:
        raise InputError(
            f"TensorRT engine {where} was built on another device ({'; '.join(diffs)}); {REBUILD}"
        )


def read_engine_file(path: Path, entry: dict | None) -> bytes:
    """The engine's bytes, refusing a missing, empty or modified (hash differs) file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"TensorRT engine {path} does not exist; {REBUILD}")
    data = path.read_bytes()
    expected = (entry or {}).get("sha256")
    if not data or (expected and sha256_bytes(data) != expected):
        raise InputError(
            f"TensorRT engine {path} is corrupt or was modified (its SHA-256 differs from the "
            f"engine manifest); {REBUILD}"
        )
    return data


def check_dla_request(dla_core: int | None, here: DeviceIdentity, precision: str) -> None:
    """DLA needs a device that has it, a core that exists, and FP16/INT8."""
    if dla_core is None:
        return
    if here.dla_cores == 0:
        raise InputError(
            f"DLA core {dla_core} was requested but {here.gpu_name} has no DLA (DLA exists on "
            "Jetson AGX Orin / Orin NX); drop --dla-core or use a target profile without dla_core"
        )
    if not 0 <= dla_core < here.dla_cores:
        raise InputError(
            f"DLA core {dla_core} does not exist: {here.gpu_name} has {here.dla_cores} "
            f"(0..{here.dla_cores - 1}); pass --dla-core 0..{here.dla_cores - 1}"
        )
    if precision == "fp32":
        raise InputError(
            "DLA runs FP16 and INT8 only; build with --precision fp16 or int8, or drop --dla-core"
        )
