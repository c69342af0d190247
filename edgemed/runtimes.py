"""The runtime registry: every runtime's facts, declared once on its `Registration`.

A leaf module (it imports no backend): profiles, provenance, export, bench, sweep and bundles
ask it what a runtime can do instead of keeping name lists of their own. A backend class is
imported only when used, by the dotted name written in `RUNTIMES` below (a fixed table in code,
never read from a file). Adding a runtime = its package under `edgemed/backends/` + one line
here + one test class subclassing `tests/backends/template.py`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edgemed.errors import InputError

DEVICES = ("cpu", "gpu", "jetson")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_SOURCES = ("torch", "onnx")  # a torch module, or an .onnx file the user gives
# The runtime whose FP32 artifact is the reference ONNX itself (export checks parity in it; bench
# may take such an artifact as the reference when the model source is gone).
REFERENCE_RUNTIME = "onnx"


@dataclass(frozen=True)
class Simulation:
    """How the export measures drift here for an artifact meant for another device: `by` names
    what runs it (recorded in the manifest's `drift.simulated`), at these `precisions`."""

    by: str
    precisions: frozenset[str]


@dataclass(frozen=True)
class Registration:
    """One runtime and what it can do.

    - `entry`: "module:Class" of its `Backend`, imported only when used.
    - `packages`: distributions whose versions its artifacts' numbers depend on (provenance).
    - `title`: the name users know it by, in messages.
    - `precisions`: what it converts to.
    - `sources`: model kinds it converts from ("torch": needs the torch module; "onnx": converts
      from the reference ONNX, so an .onnx model file is enough).
    - `devices`: profile devices it can target.
    - `builds_on_device`: its deployable file is built on the device that runs it (an export
      job for it is scheduled on that device).
    - `op_type_vocabulary`: what `--option exclude_op_types` names for it, or None when it
      cannot keep whole op types in float.
    - `profile_keys`: profile fields only it understands (refused on other runtimes' profiles);
      `profile_check` ("module:function", or None) validates them and returns filled defaults.
    - `simulation`: how its drift is measured here for another device, or None.
    - `feature_output`: the runtime can run a model with a second output beside the logits
      (the penultimate features the domain guard reads) and return both from one inference.
    """

    entry: str
    packages: tuple[str, ...]
    title: str
    precisions: frozenset[str]
    sources: frozenset[str] = frozenset(MODEL_SOURCES)
    devices: frozenset[str] = frozenset(DEVICES)
    builds_on_device: bool = False
    op_type_vocabulary: str | None = None
    profile_keys: frozenset[str] = frozenset()
    profile_check: str | None = None
    simulation: Simulation | None = None
    feature_output: bool = False


ALL = frozenset(PRECISIONS)
TENSORRT_PROFILE_KEYS = frozenset(
    {"workspace_mb", "dla_core", "timing_cache", "gpu_arch", "jetpack", "tensorrt_major"}
)

RUNTIMES: dict[str, Registration] = {
    "onnx": Registration(
        "edgemed.backends.onnxruntime:OnnxRuntimeBackend",
        ("onnxruntime",),
        "ONNX Runtime",
        ALL,
        op_type_vocabulary="ONNX op types such as Conv, MatMul, Gemm",
        feature_output=True,  # any graph output is fetched by name in one session.run
    ),
    "openvino": Registration(
        "edgemed.backends.openvino:OpenVINOBackend",
        ("openvino", "nncf"),
        "OpenVINO",
        ALL,
        op_type_vocabulary="OpenVINO op types such as MVN, SoftMax",
        feature_output=True,  # a compiled model returns every model output per infer
    ),
    "tflite": Registration(
        "edgemed.backends.tflite:TFLiteBackend",
        ("ai-edge-litert", "tflite-runtime", "litert-torch"),
        "TFLite",
        ALL,
        sources=frozenset({"torch"}),  # litert-torch converts the torch module
        op_type_vocabulary="torch module classes such as Linear, LayerNorm",
        # litert-torch could convert a module returning (logits, features); edgemed does not yet,
        # so the domain guard of a LiteRT artifact uses input statistics only (its manifest says so)
        feature_output=True,  # litert-torch exports (logits, features) from an fx-tapped module
    ),
    "tensorrt": Registration(
        "edgemed.backends.tensorrt:TensorRTBackend",
        ("tensorrt", "polygraphy"),
        "TensorRT",
        ALL,
        devices=frozenset({"gpu", "jetson"}),
        builds_on_device=True,
        profile_keys=TENSORRT_PROFILE_KEYS,
        profile_check="edgemed.backends.tensorrt.profile:checked_tensorrt_fields",
        # ONNX Runtime on CPU reproduces FP32 and Q/DQ INT8 math and FP16 rounding
        simulation=Simulation("onnxruntime-cpu", ALL),
        # an engine binds every network output, but the guard's reference is fitted at export on
        # the CPU and a TensorRT artifact is only built on its device: no feature output yet
        feature_output=False,
    ),
}


def registration(name: str) -> Registration:
    """The registration of runtime `name`; an unknown name is refused with the known ones."""
    if name not in RUNTIMES:
        raise InputError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def runtimes_with(**facts) -> tuple[str, ...]:
    """Runtime names whose registration has every given fact, e.g. `runtimes_with(
    builds_on_device=True)`; a set-valued field matches when it contains the value given."""

    def has(reg: Registration, key: str, want) -> bool:
        value = getattr(reg, key)
        return want in value if isinstance(value, frozenset) else value == want

    return tuple(n for n, r in RUNTIMES.items() if all(has(r, k, v) for k, v in facts.items()))


def with_op_types() -> tuple[str, ...]:
    """Runtimes that keep whole op types in float (`--option exclude_op_types`)."""
    return tuple(n for n, r in RUNTIMES.items() if r.op_type_vocabulary)


def all_packages() -> tuple[str, ...]:
    """Every runtime's distributions, in registry order (for provenance)."""
    return tuple(dict.fromkeys(p for r in RUNTIMES.values() for p in r.packages))


def profile_checked_fields(profile) -> dict:
    """Run the profile's runtime's `profile_check` (imported by its dotted name in RUNTIMES) on
    a `edgemed.profiles.Profile`; returns the fields it fills in ({} without a check)."""
    entry = registration(profile.runtime).profile_check
    if not entry:
        return {}
    module_name, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module_name), attr)(profile)
