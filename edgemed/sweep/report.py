"""OUT/selection.html: per device the rule, the choice, a Pareto picture (objective vs test AUC:
the front, the margin band below the best AUC, the chosen point ringed) and every candidate with
the reason it lost. Reads only the selection document."""

from __future__ import annotations

from html import escape

from edgemed.evaluation.pareto import pareto_front
from edgemed.harness.report import auc_axis
from edgemed.harness.svg import Axes, padded
from edgemed.sweep.select import OBJECTIVES

OUTCOME_COLOR = {
    "chosen": "#2ca02c",
    "slower": "#1f77b4",
    "larger": "#1f77b4",
    "accuracy": "#ff7f0e",
    "drift": "#d62728",
    "budget": "#9467bd",
    "elsewhere": "#8c564b",
    "failed": "#7f7f7f",
}
STYLE = (
    "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;"
    "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,td:last-child{text-align:left}"
    ".warn{background:#fff3cd;padding:6px}svg{max-width:100%;height:auto}"
)


def selection_html(sel: dict) -> str:
    """A self-contained page (no scripts, no external resources)."""
    rule = sel["rule"]
    words = OBJECTIVES[rule["objective"]][2]
    head = (
        f"<p>Rule: among candidates that pass the clinical gate ({escape(str(sel['gate']))}), fit "
        f"their profile's latency and memory budgets and were measured on the device, keep those "
        f"whose test AUC is within {rule['margin']:g} of the best; choose the lowest {escape(words)}.</p>"
    )
    body = "".join(_device(name, d, rule) for name, d in sel["devices"].items())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgemed sweep selection</title>"
        f"<style>{STYLE}</style></head><body><h1>edgemed sweep: selection per device</h1>"
        f"{head}{body}</body></html>\n"
    )


def _device(name: str, d: dict, rule: dict) -> str:
    if d["artifact"]:
        pick = f"chosen: <b>{escape(d['label'])}</b> (AUC {d['auc']:.4f}, {d['median_ms']:.3f} ms)"
    else:
        pick = f"no selection: {escape(d['reason'])}"
    proxy = (
        f"<p class='warn'>measured on a proxy, not on {escape(name)}: {escape('; '.join(d['proxy']))}</p>"
        if d.get("proxy")
        else ""
    )
    title = f"{name} (profiles: {', '.join(d['profiles'])}; runtimes: {', '.join(d['runtimes'])})"
    return (
        f"<h2>{escape(title)}</h2><p>{pick}</p>{proxy}"
        + pareto_svg(d, rule)
        + _table(d["candidates"])
    )


def pareto_svg(d: dict, rule: dict) -> str:
    """Objective (x) vs test AUC (y) of the candidates that reached the accuracy step or beyond."""
    block, key, words = OBJECTIVES[rule["objective"]]
    pts = [c for c in d["candidates"] if c["auc"] is not None and c.get(key) is not None]
    if not pts:
        return ""
    xs = [c[key] for c in pts]
    logx = max(xs) / max(min(xs), 1e-9) > 8
    xlim = (min(xs) / 1.3, max(xs) * 1.3) if logx else padded(min(xs), max(xs))
    ylim = auc_axis([(c["auc"], c.get("auc_ci95")) for c in pts])
    ax = Axes(xlim, ylim, words, "test AUC", logx=logx)
    if d.get("best_auc") is not None:  # the margin band: AUCs the rule treats as equal
        ax.rect(xlim[0], d["auc_floor"], xlim[1], d["best_auc"], "#2ca02c", 0.12)
    front = pareto_front([(c[key], c["auc"]) for c in pts])
    ax.line([(pts[i][key], pts[i]["auc"]) for i in front], stroke="#999", dash="5,4")
    for c in pts:
        fill = OUTCOME_COLOR.get(c["outcome"] or "", "#333")
        ax.dot(c[key], c["auc"], fill, 7.0 if c["outcome"] == "chosen" else 4.0, _tip(c, key))
        if c["outcome"] == "chosen":
            ax.text(ax.px(c[key]) + 9, ax.py(c["auc"]) - 8, f"chosen: {c['label']}", size=10)
    ax.legend([(o, col) for o, col in OUTCOME_COLOR.items() if any(c["outcome"] == o for c in pts)])
    return ax.svg() + (
        f"<p>dashed: Pareto front; green band: within {rule['margin']:g} of the best AUC "
        "(the accuracy margin); colour: each candidate's outcome</p>"
    )


def _tip(c: dict, key: str) -> str:
    return f"{c['label']}: AUC {c['auc']:.4f}, {key} {c[key]}, {c['outcome']}"


def _table(cands: list[dict]) -> str:
    cols = ("candidate", "AUC", "p50 ms", "size KB", "peak RSS MB", "outcome", "why")
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(v)}</td>"
            for v in (
                c["label"],
                _f(c["auc"], ".4f"),
                _f(c["median_ms"], ".3f"),
                _f(c["model_bytes"] / 1024 if c["model_bytes"] else None, ".0f"),
                _f(c["peak_rss_mb"], ".1f"),
                c["outcome"] or "-",
                c["reason"] or "",
            )
        )
        + "</tr>"
        for c in sorted(cands, key=lambda c: (c["outcome"] != "chosen", -(c["auc"] or 0)))
    )
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in cols) + f"</tr>{rows}</table>"


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)
