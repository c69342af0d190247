"""The release gate: a bundle ships only with bench evidence that this exact artifact still performs.

Evidence = an `edgemed bench` report (DIR/results.json, format edgemed-bench/1) holding at least one
`ok` row whose `artifact_manifest_sha256` is the SHA-256 of this artifact's manifest.json bytes.
Every such row is checked with the evaluation core's `verdict` against the limits in force (by
default drift ceilings plus a reference better than chance); a check fails if any row fails it. A missing or
unreadable report is always refused (there is nothing to put in the bundle); failed checks are
refused unless the publisher overrides with a reason, which is then signed into the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edgemed.errors import DriftError, InputError
from edgemed.evaluation.drift import Drift
from edgemed.evaluation.limits import BUNDLE_DEFAULTS, Limits, limits_from, verdict
from edgemed.fileio import read_json, sha256_file

BENCH_FORMAT = "edgemed-bench/1"
RESULTS_NAME = "results.json"
REPORT_HTML = "report.html"


@dataclass(frozen=True)
class GateCheck:
    """One check: a drift metric against its limit, or the presence of an ok bench row."""

    name: str
    passed: bool
    detail: str
    value: float | None = None
    limit: float | None = None


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided and why; recorded verbatim in the signed bundle manifest."""

    decision: str  # "passed" or "overridden"
    checks: tuple[GateCheck, ...]
    limits: dict
    override_reason: str | None
    report: dict

    @property
    def failed(self) -> tuple[GateCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "limits": dict(self.limits),
            "checks": [asdict(c) for c in self.checks],
            "failed": [c.detail for c in self.failed],
            "override_reason": self.override_reason,
            "report": dict(self.report),
        }


def gate_limits(given: dict[str, float | None]) -> Limits:
    """The limits in force: given values over the bundle defaults (BUNDLE_DEFAULTS)."""
    return limits_from(given, BUNDLE_DEFAULTS)


def read_bench_report(report_dir: Path) -> dict:
    """DIR/results.json from `edgemed bench`, checked for its format; missing -> InputError."""
    report_dir = Path(report_dir)
    results = report_dir / RESULTS_NAME
    if not results.is_file():
        raise InputError(
            f"no bench report at {results}; the release gate needs one: run "
            f"`edgemed bench ARTIFACT_DIR --data DATA --out {report_dir}` first"
        )
    doc = read_json(results, "bench report")
    if doc.get("format") != BENCH_FORMAT or not isinstance(doc.get("rows"), list):
        raise InputError(
            f"{results} is not an `edgemed bench` report ({BENCH_FORMAT}); re-run `edgemed bench`"
        )
    return doc


def release_gate(
    report_dir: Path,
    artifact_dir: Path,
    limits: Limits,
    override_reason: str | None,
) -> GateDecision:
    """Check the bench evidence for this artifact; refuse (DriftError/InputError) unless overridden."""
    doc = read_bench_report(report_dir)
    manifest_sha = sha256_file(Path(artifact_dir) / "manifest.json")
    rows = [r for r in doc["rows"] if r.get("artifact_manifest_sha256") == manifest_sha]
    ok_rows = [r for r in rows if r.get("status") == "ok" and isinstance(r.get("drift"), dict)]
    checks = [_row_check(rows, ok_rows, manifest_sha)]
    if ok_rows:
        checks += [_metric_check(key, ok_rows, limit) for key, limit in limits.items]
    report = {
        "results_sha256": sha256_file(Path(report_dir) / RESULTS_NAME),
        "rows_used": [r.get("label") for r in ok_rows],
        "artifact_manifest_sha256": manifest_sha,
        "device": {k: (doc.get("device") or {}).get(k) for k in ("cpu", "machine", "platform")},
        "created": doc.get("created"),
    }
    reason = _clean_reason(override_reason)
    failed = [c for c in checks if not c.passed]
    if failed and reason is None:
        _refuse(failed, artifact_dir, report_dir)
    decision = "overridden" if failed else "passed"
    return GateDecision(decision, tuple(checks), limits.to_dict(), reason, report)


def _row_check(rows: list[dict], ok_rows: list[dict], manifest_sha: str) -> GateCheck:
    if ok_rows:
        return GateCheck("bench_row", True, f"{len(ok_rows)} ok bench row(s) for this artifact")
    if rows:
        states = ", ".join(f"{r.get('status')} ({r.get('error')})" for r in rows)
        detail = f"the bench rows for this artifact did not finish: {states}"
    else:
        detail = (
            f"the bench report has no row for this artifact (manifest sha256 {manifest_sha[:12]})"
        )
    return GateCheck("bench_row", False, detail)


def _metric_check(key: str, ok_rows: list[dict], limit: float) -> GateCheck:
    """One limit over every ok row of this artifact: the worst row decides."""
    one = Limits(((key, limit),))
    checks = [verdict(one, Drift.from_dict(r["drift"])).checks[0] for r in ok_rows]
    failed = [c for c in checks if not c.passed]
    c = failed[0] if failed else checks[0]
    return GateCheck(key, not failed, c.detail, c.value, limit)


def _clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    text = " ".join(reason.split())
    if not text:
        raise InputError(
            "--override-gate needs a reason, e.g. --override-gate 'approved by QA-123'"
        )
    return text


def _refuse(failed: list[GateCheck], artifact_dir: Path, report_dir: Path) -> None:
    what = "; ".join(c.detail for c in failed)
    fix = (
        "re-export within the limits (or re-run `edgemed bench` on this artifact), or pass "
        "--override-gate REASON to bundle anyway (the reason is signed into the manifest)"
    )
    msg = f"release gate refused {artifact_dir}: {what} (bench report {report_dir}); {fix}"
    if any(c.name == "bench_row" for c in failed):
        raise InputError(msg)
    raise DriftError(msg, {c.name: c.value for c in failed})
