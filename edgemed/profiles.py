"""Deployment-target profiles (targets/*.toml): runtime + device settings, validated strictly.

`--target` takes a runtime name (onnx, openvino, tflite, tensorrt), a profile name from the
targets directory, or a path to a profile file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edgemed.backends import BACKENDS
from edgemed.errors import InputError
from edgemed.fileio import sha256_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUNTIMES = tuple(BACKENDS)  # the registry is the one list of runtime names
DEVICES = ("cpu", "gpu", "jetson")
PRECISIONS = ("fp32", "fp16", "int8")
TENSORRT_MAJORS = (10, 11)
# JetPack -> the TensorRT generation it ships (TensorRT 11 does not support JetPack).
JETPACK_TENSORRT = {"6.1": 10, "6.2": 10}
ARCHES = ("x86_64", "aarch64")  # platform.machine() spellings
DEVICE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Profile:
    """A deployment target: which runtime, on which device, with which settings and budgets."""

    name: str
    runtime: str
    device: str = "cpu"
    description: str = ""
    precisions: tuple[str, ...] = PRECISIONS
    threads: int | None = None
    workspace_mb: int | None = None
    dla_core: int | None = None
    timing_cache: bool = True
    memory_budget_mb: float | None = None
    latency_budget_ms: float | None = None
    gpu_arch: str | None = None
    jetpack: str | None = None
    tensorrt_major: tuple[int, ...] = ()  # TensorRT generations the target builds with
    # The device this profile runs on: profiles naming one `machine` are one box with several
    # runtimes (a sweep selects per machine); `arch` and `cpu_flags` are what a machine must have
    # for a measurement to count as made on this device (none: any machine).
    machine: str | None = None
    arch: str | None = None
    cpu_flags: tuple[str, ...] = ()
    path: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        where = self.path or self.name
        if self.runtime not in RUNTIMES:
            raise InputError(
                f"profile {where}: runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}"
            )
        if self.device not in DEVICES:
            raise InputError(
                f"profile {where}: device must be one of {', '.join(DEVICES)}, got {self.device!r}"
            )
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise InputError(
                f"profile {where}: precisions must be a non-empty subset of {list(PRECISIONS)}, got {list(self.precisions)}"
            )
        if self.dla_core is not None and self.runtime != "tensorrt":
            raise InputError(f"profile {where}: dla_core applies only to the tensorrt runtime")
        if self.dla_core is not None and (self.dla_core < 0 or self.device != "jetson"):
            raise InputError(f"profile {where}: dla_core must be >= 0 and needs device = 'jetson'")
        if self.runtime == "tensorrt" and self.device == "cpu":
            raise InputError(f"profile {where}: tensorrt needs device 'gpu' or 'jetson'")
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise InputError(f"profile {where}: workspace_mb must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"profile {where}: threads must be >= 1")
        self._check_tensorrt(where)
        self._check_device(where)

    @property
    def device_name(self) -> str:
        """The device a sweep answers for: `machine`, else the profile itself."""
        return self.machine or self.name

    def _check_device(self, where: str) -> None:
        if self.machine is not None and not DEVICE_NAME.match(self.machine):
            raise InputError(
                f"profile {where}: machine must be a name of letters, digits, '-' and '_', "
                f"got {self.machine!r}"
            )
        if self.arch is not None and self.arch not in ARCHES:
            raise InputError(
                f"profile {where}: arch must be one of {', '.join(ARCHES)}, got {self.arch!r}"
            )
        if isinstance(self.cpu_flags, list):  # as recorded in a manifest
            object.__setattr__(self, "cpu_flags", tuple(self.cpu_flags))
        if not all(isinstance(f, str) and DEVICE_NAME.match(f) for f in self.cpu_flags):
            raise InputError(
                f"profile {where}: cpu_flags must be a list of ISA flag names as /proc/cpuinfo "
                f"spells them (e.g. ['avx2', 'avx512_vnni']), got {list(self.cpu_flags)}"
            )

    def _check_tensorrt(self, where: str) -> None:
        """tensorrt_major: 10 and/or 11 for tensorrt targets; a JetPack fixes it (6.1: 10.x)."""
        if self.runtime != "tensorrt":
            if self.tensorrt_major or self.jetpack:
                raise InputError(f"profile {where}: tensorrt_major/jetpack apply only to tensorrt")
            return
        if self.jetpack is not None and self.jetpack not in JETPACK_TENSORRT:
            raise InputError(
                f"profile {where}: jetpack {self.jetpack!r} is not supported; known: "
                f"{', '.join(JETPACK_TENSORRT)} (TensorRT 10.x)"
            )
        if isinstance(self.tensorrt_major, list):  # as recorded in a manifest
            object.__setattr__(self, "tensorrt_major", tuple(self.tensorrt_major))
        if not isinstance(self.tensorrt_major, tuple):
            raise InputError(f"profile {where}: tensorrt_major must be a list such as [10, 11]")
        jp = JETPACK_TENSORRT.get(self.jetpack or "")
        default = (jp,) if jp else (10,) if self.device == "jetson" else TENSORRT_MAJORS
        majors = tuple(self.tensorrt_major) or default
        bad = [m for m in majors if m not in TENSORRT_MAJORS]
        if bad or len(set(majors)) != len(majors):
            raise InputError(
                f"profile {where}: tensorrt_major must be distinct values from "
                f"{list(TENSORRT_MAJORS)}, got {list(majors)}"
            )
        if self.device == "jetson" and majors != (jp or 10,):
            raise InputError(
                f"profile {where}: a Jetson with JetPack {self.jetpack or '6.x'} builds with "
                f"TensorRT {jp or 10}.x (TensorRT 11 does not support JetPack); set "
                f"tensorrt_major = [{jp or 10}]"
            )
        object.__setattr__(self, "tensorrt_major", majors)  # frozen: fill in the default once

    def allow_tensorrt(self, version: str) -> None:
        """Refuse building this target's engine with a TensorRT generation it does not name."""
        major = int(version.split(".")[0])
        if major not in self.tensorrt_major:
            gens = " or ".join(f"{m}.x" for m in self.tensorrt_major)
            raise InputError(
                f"target {self.name} builds with TensorRT {gens}, but TensorRT {version} is "
                f"installed here; build on the target's TensorRT (e.g. Dockerfile.jetson) or "
                "export for a target that names this generation (tensorrt, desktop-rtx)"
            )

    def to_dict(self) -> dict:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in fields(self)
        }

    def allow(self, precision: str) -> None:
        if precision not in self.precisions:
            raise InputError(
                f"target {self.name} does not allow precision {precision!r}; it allows {', '.join(self.precisions)}"
            )


