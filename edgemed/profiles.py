"""Deployment-target profiles (targets/*.toml): runtime + device settings, validated strictly.

`--target` takes a runtime name (`edgemed.runtimes.RUNTIMES`), a profile name from the targets
directory, or a path to a profile file. Keys only one runtime understands are declared on its
registration (`profile_keys`) and checked by its `profile_check`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edgemed.errors import InputError
from edgemed.fileio import sha256_file
from edgemed.runtimes import DEVICES, PRECISIONS, RUNTIMES, profile_checked_fields, registration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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
        devices = registration(self.runtime).devices
        if self.device not in devices:
            need = " or ".join(repr(d) for d in DEVICES if d in devices)
            raise InputError(f"profile {where}: {self.runtime} needs device {need}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"profile {where}: threads must be >= 1")
        self._check_runtime_keys(where)
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

    def _check_runtime_keys(self, where: str) -> None:
        """Keys one runtime declares (`Registration.profile_keys`) are refused on the others'
        profiles; its `profile_check` validates them and fills in their defaults once."""
        keys = registration(self.runtime).profile_keys
        for f in fields(self):
            if f.name in keys or getattr(self, f.name) in (f.default, [], ()):
                continue
            owners = [n for n, r in RUNTIMES.items() if f.name in r.profile_keys]
            if owners:
                raise InputError(
                    f"profile {where}: {f.name} applies only to the {'/'.join(owners)} runtime"
                )
        for name, value in profile_checked_fields(self).items():
            object.__setattr__(self, name, value)  # frozen: fill in the defaults once

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
    if target in RUNTIMES:  # the runtime's own defaults, at the precisions it converts to
        offered = registration(target).precisions
        return Profile(target, target, precisions=tuple(p for p in PRECISIONS if p in offered))
    raise InputError(
        f"unknown target {target!r}; known targets: {', '.join(known_profiles())} (or a path to a .toml profile)"
    )
