"""Bench results for people: a side-by-side terminal table and a self-contained HTML report
(inline SVG: latency vs AUC with the Pareto front, latency distributions, reliability diagrams,
confusion matrices). Both read only the results.json document."""

from __future__ import annotations

from html import escape

from edgemed.harness.svg import Axes, color, padded

COLUMNS = (
    "config",
    "status",
    "AUC",
    "AUC drop",
    "AUC drop 95% CI",
    "DeLong p",
    "flips b/d",
    "sens",
    "sens drop",
    "spec",
    "spec drop",
    "ECE",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "load ms",
    "dRSS MB",
    "size KB",
    "INT8 ops",
)
# What the columns mean, printed under the table (AUC drop: positive = worse than FP32).
LEGEND = (
    "AUC drop = FP32 reference AUC - this AUC (positive = worse); flips b/d = decisions changed "
    "vs FP32, borderline (FP32 within the band of the threshold) / decisive; =ref: the artifact "
    "is its own reference (an FP32 export of a source ONNX), so there is no drift to show; "
    "INT8 ops = compute ops in INT8 / all compute ops, counted in the artifact's file"
)


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def row_cells(row: dict) -> list[str]:
    """One table row as strings (dashes where a number does not apply or was not measured)."""
    d, lat, mem = row.get("drift") or {}, row.get("latency") or {}, row.get("memory") or {}
    ci = d.get("auc_drop_ci95")
    flips = f"{d['borderline_flips']}/{d['decisive_flips']}" if d else "-"
    if row.get("reference_is_self"):  # compared with itself: 0 by construction, not measured
        d = {k: v for k, v in d.items() if k in ("auc_candidate", "sensitivity", "specificity")}
        ci, flips = None, "=ref"
    return [
        row["label"],
        row["status"],
        _f(d.get("auc_candidate"), ".4f"),
        _f(d.get("auc_drop"), "+.4f"),
        f"[{ci[0]:+.4f},{ci[1]:+.4f}]" if ci else "-",
        _f(d.get("delong_p"), ".3f"),
        flips,
        _f(d.get("sensitivity"), ".3f"),
        _f(d.get("sens_drop"), "+.3f"),
        _f(d.get("specificity"), ".3f"),
        _f(d.get("spec_drop"), "+.3f"),
        _f(d.get("ece"), ".3f"),
        _f(lat.get("median_ms"), ".3f"),
        _f(lat.get("p90_ms"), ".3f"),
        _f(lat.get("p99_ms"), ".3f"),
        _f(lat.get("load_ms"), ".1f"),
        _f(mem.get("peak_rss_delta_mb"), ".1f"),
        _f(mem["model_bytes"] / 1024 if mem.get("model_bytes") else None, ".0f"),
        row.get("int8_ops") or "-",
    ]


