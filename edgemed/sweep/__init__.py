"""`edgemed sweep PLAN.toml`: a grid expanded into train -> export -> bench jobs on an executor,
and per device the artifact to run there: accuracy first, then the profile's objective
(`sweep/select.py`), from rows measured on that device.

The plan names only things edgemed knows (a study grid, target profiles, precisions, gate
limits); nothing in it is imported or executed. Importing this package does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import InputError
from edgemed.evaluation.limits import BUNDLE_DEFAULTS, METRICS, limits_from
from edgemed.profiles import expand_devices, resolve_target
from edgemed.sweep.select import SelectRule

GRIDS = ("quick", "default")
KEYS = {
    "data", "grid", "epochs", "patience", "seed", "threads", "targets", "precisions",
    "bench_seconds", "bench_min_runs", "gate", "select",
}  # fmt: skip
SELECT_KEYS = {"margin", "objective"}


@dataclass(frozen=True)
class SweepPlan:
    """What a PLAN.toml asks for, checked."""

    data: str
    targets: tuple[str, ...]
    precisions: tuple[str, ...]
    grid: str = "quick"
    epochs: int = 10
    patience: int = 4
    seed: int = 0
    threads: int | None = None
    bench_seconds: float = 3.0
    bench_min_runs: int = 100
    gate: tuple[tuple[str, float], ...] = ()  # metric key -> limit, over the clinical defaults
    select: SelectRule = SelectRule()

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(
            targets=list(self.targets),
            precisions=list(self.precisions),
            gate=dict(self.gate),
            select=self.select.to_dict(),
        )
        return d

    def pairs(self) -> list[tuple[str, str]]:
        """(target, precision) for every export, skipping precisions a profile does not offer."""

        out = []
        for t in self.targets:
            offered = resolve_target(t).precisions
            out += [(t, p) for p in self.precisions if not offered or p in offered]
        return out


def load_plan(path: Path) -> SweepPlan:
    """Read and check PLAN.toml; one-line errors naming the key and the fix."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read sweep plan {path}: {exc}") from None
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise InputError(f"sweep plan {path}: unknown keys {unknown}; known: {sorted(KEYS)}")
    for key in ("data", "targets", "precisions"):
        if key not in raw:
            raise InputError(f"sweep plan {path} has no {key!r}; add it (see docs/FLEET.md)")
    _check_types(raw, path)
    plan = _plan(raw, path)
    _check(plan, path)
    return plan


INT_KEYS = ("epochs", "patience", "seed", "threads", "bench_min_runs")


def _check_types(raw: dict, path: Path) -> None:
    """Whole numbers stay whole: `epochs = 2.5` or `"3"` is refused, never rounded."""
    for key in INT_KEYS:
        v = raw.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise InputError(f"sweep plan {path}: {key} = {v!r}; expected a whole number")
    for key in INT_KEYS[:2] + INT_KEYS[3:]:
        if key in raw and raw[key] < 1:
            raise InputError(f"sweep plan {path}: {key} = {raw[key]}; expected >= 1")
    v = raw.get("bench_seconds", 1.0)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
        raise InputError(f"sweep plan {path}: bench_seconds = {v!r}; expected seconds > 0")


def _plan(raw: dict, path: Path) -> SweepPlan:
    try:
        return SweepPlan(
            data=str(raw["data"]),
            targets=expand_targets(raw["targets"], path),
            precisions=tuple(str(p) for p in raw["precisions"]),
            grid=str(raw.get("grid", "quick")),
            epochs=int(raw.get("epochs", 10)),
            patience=int(raw.get("patience", 4)),
            seed=int(raw.get("seed", 0)),
            threads=int(raw["threads"]) if "threads" in raw else None,
            bench_seconds=float(raw.get("bench_seconds", 3.0)),
            bench_min_runs=int(raw.get("bench_min_runs", 100)),
            gate=_gate(raw.get("gate", {}), path),
            select=_select(raw.get("select", {}), path),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"sweep plan {path}: a value has the wrong type ({exc})") from None


def _gate(raw: dict, path: Path) -> tuple[tuple[str, float], ...]:
    """[gate] max_auc_drop = 0.01 ... (the bench flag names without the dashes)."""

    by_name = {m.flag.lstrip("-").replace("-", "_"): k for k, m in METRICS.items()}
    bad = sorted(set(raw) - set(by_name))
    if bad:
        raise InputError(f"sweep plan {path}: unknown gate {bad}; known: {sorted(by_name)}")
    return tuple((by_name[k], float(v)) for k, v in raw.items())


def expand_targets(raw: object, path: Path) -> tuple[str, ...]:
    """Profiles as given; a device name (a `machine` of the target profiles) names all of its."""

    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise InputError(f"sweep plan {path}: targets must be a list of profile or device names")
    return expand_devices(raw)


def _select(raw: object, path: Path) -> SelectRule:
    """[select] margin = 0.005, objective = "latency" | "size" | "memory"."""
    if not isinstance(raw, dict):
        raise InputError(f"sweep plan {path}: [select] must be a table (margin, objective)")
    bad = sorted(set(raw) - SELECT_KEYS)
    if bad:
        raise InputError(
            f"sweep plan {path}: unknown [select] keys {bad}; known: {sorted(SELECT_KEYS)}"
        )
    margin = raw.get("margin", SelectRule.margin)
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise InputError(f"sweep plan {path}: [select] margin must be a number, got {margin!r}")
    return SelectRule(margin=float(margin), objective=str(raw.get("objective", "latency")))


def _check(plan: SweepPlan, path: Path) -> None:

    if plan.data != "embedded" and not Path(plan.data).expanduser().exists():
        raise InputError(
            f"sweep plan {path}: data {plan.data} does not exist; give an .npz file or a folder "
            "of class folders"
        )
    if plan.grid not in GRIDS:
        raise InputError(f"sweep plan {path}: grid must be one of {list(GRIDS)}, got {plan.grid!r}")
    if not plan.targets or not plan.precisions:
        raise InputError(f"sweep plan {path}: targets and precisions must not be empty")
    for t in plan.targets:
        resolve_target(t)  # an unknown profile is refused by name
    if not plan.pairs():
        raise InputError(f"sweep plan {path}: no target offers any of {list(plan.precisions)}")
    try:
        limits_from(dict(plan.gate), BUNDLE_DEFAULTS)
    except (ValueError, InputError) as exc:
        raise InputError(f"sweep plan {path}: bad gate ({exc})") from None
