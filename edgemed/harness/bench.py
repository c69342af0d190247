"""`edgemed bench`: every artifact on this device, side by side against its FP32 reference.

Each configuration runs in its own fresh process (edgemed.harness.worker) under a timeout; each
finished row is appended to DIR/results.jsonl at once, so a crash, a hang or an interrupted run
loses nothing and `--resume` skips what is done. At the end DIR/results.json and DIR/report.html
are written atomically and the gates are checked.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgemed.data.overlap import overlap_warning
from edgemed.errors import DriftError, EdgemedError, InputError
from edgemed.evaluation.drift import Drift
from edgemed.evaluation.group_sources import parse_dicom_spec
from edgemed.evaluation.limits import BENCH_DEFAULTS, Limits, limits_from, verdict
from edgemed.executors import check_available, parse_executor
from edgemed.fileio import (
    append_jsonl,
    private_tempdir,
    write_bytes_atomic,
    write_json_atomic,
    writing,
)
from edgemed.harness.device import device_info, load_average
from edgemed.harness.distributed import run_rows_on_cluster
from edgemed.harness.outdir import JSONL, prepare_out
from edgemed.harness.plan import Config, Plan, build_plan
from edgemed.harness.report import html_report
from edgemed.harness.rows import reference_logits, row_summary, run_row
from edgemed.harness.subgroups import add_subgroups, read_groups
from edgemed.progress import Progress
from edgemed.provenance import provenance

FORMAT = "edgemed-bench/1"
RESULTS, REPORT = "results.json", "report.html"


class BenchFailed(EdgemedError):
    """Some configurations crashed, hung or failed; the others' rows are kept."""


@dataclass(frozen=True)
class BenchRequest:
    """Everything `edgemed bench` was asked to do."""

    artifacts: tuple[str, ...]
    data: str
    out: Path
    split: str = "test"
    threads: int = 1
    batch: int = 1
    timeout: float = 600.0
    limits_given: tuple[tuple[str, float | None], ...] = ()  # metric key -> --flag value
    resume: bool = False
    force: bool = False
    retry_failed: bool = False
    include_reference: bool = False
    seconds: float = 3.0
    min_runs: int = 100
    n_boot: int = 1000
    groups: str | None = None  # --groups FILE.csv (edgemed.evaluation.groups)
    gate_per_group: bool = False
    executor: str = "local"  # or "ray" / "ray:HOST:PORT" (edgemed.executors)
    workers: int | None = None

    def __post_init__(self) -> None:
        self.executor_spec()  # refuses an unknown executor now
        for name in ("threads", "batch", "min_runs"):
            if getattr(self, name) < 1:
                raise InputError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.timeout <= 0 or self.seconds <= 0:
            raise InputError("--timeout and --seconds must be positive")
        self.limits()  # refuses a bad value now, before any work
        if self.resume and self.force:
            raise InputError("--resume and --force contradict each other; pass one of them")
        if self.gate_per_group and not (self.groups and self.limits().items):
            raise InputError(
                "--gate-per-group needs --groups FILE and at least one limit (--max-auc-drop, "
                "--min-sens, ...) to apply to each group"
            )
        if self.groups and self.groups.startswith("dicom:"):
            parse_dicom_spec(self.groups)  # an unknown attribute keyword is refused now

    def executor_spec(self):

        spec = parse_executor(self.executor, self.workers)
        check_available(spec)
        return spec

    def limits(self) -> Limits:
        return limits_from(dict(self.limits_given), BENCH_DEFAULTS)

    def latency_settings(self) -> dict:
        return {
            "warmup_runs": 10,
            "warmup_seconds": 1.0,
            "min_runs": self.min_runs,
            "min_seconds": self.seconds,
        }


