"""TensorRT's profile keys: workspace, DLA core, timing cache, GPU arch, JetPack, TensorRT major.

`checked_tensorrt_fields` is the registry's `profile_check` for TensorRT targets (called by
`edgemed.profiles.Profile` through `edgemed.runtimes`); `allow_tensorrt` refuses building an
engine with a TensorRT generation the target does not name.
"""

from __future__ import annotations

from edgemed.errors import InputError
from edgemed.profiles import Profile

TENSORRT_MAJORS = (10, 11)
# JetPack -> the TensorRT generation it ships (TensorRT 11 does not support JetPack).
JETPACK_TENSORRT = {"6.1": 10, "6.2": 10}


def checked_tensorrt_fields(profile: Profile) -> dict:
    """Validate a TensorRT profile's own keys; returns the fields to fill in (tensorrt_major:
    10 and/or 11, a JetPack fixes it, a Jetson defaults to 10)."""
    where = profile.path or profile.name
    if profile.dla_core is not None and (profile.dla_core < 0 or profile.device != "jetson"):
        raise InputError(f"profile {where}: dla_core must be >= 0 and needs device = 'jetson'")
    if profile.workspace_mb is not None and profile.workspace_mb < 1:
        raise InputError(f"profile {where}: workspace_mb must be >= 1")
    if profile.jetpack is not None and profile.jetpack not in JETPACK_TENSORRT:
        raise InputError(
            f"profile {where}: jetpack {profile.jetpack!r} is not supported; known: "
            f"{', '.join(JETPACK_TENSORRT)} (TensorRT 10.x)"
        )
    given = profile.tensorrt_major
    if isinstance(given, list):  # as recorded in a manifest
        given = tuple(given)
    if not isinstance(given, tuple):
        raise InputError(f"profile {where}: tensorrt_major must be a list such as [10, 11]")
    jp = JETPACK_TENSORRT.get(profile.jetpack or "")
    default = (jp,) if jp else (10,) if profile.device == "jetson" else TENSORRT_MAJORS
    majors = tuple(given) or default
    bad = [m for m in majors if m not in TENSORRT_MAJORS]
    if bad or len(set(majors)) != len(majors):
        raise InputError(
            f"profile {where}: tensorrt_major must be distinct values from "
            f"{list(TENSORRT_MAJORS)}, got {list(majors)}"
        )
    if profile.device == "jetson" and majors != (jp or 10,):
        raise InputError(
            f"profile {where}: a Jetson with JetPack {profile.jetpack or '6.x'} builds with "
            f"TensorRT {jp or 10}.x (TensorRT 11 does not support JetPack); set "
            f"tensorrt_major = [{jp or 10}]"
        )
    return {"tensorrt_major": majors}


def allow_tensorrt(profile: Profile, version: str) -> None:
    """Refuse building this target's engine with a TensorRT generation it does not name."""
    major = int(version.split(".")[0])
    if major not in profile.tensorrt_major:
        gens = " or ".join(f"{m}.x" for m in profile.tensorrt_major)
        raise InputError(
            f"target {profile.name} builds with TensorRT {gens}, but TensorRT {version} is "
            f"installed here; build on the target's TensorRT (e.g. Dockerfile.jetson) or "
            "export for a target that names this generation (tensorrt, desktop-rtx)"
        )
