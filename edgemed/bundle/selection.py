"""`edgemed bundle --selection SWEEP --device NAME`: the artifact a sweep chose for a device, the
bench evidence that chose it, and the rule and candidates to sign into the bundle.

Only names are taken from selection.json: the artifact is looked up by folder name inside
SWEEP/artifacts and the evidence is SWEEP/bench, so a moved sweep folder still works and a
selection document cannot point the bundle at files outside the sweep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgemed.errors import InputError

SELECTION = "selection.json"
MAX_SELECTION_BYTES = 64 << 20  # a 1,000-candidate selection is ~2 MB


@dataclass(frozen=True)
class SweepChoice:
    """What a sweep chose for one device."""

    artifact: Path
    report: Path
    record: dict  # signed into the bundle manifest as `selection`


def read_selection(sweep: Path) -> dict:
    """SWEEP/selection.json, bounded and checked for its format."""
    path = Path(sweep) / SELECTION
    if not path.is_file():
        raise InputError(
            f"--selection {sweep}: no {SELECTION} there; give the --out of `edgemed sweep`"
        )
    if path.stat().st_size > MAX_SELECTION_BYTES:
        raise InputError(
            f"--selection {sweep}: {SELECTION} is over {MAX_SELECTION_BYTES >> 20} MiB"
        )
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"--selection {sweep}: {SELECTION} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != "edgemed-selection/2":
        raise InputError(
            f"--selection {sweep}: {SELECTION} is not an edgemed-selection/2 document; re-run the "
            "sweep with this edgemed (--resume keeps what it finished)"
        )
    return doc


def sweep_choice(sweep: Path, device: str) -> SweepChoice:
    """The chosen artifact and evidence for `device`; refused when the sweep chose none."""
    doc = read_selection(sweep)
    devices = doc.get("devices") or {}
    if device not in devices:
        raise InputError(
            f"--device {device!r} is not in {Path(sweep) / SELECTION}; its devices: "
            f"{', '.join(devices) or 'none'}"
        )
    pick = devices[device]
    if not pick.get("artifact"):
        raise InputError(f"the sweep chose nothing for {device}: {pick.get('reason')}")
    name = Path(str(pick["artifact"])).name
    artifact = Path(sweep) / "artifacts" / name
    if not name or name.startswith(".") or not artifact.is_dir():
        raise InputError(f"the chosen artifact {name!r} is not in {Path(sweep) / 'artifacts'}")
    return SweepChoice(artifact, Path(sweep) / "bench", selection_record(doc, device, pick))


def selection_record(doc: dict, device: str, pick: dict) -> dict:
    """The rule, where it was measured and a one-line summary per candidate."""
    return {
        "device": device,
        "profiles": pick.get("profiles"),
        "rule": doc.get("rule"),
        "gate": doc.get("gate"),
        "chosen": pick.get("label"),
        "best_auc": pick.get("best_auc"),
        "measured": pick.get("measured"),
        "proxy": pick.get("proxy"),
        "candidates": [
            {k: c.get(k) for k in ("label", "auc", "median_ms", "outcome", "reason")}
            for c in pick.get("candidates") or []
        ],
    }