def targets_dir() -> Path:
    """The profile directory: $EDGEMED_TARGETS, else the repo's targets/, else the packaged copy."""
    import os

    env = os.environ.get("EDGEMED_TARGETS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent / "targets"
    return repo if repo.is_dir() else Path(__file__).resolve().parent / "resources" / "targets"


def known_profiles() -> list[str]:
    d = targets_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else list(RUNTIMES)


def machine_profiles(machine: str) -> list[Profile]:
    """The profiles in the targets dir that name `machine = MACHINE` (one device, its runtimes)."""
    d = targets_dir()
    paths = sorted(d.glob("*.toml"), key=lambda p: p.stem) if d.is_dir() else []
    found = [load_profile(p) for p in paths]
    return [p for p in found if p.machine == machine]


def expand_devices(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Profile names as given; a device name (the `machine` of profiles in the targets dir, e.g.
    x86-edge) stands for all of its profiles. Unknown names are left for resolve_target to refuse."""
    known = set(known_profiles())
    out: list[str] = []
    for t in names:
        group = [] if t in known or t.endswith(".toml") else machine_profiles(t)
        out += [p.name for p in group] or [t]
    return tuple(dict.fromkeys(out))


def load_profile(path: Path) -> Profile:
    """Parse and validate one profile file; unknown keys are refused."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"profile {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"profile {path} is not valid TOML ({exc})") from None
    allowed = {f.name for f in fields(Profile)} - {"path", "sha256"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(
            f"profile {path} has unknown keys {unknown}; allowed: {', '.join(sorted(allowed))}"
        )
    data.setdefault("name", Path(path).stem)
    for key in ("precisions", "tensorrt_major", "cpu_flags"):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
    try:
        return Profile(**data, path=str(Path(path).resolve()), sha256=sha256_file(Path(path)))
    except TypeError as exc:
        raise InputError(f"profile {path} is incomplete ({exc})") from None


def resolve_target(target: str) -> Profile:
    """A runtime name, a profile name in the targets dir, or a path to a .toml profile."""
    p = Path(target).expanduser()
    if p.suffix == ".toml" or p.is_file():
        return load_profile(p)
    candidate = targets_dir() / f"{target}.toml"
    if candidate.is_file():
        return load_profile(candidate)
    if target in RUNTIMES:
        return Profile(name=target, runtime=target)
    raise InputError(
        f"unknown target {target!r}; known targets: {', '.join(known_profiles())} (or a path to a .toml profile)"
    )
