"""`edgemed monitor SPOOL --out DIR`: the surveillance report from what the service kept.

Reads the spool's results (`results/*.json`, with each image's domain verdict, scores and
probabilities), its domain refusals (`refused/*.json` of kind `domain_refused`) and the drift
alarms in the audit log, in the order the service wrote them, and writes `surveillance.json` and
a self-contained `surveillance.html` with timelines of the domain score, the positive rate and
the flags, alarms marked.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np

from edgemed.errors import InputError
from edgemed.harness.svg import Axes

ROLLING = 50
MAX_RECORD_BYTES = 1 << 20


def _read(path: Path) -> dict | None:
    if path.stat().st_size > MAX_RECORD_BYTES:
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError):
        return None


def spool_records(spool: Path) -> list[dict]:
    """Results and domain refusals, oldest first (by the time the service wrote them)."""
    if not (spool / "results").is_dir():
        raise InputError(f"{spool} is not an edgemed serve spool (no results/); pass the SPOOL dir")
    files = [*(spool / "results").glob("*.json"), *(spool / "refused").glob("*.json")]
    out = []
    for f in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name)):
        rec = _read(f)
        if rec is None or (f.parent.name == "refused" and rec.get("kind") != "domain_refused"):
            continue
        out.append(rec if f.parent.name == "results" else {**rec, "status": "refused",
                                                           "domain": "out"})  # fmt: skip
    return out


def audit_alarms(audit: Path) -> list[dict]:
    """The `drift_alarm` entries of the audit log (absent log: none)."""
    if not audit.is_file():
        return []
    entries = []
    for line in audit.read_text(errors="replace").splitlines():
        if '"drift_alarm"' not in line:
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:  # `edgemed audit verify` is the check of the log itself
            continue
    return [e for e in entries if isinstance(e, dict) and e.get("event") == "drift_alarm"]


def summarize(records: list[dict], alarms: list[dict]) -> dict:
    """Counts, per-image timeline and alarms: the JSON half of the report."""
    domains = [r.get("domain", "unknown") for r in records]
    timeline = [
        {
            "i": i,
            "domain": d,
            "status": r.get("status", "ok"),
            "scores": r.get("domain_scores"),
            "thresholds": r.get("domain_thresholds"),
            "positive": r.get("positive"),
            "decision": r.get("decision"),
        }
        for i, (r, d) in enumerate(zip(records, domains, strict=True))
    ]
    return {
        "format": "edgemed-surveillance/1",
        "images": len(records),
        "domain": {k: domains.count(k) for k in ("in", "out", "unknown")},
        "refused": sum(r.get("status") == "refused" for r in records),
        "alarms": alarms,
        "timeline": timeline,
    }


def _ratio(t: dict) -> float | None:
    s, th = t.get("scores") or {}, t.get("thresholds") or {}
    vals = [s[k] / th[k] for k in th if s.get(k) is not None and th[k] > 0]
    return max(vals) if vals else None


def _plots(doc: dict) -> list[str]:

    tl = doc["timeline"]
    n = max(len(tl), 1)
    ratios = [(t["i"], min(_ratio(t) or 0.0, 20.0)) for t in tl if _ratio(t) is not None]
    a = Axes((0, n), (0, 20), "image", "domain score / threshold (capped at 20)")
    a.line([(0, 1), (n, 1)], stroke="#888", dash="4 3")
    for i, v in ratios:
        a.dot(i, v, "#d62728" if v > 1 else "#1f77b4", r=2)
    pos = np.array([1.0 if t["positive"] else 0.0 for t in tl if t["positive"] is not None])
    b = Axes((0, n), (0, 1), "image", f"positive rate (rolling {ROLLING})")
    if len(pos) >= ROLLING:
        roll = np.convolve(pos, np.ones(ROLLING) / ROLLING, mode="valid")
        b.line([(i + ROLLING, float(v)) for i, v in enumerate(roll)], stroke="#2ca02c")
    flags = np.cumsum([t["domain"] == "out" for t in tl]) if tl else np.zeros(1)
    c = Axes((0, n), (0, max(1, int(flags[-1]))), "image", "images outside the domain (cumulative)")
    c.line([(i, int(v)) for i, v in enumerate(flags)], stroke="#d62728")
    for ax in (a, b, c):
        for al in doc["alarms"]:
            x = min(int(al.get("seen", 0)), n)
            ax.line([(x, ax.y0), (x, ax.y1)], stroke="#ff7f0e", width=1, dash="2 2")
    return [a.svg(), b.svg(), c.svg()]


def write_report(spool: Path, audit: Path, out: Path) -> dict:
    """Write surveillance.json and surveillance.html into `out` (a fresh dir); returns the JSON."""
    doc = summarize(spool_records(spool), audit_alarms(audit))
    (out / "surveillance.json").write_text(json.dumps(doc, indent=1) + "\n")
    rows = "".join(
        f"<tr><td>{escape(str(a.get('time', '')))}</td><td>{escape(str(a.get('statistic')))}</td>"
        f"<td>{a.get('seen')}</td><td>{float(a.get('p_value', 1)):.2g}</td></tr>"
        for a in doc["alarms"]
    )
    d = doc["domain"]
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgemed surveillance</title>"
        "</head><body style='font-family:sans-serif'><h1>Surveillance report</h1>"
        f"<p>{doc['images']} images: {d['in']} inside the validated domain, {d['out']} outside, "
        f"{d['unknown']} unknown; {doc['refused']} refused; {len(doc['alarms'])} drift alarms."
        "</p>"
        + "".join(f"<div>{s}</div>" for s in _plots(doc))
        + "<h2>Drift alarms</h2><table border='1'><tr><th>time</th><th>statistic</th>"
        f"<th>after image</th><th>p</th></tr>{rows}</table></body></html>\n"
    )
    (out / "surveillance.html").write_text(html)
    return doc
