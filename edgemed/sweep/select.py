"""A sweep's answer per device: accuracy first, then the profile's objective, measured where it
claims.

For each device (a `machine` of the target profiles, or a profile of its own), every bench row of
its profiles is a candidate. A candidate is out when it failed, when its drift fails the clinical
gate, when it misses its profile's latency or memory budget, or when it was measured on another
machine than the device. Of the rest, those whose test AUC is within `margin` of the best one
are kept (the same images for every row, so the AUCs compare), and the one best by the objective
(latency, size or memory) is chosen. Every number the rule used is in `selection.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemed.artifact import MANIFEST
from edgemed.errors import InputError
from edgemed.evaluation.drift import Drift
from edgemed.evaluation.limits import Limits, verdict
from edgemed.fileio import read_json
from edgemed.profiles import Profile, resolve_target

# The same AUC difference the clinical gate tolerates for one model's quantization drift
# (--max-auc-drop default): a model less accurate than the best by more is not an equal choice.
DEFAULT_MARGIN = 0.005
# objective -> (row block, key, words): lower is better for each.
OBJECTIVES = {
    "latency": ("latency", "median_ms", "median latency (ms)"),
    "size": ("memory", "model_bytes", "model file size (bytes)"),
    "memory": ("memory", "peak_rss_mb", "peak RSS (MB)"),
}


@dataclass(frozen=True)
class SelectRule:
    """The plan's `[select]` table: the accuracy margin and what to minimise among the kept."""

    margin: float = DEFAULT_MARGIN
    objective: str = "latency"

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin <= 0.5:
            raise InputError(
                f"[select] margin must be an AUC difference in [0, 0.5], got {self.margin}"
            )
        if self.objective not in OBJECTIVES:
            raise InputError(
                f"[select] objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}"
            )

    def to_dict(self) -> dict:
        return {"margin": self.margin, "objective": self.objective}


@dataclass(frozen=True)
class Where:
    """The machine a row was measured on."""

    arch: str | None
    flags: tuple[str, ...]
    description: str
    offered_target: str | None = None  # a Ray node that offers the row's profile

    def fits(self, profile: Profile) -> bool:
        """Whether this machine is the profile's device (its arch and ISA flags, where stated)."""
        if profile.arch and self.arch != profile.arch:
            return False
        if not set(profile.cpu_flags) <= set(self.flags):
            return False
        # A GPU profile is only ever measured on a node declared to be that device.
        return profile.device == "cpu" or self.offered_target == profile.name


def row_where(row: dict, driver: dict) -> Where:
    """Where a bench row ran: its Ray node's own description, else this run's device block."""
    node = row.get("node") or {}
    if node.get("executor") == "ray":
        cpu = node.get("cpu") or {}
        desc = f"Ray node {node.get('hostname', '?')} ({cpu.get('model', '?')}, {node.get('machine', '?')})"
        return Where(node.get("machine"), tuple(cpu.get("flags") or ()), desc, node.get("target"))
    cpu = driver.get("cpu") or {}
    flags = tuple(cpu.get("flags") or ())
    desc = f"this machine: {cpu.get('model', '?')}, {driver.get('machine', '?')}, {' '.join(flags) or 'no ISA flags of interest'}"
    return Where(driver.get("machine"), flags, desc)


def row_profile(row: dict) -> str:
    """The target profile of a bench row: where it ran, else its artifact's manifest."""
    node = row.get("node") or {}
    if node.get("target"):
        return str(node["target"])
    return str(read_json(Path(row["artifact"]) / MANIFEST, "artifact manifest")["target"])


def _value(row: dict, block: str, key: str) -> float | None:
    v = (row.get(block) or {}).get(key)
    return float(v) if isinstance(v, int | float) else None


def candidate(row: dict, profile: Profile, where: Where, limits: Limits) -> dict:
    """One row as a candidate, with the first reason it is out (None: still in)."""
    d = row.get("drift") or {}
    c = {
        "label": row["label"],
        "artifact": row["artifact"],
        "profile": profile.name,
        "runtime": row.get("runtime"),
        "precision": row.get("precision"),
        "auc": d.get("auc_candidate"),
        "auc_ci95": d.get("auc_candidate_ci95"),
        "median_ms": _value(row, "latency", "median_ms"),
        "model_bytes": _value(row, "memory", "model_bytes"),
        "peak_rss_mb": _value(row, "memory", "peak_rss_mb"),
        "measured_on": where.description,
        "on_device": where.fits(profile),
        "node": row.get("node"),
    }
    c["outcome"], c["reason"] = _screen(row, profile, c, limits)
    return c


