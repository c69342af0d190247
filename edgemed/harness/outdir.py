"""The bench output directory: refuse an existing one unless --resume (same settings) or --force,
and keep finished rows in DIR/results.jsonl, one JSON line each, flushed as each row finishes."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgemed.errors import InputError
from edgemed.fileio import read_json, read_jsonl, write_json_atomic, writing

JSONL, SETTINGS = "results.jsonl", "bench.json"
RESUME_FIELDS = ("data_hash", "split", "threads", "batch")


def prepare_out(out: Path, req, settings: dict) -> tuple[dict[str, dict], Path | None]:
    """Refuse an existing DIR unless --resume (same settings) or --force; returns finished rows."""
    replaced = None
    if out.exists():
        if req.resume:
            return resumable_rows(out, req, settings), None
        if not req.force:
            raise InputError(
                f"output {out} already exists; pass --resume to continue it, --force to replace it, "
                "or choose another --out"
            )
        replaced = out.with_name(f".{out.name}.replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        with writing(out):
            out.rename(replaced)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.mkdir()  # the atomic claim: of two concurrent runs, one gets FileExistsError
        except FileExistsError:
            raise InputError(
                f"output {out} was created by another process meanwhile; choose another --out"
            ) from None
        (out / "logits").mkdir()
        (out / "references").mkdir()
    write_json_atomic(out / SETTINGS, settings)
    return {}, replaced


def resumable_rows(out: Path, req, settings: dict) -> dict[str, dict]:
    if not (out / SETTINGS).is_file():
        raise InputError(
            f"{out} is not an `edgemed bench` output (no {SETTINGS}); choose another --out"
        )
    old = read_json(out / SETTINGS, "bench settings")
    for key in RESUME_FIELDS:
        if old.get(key) != settings[key]:
            raise InputError(
                f"cannot resume {out}: it was run with {key}={old.get(key)!r}, now {settings[key]!r}; "
                "use the same settings, or --force to start over"
            )
    rows = read_rows(out / JSONL)
    if req.retry_failed:
        rows = {k: r for k, r in rows.items() if r["status"] == "ok"}
    return rows


def read_rows(path: Path) -> dict[str, dict]:
    """Finished rows by key; a torn last line (killed while writing) is cut off the file."""
    rows: dict[str, dict] = {}
    for n, row in enumerate(read_jsonl(path, repair=True), 1):
        if not isinstance(row.get("key"), str) or "status" not in row:
            raise InputError(
                f"{path} line {n} is not a bench row (no 'key'/'status'); the file was edited "
                "or damaged: fix or delete that line, or pass --force to start over"
            )
        rows[row["key"]] = row
    return rows
