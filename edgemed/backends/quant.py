"""Quantization settings shared by every backend: which options apply, the calibration manifest.

Each backend declares what it can do (calibration methods, modes, granularities, its own extra
keys) and calls `quant_settings(req, ...)`: options that do not apply to the requested precision
or backend are refused with an InputError, never ignored. `write_calibration_manifest` puts the
calibration manifest into the artifact as `calibration.json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgemed.backends import ConvertRequest
from edgemed.errors import InputError
from edgemed.fileio import write_json_atomic
from edgemed.runtimes import RUNTIMES, registration, with_op_types

CALIBRATION_FILE = "calibration.json"
# Quantization options and the precisions they apply to (exclude_nodes: keep layers in float).
QUANT_OPTIONS = {
    "calib_method": ("int8",),
    "granularity": ("int8",),
    "quant_mode": ("int8",),
    "exclude_nodes": ("fp16", "int8"),
    "exclude_op_types": ("fp16", "int8"),
}


@dataclass(frozen=True)
class QuantSettings:
    """Resolved quantization settings for one conversion (recorded in the manifest)."""

    precision: str
    mode: str | None = None  # "static" or "dynamic" (INT8 only)
    calib_method: str | None = None  # static INT8 only
    granularity: str | None = None  # INT8 only
    exclude_nodes: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # backend-specific --option keys
    exclude_op_types: tuple[str, ...] = ()  # every quantized node of these types stays float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exclude_nodes"] = list(self.exclude_nodes)
        d["exclude_op_types"] = list(self.exclude_op_types)
        return {k: v for k, v in d.items() if v not in (None, {}, [])}


# Options with a flag of their own on `edgemed export`; every other key comes as --option KEY=VALUE.
CLI_FLAGS = frozenset({"calib_method", "granularity", "quant_mode"})


def _flag(key: str) -> str:
    """How the user wrote `key`: its own flag, or `--option key=...`."""
    return "--" + key.replace("_", "-") if key in CLI_FLAGS else f"--option {key}=..."


def quant_settings(
    req: ConvertRequest,
    backend: str,
    *,
    methods: tuple[str, ...] = (),
    default_method: str | None = None,
    modes: tuple[str, ...] = ("static",),
    granularities: tuple[str, ...] = (),
    default_granularity: str | None = None,
    extra_keys: dict[str, tuple[str, ...]] | None = None,
) -> QuantSettings:
    """Validate `req.options` for `backend` at `req.precision` and fill in the backend defaults.

    `extra_keys` maps each backend-specific option to the precisions it applies to. A dynamic
    mode takes no calibration method (nothing is calibrated). `exclude_op_types` is refused
    unless the runtime's registration names its `op_type_vocabulary`.
    """
    opts, extra_keys = dict(req.options), dict(extra_keys or {})
    if opts.get("exclude_op_types") and not registration(backend).op_type_vocabulary:
        names = with_op_types()
        vocab = "; ".join(f"{n}: {RUNTIMES[n].op_type_vocabulary}" for n in names)
        raise InputError(
            f"target {backend} cannot keep op types in float; --option exclude_op_types is "
            f"accepted by {', '.join(names)} ({vocab}); name the layers with --option "
            "exclude_nodes=... instead"
        )
    _refuse_unknown(opts, backend, extra_keys)
    _refuse_inapplicable(opts, req.precision, extra_keys)
    mode = (
        _choice(opts, "quant_mode", modes, backend, "static") if req.precision == "int8" else None
    )
    if mode == "dynamic" and "calib_method" in opts:
        raise InputError(
            "--calib-method applies only to static INT8 (dynamic INT8 computes activation ranges "
            "at run time); drop --calib-method or use --quant-mode static"
        )
    method = None
    if req.precision == "int8" and mode != "dynamic":
        method = _choice(opts, "calib_method", methods, backend, default_method)
    granularity = None
    if req.precision == "int8":
        granularity = _choice(opts, "granularity", granularities, backend, default_granularity)
    return QuantSettings(
        precision=req.precision,
        mode=mode,
        calib_method=method,
        granularity=granularity,
        exclude_nodes=parse_node_list(opts.get("exclude_nodes")),
        extra={k: opts[k] for k in extra_keys if k in opts},
        exclude_op_types=parse_node_list(opts.get("exclude_op_types"), "exclude_op_types"),
    )


def _refuse_unknown(opts: dict, backend: str, extra_keys: dict) -> None:
    known = set(QUANT_OPTIONS) | set(extra_keys)
    unknown = sorted(set(opts) - known)
    if unknown:
        allowed = ", ".join(sorted(set(extra_keys) | {"exclude_nodes", "exclude_op_types"}))
        raise InputError(
            f"target {backend} does not understand --option {', '.join(unknown)}; "
            f"its options are: {allowed}"
        )


def _refuse_inapplicable(opts: dict, precision: str, extra_keys: dict) -> None:
    table = {**QUANT_OPTIONS, **extra_keys}
    for key, precisions in table.items():
        if key in opts and precision not in precisions:
            raise InputError(
                f"{_flag(key)} applies only to precision {'/'.join(precisions)}, not {precision}; "
                f"drop {_flag(key)} or change --precision"
            )


def _choice(opts: dict, key: str, allowed: tuple, backend: str, default):
    value = opts.get(key, default)
    if key in opts and value not in allowed:
        can = ", ".join(allowed) if allowed else "none"
        raise InputError(f"target {backend} cannot do {_flag(key)} {value}; it can do: {can}")
    return value


def parse_node_list(value, key: str = "exclude_nodes") -> tuple[str, ...]:
    """`exclude_nodes` / `exclude_op_types` from the CLI ("a,b") or a list -> tuple of names."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InputError(f"{key} must be a comma-separated list of names, got {value!r}")


def check_node_names(
    names: tuple[str, ...], known: tuple[str, ...], backend: str, key: str = "exclude_nodes"
) -> None:
    """Refuse exclusion names the model does not have (they would silently do nothing), naming
    the closest names it does have."""
    import difflib

    missing = [n for n in names if n not in set(known)]
    if not missing:
        return
    close = difflib.get_close_matches(missing[0], known, n=5, cutoff=0.4)
    shown = close or list(known[:8])
    what = "closest" if close else "choose from"
    more = f" ({len(known)} in all)" if len(known) > len(shown) else ""
    kind = "op types" if key == "exclude_op_types" else "layers"
    raise InputError(
        f"{key} names {', '.join(missing)}, not among the quantizable {kind} of this model for "
        f"{backend}; {what}: {', '.join(shown)}{more}"
    )


def write_calibration_manifest(out: Path, calibration) -> str | None:
    """Write the calibration set's manifest to `out/calibration.json`; returns the file name."""
    if calibration is None:
        return None
    write_json_atomic(Path(out) / CALIBRATION_FILE, calibration.manifest)
    return CALIBRATION_FILE


def calibration_info(calibration) -> dict | None:
    """What the backend manifest records about the calibration set (hash, size, classes, warnings)."""
    if calibration is None:
        return None
    m = calibration.manifest
    return {
        "manifest_file": CALIBRATION_FILE,
        "manifest_sha256": calibration.manifest_sha256,
        "images": len(calibration.images),
        "class_counts": m.get("class_counts", {}),
        "recipe": (m.get("recipe") or {}).get("name"),
        "warnings": list(m.get("warnings", [])),
    }