def _screen(row: dict, profile: Profile, c: dict, limits: Limits) -> tuple[str | None, str | None]:
    if row.get("status") != "ok" or c["auc"] is None:
        return "failed", f"bench row failed: {row.get('error') or row.get('status')}"
    v = verdict(limits, Drift.from_dict(row["drift"]))
    if not v.passed:
        return "drift", "clinical gate: " + "; ".join(ch.detail for ch in v.failed)
    lat, mem = c["median_ms"], c["peak_rss_mb"]
    if profile.latency_budget_ms is not None and (lat is None or lat > profile.latency_budget_ms):
        return (
            "budget",
            f"median latency {lat} ms over the profile's {profile.latency_budget_ms} ms",
        )
    if profile.memory_budget_mb is not None and (mem is None or mem > profile.memory_budget_mb):
        return "budget", f"peak RSS {mem} MB over the profile's {profile.memory_budget_mb} MB"
    return None, None


def select_device(name: str, cands: list[dict], rule: SelectRule, allow_proxy: bool) -> dict:
    """The answer for one device from its screened candidates (each gets its outcome)."""
    fit = [c for c in cands if c["outcome"] is None]
    on_device = [c for c in fit if c["on_device"]]
    proxy = None
    if on_device or not allow_proxy:
        for c in fit:
            if not c["on_device"]:
                c["outcome"], c["reason"] = (
                    "elsewhere",
                    f"not measured on {name} ({c['measured_on']})",
                )
        fit = on_device
    elif fit:
        proxy = sorted({c["measured_on"] for c in fit})
    base = {"candidates": cands, "rule": rule.to_dict(), "proxy": proxy}
    if not fit:
        return {**base, **_none(name, cands)}
    best_auc = max(c["auc"] for c in fit)
    floor = best_auc - rule.margin
    for c in fit:
        if c["auc"] < floor - 1e-12:
            c["outcome"] = "accuracy"
            c["reason"] = (
                f"AUC {c['auc']:.4f} below the best {best_auc:.4f} - margin {rule.margin:g}"
            )
    kept = [c for c in fit if c["outcome"] is None]
    key = OBJECTIVES[rule.objective][1]
    ranked = sorted(kept, key=lambda c: (_num(c[key]), -c["auc"]))
    chosen = ranked[0]
    chosen["outcome"], chosen["reason"] = "chosen", None
    for c in ranked[1:]:
        c["outcome"] = "slower" if rule.objective == "latency" else "larger"
        c["reason"] = f"{OBJECTIVES[rule.objective][2]} {c[key]} vs the chosen {chosen[key]}"
    return {
        **base,
        "artifact": chosen["artifact"],
        "label": chosen["label"],
        "auc": chosen["auc"],
        "median_ms": chosen["median_ms"],
        "best_auc": best_auc,
        "auc_floor": floor,
        "measured": "proxy" if proxy else "device",
        "reason": None,
    }


def _num(v: float | None) -> float:
    return float("inf") if v is None else v


def _none(name: str, cands: list[dict]) -> dict:
    if any(c["outcome"] == "elsewhere" for c in cands):
        reason = f"not measured on {name}"
    elif cands:
        reason = "no candidate passes the clinical gate and the profile's budgets"
    else:
        reason = "no candidate was benched"
    return {"artifact": None, "label": None, "measured": None, "reason": reason}


def device_profiles(targets: tuple[str, ...]) -> dict[str, list[Profile]]:
    """The plan's target profiles grouped by the device they run on."""
    out: dict[str, list[Profile]] = {}
    for t in targets:
        p = resolve_target(t)
        out.setdefault(p.device_name, []).append(p)
    return out


def select(
    targets: tuple[str, ...], results: dict, limits: Limits, rule: SelectRule, allow_proxy: bool
) -> dict[str, dict]:
    """Per device: every candidate with its outcome, and the chosen artifact (or why none)."""
    devices = device_profiles(targets)
    by_profile = {p.name: p for ps in devices.values() for p in ps}
    cands: dict[str, list[dict]] = {name: [] for name in devices}
    for row in results["rows"]:
        if row.get("kind", "artifact") != "artifact":
            continue
        profile = by_profile.get(row_profile(row))
        if profile is None:
            continue
        where = row_where(row, results.get("device") or {})
        cands[profile.device_name].append(candidate(row, profile, where, limits))
    return {
        name: {
            "profiles": [p.name for p in devices[name]],
            "runtimes": sorted({p.runtime for p in devices[name]}),
            **select_device(name, cands[name], rule, allow_proxy),
        }
        for name in devices
    }
