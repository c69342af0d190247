"""Write one section of BENCHMARKS.md (between its '## ' heading and the next), leaving others alone."""

from __future__ import annotations

import os
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def replace_section(heading_prefix: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the body under the first heading starting with `heading_prefix` (re-read just now)."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("## " + heading_prefix))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    new = lines[: start + 1] + ["", body.strip(), ""] + lines[end:]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(new).rstrip() + "\n")
    tmp.replace(path)


def table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def dataset(name: str) -> Path:
    """A shared dataset through edgemed's one resolver; exits with its reason when absent."""
    from edgemed.data.locate import find_dataset, missing_reason

    path = find_dataset(name)
    if path is None:
        raise SystemExit(f"benchmark needs data: {missing_reason(name)}")
    return path
