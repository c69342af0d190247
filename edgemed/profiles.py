"""Deployment-target profiles (targets/*.toml): runtime + device settings, validated strictly.

`--target` takes a runtime name (onnx, openvino, tflite, tensorrt), a profile name from the
targets directory, or a path to a profile file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edgemed.errors import InputError
from edgemed.fileio import sha256_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUNTIMES = ("onnx", "openvino", "tflite", "tensorrt")
DEVICES = ("cpu", "gpu", "jetson")
PRECISIONS = ("fp32", "fp16", "int8")


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
    if "precisions" in data:
        data["precisions"] = tuple(data["precisions"])
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
