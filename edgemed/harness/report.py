"""Bench results for people: a side-by-side terminal table and a self-contained HTML report
(inline SVG: latency vs AUC with the Pareto front, latency distributions, reliability diagrams,
confusion matrices). Both read only the results.json document."""

from __future__ import annotations

from html import escape

from edgemed.evaluation.limits import METRICS, Metric
from edgemed.evaluation.pareto import pareto_front
from edgemed.harness.group_report import group_html
from edgemed.harness.label_report import per_label_html
from edgemed.harness.svg import Axes, color, padded

# The drift columns are the metric registry's (evaluation/limits.METRICS: one column per gateable
# metric, in its order, so a new gate is a new column); these frame them.
LEAD_COLUMNS = ("config", "status", "AUC")
TAIL_COLUMNS = (
    "AUC drop 95% CI", "DeLong p", "ECE", "accuracy", "p50 ms", "p90 ms", "p99 ms", "load ms",
    "dRSS MB", "size KB", "INT8 ops",
)  # fmt: skip
COLUMNS = LEAD_COLUMNS + tuple(m.column for m in METRICS.values()) + TAIL_COLUMNS
# What the columns mean, printed under the table (AUC drop: positive = worse than FP32).
LEGEND = (
    "AUC drop = FP32 reference AUC - this AUC (positive = worse); flips b/d = decisions changed "
    "vs FP32, borderline (FP32 within the band of the threshold) / decisive; AUC low / ref AUC "
    "low = lower 95% bound of this / the FP32 reference AUC; accuracy: binary at the threshold, "
    "multi-class top-1, multi-label exact match of every reported label; =ref: the artifact "
    "is its own reference (an FP32 export of a source ONNX), so there is no drift to show; "
    "INT8 ops = compute ops in INT8 / all compute ops, counted in the artifact's file"
)
MULTI_LEGEND = (
    "multi-label / multi-class: AUC = macro AUC over the labels evaluable on this split (the same "
    "labels on every row); every other drift cell is the worst evaluable label, named"
)


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def metric_cell(m: Metric, d: dict) -> str:
    """One registry metric's cell: the value (binary), or the worst evaluable label, named."""
    if m.key == "flip_rate":
        return f"{d['borderline_flips']}/{d['decisive_flips']}" if "decisive_flips" in d else "-"
    per = d.get("per_label")
    if not per or d.get("task") == "binary":
        return _f(_read(d.get(m.shown_field)), m.fmt)
    sign = 1 if m.kind == "max" else -1
    # the worst label by the gated number (m.field), showing its m.shown_field
    have = [p for p in per if p.get("evaluable", True) and _read(p.get(m.field)) is not None]
    if not have:
        return "-"
    worst = max(have, key=lambda p: sign * _read(p[m.field]))
    return f"{_f(_read(worst.get(m.shown_field)), m.fmt)} {worst['label']}"


def _read(v):
    return (v[0] if v else None) if isinstance(v, tuple | list) else v


def row_cells(row: dict) -> list[str]:
    """One table row as strings (dashes where a number does not apply or was not measured)."""
    d, lat, mem = row.get("drift") or {}, row.get("latency") or {}, row.get("memory") or {}
    ci = d.get("auc_drop_ci95")
    cells = [metric_cell(m, d) if d else "-" for m in METRICS.values()]
    if row.get("reference_is_self"):  # compared with itself: 0 by construction, not measured
        keep = ("min_auc", "min_sens", "min_spec")
        cells = [c if k in keep else "-" for k, c in zip(METRICS, cells, strict=True)]
        cells[list(METRICS).index("flip_rate")] = "=ref"
        ci, d = None, {k: v for k, v in d.items() if k in ("auc_candidate", "accuracy", "ece")}
    return [
        row["label"],
        row["status"],
        _f(d.get("auc_candidate"), ".4f"),
        *cells,
        f"[{ci[0]:+.4f},{ci[1]:+.4f}]" if ci else "-",
        _f(d.get("delong_p"), ".3f"),
        _f(d.get("ece"), ".3f"),
        _f(d.get("accuracy"), ".3f"),
        _f(lat.get("median_ms"), ".3f"),
        _f(lat.get("p90_ms"), ".3f"),
        _f(lat.get("p99_ms"), ".3f"),
        _f(lat.get("load_ms"), ".1f"),
        _f(mem.get("peak_rss_delta_mb"), ".1f"),
        _f(mem["model_bytes"] / 1024 if mem.get("model_bytes") else None, ".0f"),
        row.get("int8_ops") or "-",
    ]