def terminal_table(results: dict) -> str:
    """The side-by-side table with a header line naming the device, data, load and gates."""
    rows = [list(COLUMNS)] + [row_cells(r) for r in results["rows"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [_head(results)]
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(_foot(results))
    return "\n".join(lines)


def _head(results: dict) -> str:
    dev, data = results["device"], results["data"]
    s = results["settings"]
    return (
        f"{dev['cpu']['model']} ({dev['cores']} cores; {' '.join(dev['cpu']['flags'])}); load average "
        f"{_load(dev.get('load_average_start'))} -> {_load(dev.get('load_average_end'))}\n"
        f"data {data['path']} [{data['split']}, n={data['n']}]; latency at batch {s['batch']}, "
        f"{s['threads']} thread(s); accuracy at each artifact's eval batch (dynamic INT8: 1, as "
        f"its manifest states); drift vs FP32 reference\n{LEGEND}"
    )


def _load(load) -> str:
    return "n/a" if not load else f"{load[0]:.2f}"


def _foot(results: dict) -> str:
    g = results["gates"]
    set_ = {k: v for k, v in g.items() if k.startswith("max_") and v is not None}
    lines = []
    if results["device"].get("busy_warning"):
        lines.append(f"warning: {results['device']['busy_warning']}")
    if set_:
        verdict = "passed" if g["passed"] else "FAILED: " + "; ".join(g["violations"])
        lines.append(f"gates {', '.join(f'{k}={v:g}' for k, v in set_.items())}: {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML


def html_report(results: dict) -> str:
    """A single self-contained HTML page (no scripts, no external resources)."""
    ok = [r for r in results["rows"] if r["status"] == "ok"]
    sections = [
        _html_summary(results),
        _section("Latency vs AUC (Pareto front)", pareto_svg(ok)),
        _section("Latency distributions (timed runs)", latency_svg(ok)),
        _section("Reliability diagrams (candidate, 10 bins)", _grid(reliability_svgs(ok))),
        _section("Confusion matrices at the operating threshold", _grid(confusion_tables(ok))),
    ]
    style = (
        "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;"
        "gap:16px}.bad{color:#b00}.warn{background:#fff3cd;padding:6px}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgemed bench</title>"
        f"<style>{style}</style></head><body><h1>edgemed bench</h1>{''.join(sections)}</body></html>\n"
    )


def _section(title: str, body: str) -> str:
    return f"<h2>{escape(title)}</h2>{body or '<p>no successful rows</p>'}"


def _grid(items: list[str]) -> str:
    return f"<div class='grid'>{''.join(items)}</div>" if items else ""


def _html_summary(results: dict) -> str:
    head = escape(_head(results)).replace("\n", "<br>")
    warn = results["device"].get("busy_warning")
    foot = escape(_foot(results)).replace("\n", "<br>")
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{escape(c)}</td>" for c in row_cells(r))
        + "</tr>"
        + (
            f"<tr><td colspan='{len(COLUMNS)}' class='bad'>{escape(r['error'])}</td></tr>"
            if r["error"]
            else ""
        )
        for r in results["rows"]
    )
    table = f"<table><tr>{''.join(f'<th>{c}</th>' for c in COLUMNS)}</tr>{rows}</table>"
    return (
        f"<p>{head}<br>created {escape(results['created'])}</p>"
        + (f"<p class='warn'>{escape(warn)}</p>" if warn else "")
        + table
        + (f"<p>{foot}</p>" if foot else "")
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both (lower latency x, higher AUC y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_svg(rows: list[dict]) -> str:
    pts = [
        (r["latency"]["median_ms"], r["drift"]["auc_candidate"], r["label"])
        for r in rows
        if r.get("latency") and r["drift"].get("auc_candidate") is not None
    ]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    logx = max(xs) / max(min(xs), 1e-9) > 8
    xlim = (min(xs) / 1.3, max(xs) * 1.3) if logx else padded(min(xs), max(xs))
    ax = Axes(xlim, padded(min(ys), max(ys), 0.2), "median latency per call (ms)", "AUC", logx=logx)
    front = pareto_front([(x, y) for x, y, _ in pts])
    ax.line([(pts[i][0], pts[i][1]) for i in front], stroke="#999", dash="5,4")
    for i, (x, y, label) in enumerate(pts):
        ax.dot(x, y, color(i), 5.5 if i in front else 4.0, f"{label}: {x:.3f} ms, AUC {y:.4f}")
        right = ax.px(x) > ax.w * 0.7
        ax.text(
            ax.px(x) + (-7 if right else 7),
            ax.py(y) - 6,
            label + (" *" if i in front else ""),
            anchor="end" if right else "start",
            size=10,
        )
    return (
        ax.svg()
        + "<p>* on the Pareto front (no other configuration is both faster and more accurate)</p>"
    )


def latency_svg(rows: list[dict]) -> str:
    series = [
        (r["label"], r["latency"].get("quantiles_ms") or []) for r in rows if r.get("latency")
    ]
    series = [(n, q) for n, q in series if q]
    if not series:
        return ""
    lo = min(q[0] for _, q in series)
    hi = max(q[-1] for _, q in series)
    ax = Axes(
        (lo / 1.2, hi * 1.2), (0, 100), "latency per call (ms, log scale)", "percentile", logx=True
    )
    step = 100 / (len(series[0][1]) - 1)
    for i, (_, q) in enumerate(series):
        ax.line([(v, k * step) for k, v in enumerate(q)], stroke=color(i))
    ax.legend([(name, color(i)) for i, (name, _) in enumerate(series)])
    return ax.svg() + "<p>cumulative distribution of the timed calls (after warm-up)</p>"


def _blocks(row: dict) -> list[tuple[str, dict]]:
    d = row["drift"]
    if d.get("per_label"):
        return [(f"{row['label']} / {p['label']}", p) for p in d["per_label"]]
    return [(row["label"], {**d, **(d.get("details") or {})})]


def reliability_svgs(rows: list[dict]) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        for title, d in _blocks(row):
            ax = Axes(
                (0, 1), (0, 1), "mean predicted probability", "observed positive rate", 280, 260
            )
            ax.line([(0, 0), (1, 1)], stroke="#aaa", dash="4,3")
            pts = [(b["mean_p"], b["frac_pos"]) for b in d["reliability"] if b["n"]]
            ax.line(pts, stroke=color(i))
            for b in d["reliability"]:
                if b["n"]:
                    ax.dot(b["mean_p"], b["frac_pos"], color(i), 3.5, f"n={b['n']}")
            ax.text(62, 24, f"{title}  ECE {d['ece']:.3f}", size=10)
            out.append(f"<div>{ax.svg()}</div>")
    return out


def confusion_tables(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        for title, d in _blocks(row):
            c, r = d["confusion"], d.get("confusion_reference") or {}

            def cell(k: str, c=c, r=r) -> str:
                return f"<td>{c[k]}<br><small>ref {r.get(k, '-')}</small></td>"

            out.append(
                f"<div><b>{escape(title)}</b> (threshold {d['threshold']:.3f})<table>"
                "<tr><th></th><th>predicted negative</th><th>predicted positive</th></tr>"
                f"<tr><th>actual negative</th>{cell('tn')}{cell('fp')}</tr>"
                f"<tr><th>actual positive</th>{cell('fn')}{cell('tp')}</tr></table></div>"
            )
    return out
