"""The study's Pareto plot as a self-contained SVG (no plotting library): test AUC against MACs
and against latency, log-scaled x, the Pareto front drawn, the band within 0.01 AUC of the best
shaded, the baseline drawn as a square."""

from __future__ import annotations

import math
from html import escape

PANEL_W, PANEL_H = 470, 360
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 34, 48
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)


def pareto_svg(study: dict) -> str:
    """Both panels side by side, with a legend of model families underneath."""
    rows = study["rows"]
    families = sorted({r["family"] or r["model"] for r in rows})
    colors = {
        f: ("#d62728" if _is_baseline_family(rows, f) else PALETTE[i % len(PALETTE)])
        for i, f in enumerate(families)
    }
    prec = rows[0]["latency_precision"].upper() if rows else ""
    legend_h = 22 * ((len(families) + 3) // 4) + 30
    width, height = 2 * PANEL_W, PANEL_H + legend_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        _panel(rows, "macs", "MACs per image (log scale)", study["pareto"]["macs"], colors, 0),
        _panel(
            rows,
            "latency_ms",
            f"ORT {prec} latency, batch 1, 1 thread, ms (log)",
            study["pareto"]["latency"],
            colors,
            PANEL_W,
        ),
        _legend(families, colors, PANEL_H + 8),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def _is_baseline_family(rows: list[dict], family: str) -> bool:
    return any(r["role"] == "baseline" and (r["family"] or r["model"]) == family for r in rows)


def _panel(rows, key: str, xlabel: str, front: list[str], colors: dict, x0: float) -> str:
    xs = [max(r[key], 1e-9) for r in rows]
    ys = [r["test_auc"] for r in rows]
    lo, hi = math.floor(math.log10(min(xs))), _upper_log(max(xs))
    hi = hi if hi > lo else lo + 1
    best = max(ys)
    # Outliers far below the best would squash the interesting region: they sit on the floor.
    ylo = max(min(min(ys), best - 0.012), best - 0.15)
    yhi = best + 0.004
    ylo, yhi = math.floor(ylo * 100) / 100, math.ceil(yhi * 100) / 100 + 1e-9
    pw, ph = PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM

    def px(v):
        return x0 + LEFT + pw * (math.log10(max(v, 1e-9)) - lo) / (hi - lo)

    def py(v):
        return TOP + ph * (1 - (v - ylo) / (yhi - ylo))

    out = [
        f'<g><rect x="{x0 + LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>'
    ]
    out.append(
        f'<rect x="{x0 + LEFT}" y="{py(best):.1f}" width="{pw}" height="{py(best - 0.01) - py(best):.1f}" '
        'fill="#2ca02c" fill-opacity="0.10"/>'
    )
    out += _x_ticks(lo, hi, px, TOP + ph, x0)
    out += _y_ticks(ylo, yhi, py, x0)
    by = {r["name"]: r for r in rows}
    pts = " ".join(f"{px(by[n][key]):.1f},{py(by[n]['test_auc']):.1f}" for n in front)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#555" stroke-dasharray="4 3"/>')
    right = x0 + LEFT + 0.75 * pw
    for r in rows:
        x, y = px(r[key]), py(max(r["test_auc"], ylo))
        out.append(
            _marker(r, x, y, colors[r["family"] or r["model"]], x > right, r["test_auc"] < ylo)
        )
    below = [f"{r['name']} ({r['test_auc']:.3f})" for r in rows if r["test_auc"] < ylo]
    if below:
        out.append(
            f'<text x="{x0 + LEFT + 4}" y="{TOP + ph - 14}" font-size="9" fill="#555">'
            f"on the floor, AUC below the axis: {escape(', '.join(below))}</text>"
        )
    out.append(
        f'<text x="{x0 + LEFT + pw / 2}" y="{PANEL_H - 10}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="{x0 + 16}" y="{TOP + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 16} {TOP + ph / 2})">test AUC</text>'
    )
    out.append(
        f'<text x="{x0 + LEFT}" y="{TOP - 12}">shaded: within 0.01 AUC of the best; dashed: Pareto front</text></g>'
    )
    return "\n".join(out)


def _x_ticks(lo: int, hi: float, px, y: float, x0: float) -> list[str]:
    out = []
    for e in range(lo, math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if v > 10.0**hi * (1 + 1e-9):
                break
            x = px(v)
            out.append(
                f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + (5 if m == 1 else 3)}" stroke="#333"/>'
            )
            if m == 1 or hi - lo <= 2:
                out.append(f'<text x="{x:.1f}" y="{y + 16}" text-anchor="middle">{_fmt(v)}</text>')
            if m == 1:
                out.append(
                    f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{y}" stroke="#ddd" stroke-width="0.5"/>'
                )
    return out


def _y_ticks(ylo: float, yhi: float, py, x0: float) -> list[str]:
    step = 0.01 if yhi - ylo <= 0.08 else 0.02 if yhi - ylo <= 0.16 else 0.05
    out, v = [], math.ceil(ylo / step - 1e-9) * step
    while v <= yhi + 1e-9:
        y = py(v)
        out.append(
            f'<line x1="{x0 + LEFT - 4}" y1="{y:.1f}" x2="{x0 + PANEL_W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{x0 + LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        v += step
    return out


def _upper_log(v: float) -> float:
    """log10 of the smallest 1, 2 or 5 x 10^k at or above v (a tight right edge for the axis)."""
    e = math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * 10.0**e >= v * (1 - 1e-9):
            return math.log10(m * 10.0**e)
    return e + 1.0


def _marker(
    r: dict, x: float, y: float, color: str, label_left: bool, floored: bool = False
) -> str:
    title = f"<title>{escape(r['name'])}: AUC {r['test_auc']:.4f}, {r['params']:,} params</title>"
    shape = (
        f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{color}">{title}</rect>'
        if r["role"] == "baseline"
        else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{color}" fill-opacity="0.85">{title}</circle>'
    )
    lx, anchor = (x - 7, "end") if label_left else (x + 7, "start")
    if floored:  # named in the panel's note instead, where labels cannot collide
        return shape
    label = (
        f'<text x="{lx:.1f}" y="{y - 5:.1f}" font-size="9" fill="#333" '
        f'text-anchor="{anchor}">{escape(r["name"])}</text>'
    )
    return shape + label


def _legend(families: list[str], colors: dict, y0: float) -> str:
    out = []
    for i, f in enumerate(families):
        x, y = 20 + 230 * (i % 4), y0 + 22 * (i // 4) + 14
        out.append(f'<circle cx="{x}" cy="{y}" r="5" fill="{colors[f]}"/>')
        out.append(f'<text x="{x + 10}" y="{y + 4}">{escape(f)}</text>')
    return "<g>" + "".join(out) + "</g>"


def _fmt(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"