def label_set_line(results: dict) -> str:
    """'' (binary) or the labels behind the macro AUC and those the split cannot evaluate."""
    d = next((r["drift"] for r in results["rows"] if (r.get("drift") or {}).get("per_label")), None)
    if not d or d.get("task") == "binary":
        return ""
    used = d.get("macro_labels") or []
    line = f"AUC = macro over the {len(used)} labels evaluable on this split: {', '.join(used)}"
    missing = d.get("not_evaluable") or []
    if missing:
        line += (
            f"; NOT evaluable (fewer than {d.get('min_per_class')} positive or negative images), "
            "no AUC, cannot pass a floor: "
            + ", ".join(f"{m['label']} ({m['positives']}+/{m['negatives']}-)" for m in missing)
        )
    sets = {tuple((r.get("drift") or {}).get("macro_labels") or ()) for r in results["rows"]
            if (r.get("drift") or {}).get("per_label")}  # fmt: skip
    if len(sets) > 1:  # artifacts exported with different --labels: say so, row by row
        line += "; WARNING: the rows report different labels, so their AUCs do not compare: " + (
            "; ".join(f"{r['label']}: {', '.join(r['drift'].get('macro_labels') or [])}"
                      for r in results["rows"] if (r.get("drift") or {}).get("per_label")))  # fmt: skip
    return f"{MULTI_LEGEND}\n{line}"


def node_cell(row: dict) -> str:
    """Where a row ran on a cluster: target profile @ host / Ray node id (short)."""
    n = row.get("node") or {}
    return f"{n.get('target', '-')}@{n.get('hostname', '?')}/{(n.get('node_id') or '')[:8]}"


def table_columns(results: dict) -> tuple[str, ...]:
    """COLUMNS, plus a device column when rows ran on a Ray cluster (--executor ray)."""
    return COLUMNS + (("device",) if any(r.get("node") for r in results["rows"]) else ())


def table_cells(row: dict, columns: tuple[str, ...]) -> list[str]:
    cells = row_cells(row)
    return cells + [node_cell(row)] if len(columns) > len(COLUMNS) else cells