def run_bench(req: BenchRequest, progress: bool = True) -> dict:
    """Plan (refusing bad input), run what is not done yet, write results and report."""

    plan = build_plan(
        req.artifacts, req.data, req.split, req.threads, req.batch, req.include_reference
    )
    tables = read_groups(
        req.groups, plan
    )  # a bad groups file is refused before anything is written
    out = Path(req.out)
    settings = _settings(req, plan)
    done, replaced = prepare_out(out, req, settings)
    device = device_info()
    _warn_overlap(plan)
    if device["busy_warning"]:
        print(f"edgemed: warning: {device['busy_warning']}", file=sys.stderr)
    todo = [c for c in plan.configs if c.key not in done]
    tmp = private_tempdir("edgemed-bench-")  # also removes those of killed runs
    try:
        with writing(tmp):
            _run_rows(req, plan, todo, out, tmp, done, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = assemble_results(req, plan, done, device, settings, tables)
    write_outputs(out, results)
    if replaced:
        shutil.rmtree(replaced, ignore_errors=True)
    return results


def _warn_overlap(plan: Plan) -> None:

    for ev in plan.data.values():
        line = overlap_warning(ev.ref["split_overlap"], ev.ref["path"], ev.ref["split"])
        if line:
            print(f"edgemed: warning: {line}; results.json records it", file=sys.stderr)
            return


def _settings(req: BenchRequest, plan: Plan) -> dict:
    first = next(iter(plan.data.values()))
    return {
        "format": FORMAT,
        "data_path": first.ref["path"],
        "data_hash": first.ref["data_hash"],
        "split": req.split,
        "threads": req.threads,
        "batch": req.batch,
        "timeout_s": req.timeout,
        "latency": req.latency_settings(),
    }


def _run_rows(req, plan: Plan, todo: list[Config], out: Path, tmp: Path, done, progress) -> None:

    if not todo:
        return
    for key, ev in plan.data.items():
        np.savez(tmp / f"data-{key}.npz", images=ev.images, labels=ev.labels)
    needed = {c.reference.key: c.reference for c in todo}
    bar = Progress(len(todo) + len(needed), "bench", stream=None if progress else _Null())
    refs = {}
    for ref in needed.values():
        refs[ref.key] = reference_logits(ref, plan, out, tmp, req.timeout)
        bar.advance(1, f"reference {ref.kind} {ref.path.name}")

    def record(row: dict) -> None:
        append_jsonl(out / JSONL, row)
        done[row["key"]] = row
        bar.advance(1)
        bar.note(row_summary(row))

    if req.executor_spec().kind == "local":
        for cfg in todo:
            record(run_row(req, cfg, plan.data[cfg.data_key], refs[cfg.reference.key], out, tmp))
    else:  # artifact rows on the devices offering their target profile (edgemed.executors)
        run_rows_on_cluster(req, plan, todo, (out, tmp), refs, record)
    bar.close()


class _Null:
    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def assemble_results(
    req: BenchRequest, plan: Plan, done: dict, device: dict, settings: dict, tables: dict
) -> dict:
    """The results.json document (schema edgemed-bench/1)."""

    rows = [dict(done[c.key]) for c in plan.configs if c.key in done]
    first = next(iter(plan.data.values()))
    limits = req.limits()
    violations = gate_violations(limits, rows) + add_subgroups(req, plan, rows, tables)
    gates = {**limits.to_dict(), "per_group": req.gate_per_group, "violations": violations}
    gates["passed"] = not gates["violations"]
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {**device, "load_average_end": load_average()},
        "data": dict(first.ref),
        "data_groups": [dict(ev.ref, key=k) for k, ev in plan.data.items()],
        "gates": gates,
        "subgroups": next(iter(tables.values())).to_dict() if tables else None,
        "settings": settings,
        "rows": rows,
        "provenance": provenance(config=_request_dict(req)),
    }


def _request_dict(req: BenchRequest) -> dict:
    d = asdict(req)
    d["out"], d["artifacts"] = str(req.out), list(req.artifacts)
    return d


def gate_violations(limits: Limits, rows: list[dict]) -> list[str]:
    """One line per artifact x limit failed (and per unfinished row when any limit is set)."""
    out = []
    for row in rows if limits.items else []:
        if row["status"] != "ok":
            out.append(f"{row['label']}: {row['status']}, nothing to check against the gates")
            continue
        v = verdict(limits, Drift.from_dict(row["drift"]))
        out += [f"{row['label']}: {c.detail}" for c in v.failed]
    return out


def write_outputs(out: Path, results: dict) -> None:

    write_json_atomic(out / RESULTS, results)
    write_bytes_atomic(out / REPORT, html_report(results).encode())


def enforce(results: dict, out: Path) -> None:
    """Exit non-zero: gate violations (DriftError) first, else failed configurations."""
    gates = results["gates"]
    if gates["violations"]:
        raise DriftError(
            "bench gate failed: "
            + "; ".join(gates["violations"])
            + f" (details in {out / REPORT})",
            {"violations": gates["violations"]},
        )
    failed = [r for r in results["rows"] if r["status"] != "ok"]
    if failed:
        names = "; ".join(f"{r['label']}: {r['status']} ({r['error']})" for r in failed)
        raise BenchFailed(
            f"{len(failed)} of {len(results['rows'])} configurations failed ({names}); the other rows "
            f"are in {out / RESULTS}; fix them and re-run with --resume --retry-failed"
        )