def terminal_table(results: dict) -> str:
    """The side-by-side table with a header line naming the device, data, load and gates."""
    cols = table_columns(results)
    rows = [list(cols)] + [table_cells(r, cols) for r in results["rows"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
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
    ) + (f"\n{labels}" if (labels := label_set_line(results)) else "")


def _load(load) -> str:
    return "n/a" if not load else f"{load[0]:.2f}"


def _foot(results: dict) -> str:
    g = results["gates"]
    set_ = {k: v for k, v in g.items() if k.startswith(("max_", "min_")) and v is not None}
    lines = []
    if results["device"].get("busy_warning"):
        lines.append(f"warning: {results['device']['busy_warning']}")
    if set_:
        verdict = "passed" if g["passed"] else "FAILED: " + "; ".join(g["violations"])
        each = " (also on each group)" if g.get("per_group") else ""
        lines.append(f"gates {', '.join(f'{k}={v:g}' for k, v in set_.items())}{each}: {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML


def html_report(results: dict) -> str:
    """A single self-contained HTML page (no scripts, no external resources)."""
    ok = [r for r in results["rows"] if r["status"] == "ok"]
    sections = [
        _html_summary(results),
        _section("Latency vs AUC (Pareto front)", pareto_svg(ok)),
        _section("Latency distributions (timed runs)", latency_svg(ok)),
        _section(
            "Reliability diagrams (candidate, 10 bins; numbers: images per bin)",
            _grid(reliability_svgs(ok)),
        ),
        _section("Confusion matrices at the operating threshold", _grid(confusion_tables(ok))),
    ]
    if any((r["drift"] or {}).get("per_label") and r["drift"].get("task") != "binary" for r in ok):
        sections.insert(1, _section("Per label (one-vs-rest for multi-class)", per_label_html(ok)))
    if results.get("subgroups"):
        sections.insert(1, _section("Subgroups", group_html(results)))
    style = (
        "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;"
        "gap:16px}.bad{color:#b00}.warn{background:#fff3cd;padding:6px}"
        ".scroll{max-width:100%;overflow-x:auto}svg{max-width:100%;height:auto}"
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
    cols = table_columns(results)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{escape(c)}</td>" for c in table_cells(r, cols))
        + "</tr>"
        + (
            f"<tr><td colspan='{len(cols)}' class='bad'>{escape(r['error'])}</td></tr>"
            if r["error"]
            else ""
        )
        for r in results["rows"]
    )
    ths = "".join(f"<th>{escape(c)}</th>" for c in cols)
    # the table scrolls sideways in a narrow (800 px) window instead of overflowing the page
    table = f"<div class='scroll'><table><tr>{ths}</tr>{rows}</table></div>"
    return (
        f"<p>{head}<br>created {escape(results['created'])}</p>"
        + (f"<p class='warn'>{escape(warn)}</p>" if warn else "")
        + table
        + (f"<p>{foot}</p>" if foot else "")
    )


# An AUC axis spans at least this much: differences far inside the CIs are not magnified into a
# picture of a difference.
MIN_AUC_SPAN = 0.05
LABEL_GAP = 12  # px between point labels (font 10)


def auc_axis(points: list[tuple[float, tuple[float, float] | None]]) -> tuple[float, float]:
    """y limits covering every AUC's 95% CI, at least MIN_AUC_SPAN wide, within [0, 1]."""
    lo = min(ci[0] if ci else y for y, ci in points)
    hi = max(ci[1] if ci else y for y, ci in points)
    mid, half = (lo + hi) / 2, max(hi - lo, MIN_AUC_SPAN) / 2 * 1.1
    lo, hi = max(0.0, mid - half), min(1.0, mid + half)
    if hi - lo < MIN_AUC_SPAN:  # pushed against 0 or 1: extend the other way
        lo, hi = (
            (max(0.0, hi - MIN_AUC_SPAN), hi) if hi >= 1.0 else (lo, min(1.0, lo + MIN_AUC_SPAN))
        )
    return lo, hi


def spread_labels(ys: list[float], gap: float, top: float, bottom: float) -> list[float]:
    """Label baselines near `ys` (pixels) at least `gap` apart, within [top, bottom] when there
    is room: clamped, pushed down in order, then pushed up from the bottom."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = [min(max(y, top), bottom) for y in ys]
    prev = -float("inf")
    for i in order:
        out[i] = prev = max(out[i], prev + gap)
    nxt = bottom + gap
    for i in reversed(order):
        out[i] = nxt = min(out[i], nxt - gap)
    if out and min(out) < top:  # no room for all: keep them apart, overflowing the bottom
        prev = -float("inf")
        for i in order:
            out[i] = prev = max(out[i], prev + gap, top)
    return out


def pareto_svg(rows: list[dict]) -> str:
    pts = [
        (r["latency"]["median_ms"], r["drift"]["auc_candidate"], r["label"],
         r["drift"].get("auc_candidate_ci95"))
        for r in rows
        if r.get("latency") and r["drift"].get("auc_candidate") is not None
    ]  # fmt: skip
    if not pts:
        return ""
    xs = [p[0] for p in pts]
    logx = max(xs) / max(min(xs), 1e-9) > 8
    xlim = (min(xs) / 1.3, max(xs) * 1.3) if logx else padded(min(xs), max(xs))
    ylim = auc_axis([(y, ci) for _, y, _, ci in pts])
    ax = Axes(xlim, ylim, "median latency per call (ms)", "AUC (bar: 95% CI)", logx=logx)
    front = pareto_front([(x, y) for x, y, _, _ in pts])
    ax.line([(pts[i][0], pts[i][1]) for i in front], stroke="#999", dash="5,4")
    label_y = spread_labels([ax.py(y) - 6 for _, y, _, _ in pts], LABEL_GAP, 20, ax.h - 48)
    for i, (x, y, label, ci) in enumerate(pts):
        if ci:
            ax.line([(x, ci[0]), (x, ci[1])], stroke=color(i), width=1.0)
        ax.dot(x, y, color(i), 5.5 if i in front else 4.0, f"{label}: {x:.3f} ms, AUC {y:.4f}")
        right = ax.px(x) > ax.w * 0.7
        tx = ax.px(x) + (-9 if right else 9)
        if abs(label_y[i] - (ax.py(y) - 6)) > 3:  # moved apart from its point: a leader line
            ax.parts.append(
                f'<line x1="{ax.px(x):.1f}" y1="{ax.py(y):.1f}" x2="{tx:.1f}" '
                f'y2="{label_y[i] - 3:.1f}" stroke="#bbb" stroke-width="0.8"/>'
            )
        ax.text(tx, label_y[i], label + (" *" if i in front else ""),
                anchor="end" if right else "start", size=10)  # fmt: skip
    return ax.svg() + (
        "<p>* on the Pareto front (no other configuration is both faster and more accurate); "
        f"vertical bars: the AUC's 95% CI (the axis spans at least {MIN_AUC_SPAN:g} of AUC)</p>"
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
            _bin_counts(ax, d["reliability"])
            for b in d["reliability"]:
                if b["n"]:
                    ax.dot(b["mean_p"], b["frac_pos"], color(i), 3.5, f"n={b['n']}")
            ax.text(62, 24, f"{title}  ECE {d['ece']:.3f}", size=10)
            out.append(f"<div>{ax.svg()}</div>")
    return out


def _bin_counts(ax: Axes, bins: list[dict]) -> None:
    """Each bin's image count, written under the curve at the bin's centre, with a faint bar
    (height proportional to the count, at most a fifth of the plot)."""
    most = max((b["n"] for b in bins), default=0) or 1
    for b in bins:
        mid = (b["lo"] + b["hi"]) / 2
        if b["n"]:
            ax.rect(b["lo"] + 0.01, 0, b["hi"] - 0.01, 0.2 * b["n"] / most, "#999", 0.15)
        ax.text(ax.px(mid), ax.py(0) - 3, str(b["n"]), anchor="middle", size=8, fill="#555")


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
