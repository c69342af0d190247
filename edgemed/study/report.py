"""Study results: picks (best, smallest within 0.01 AUC of the best and of the baseline), Pareto
fronts, study.json, a markdown table (study.md) and the Pareto plot (pareto.svg)."""

from __future__ import annotations

import os
from pathlib import Path

from edgemed.evaluation.pareto import pareto_front
from edgemed.fileio import write_bytes_atomic, write_json_atomic
from edgemed.provenance import provenance
from edgemed.study.plot import pareto_svg

AUC_MARGIN = 0.01


def front_names(rows: list[dict], cost: str) -> list[str]:
    """Names of rows no other row beats on both lower `cost` and higher test AUC."""
    return [rows[i]["name"] for i in pareto_front([(r[cost], r["test_auc"]) for r in rows])]


def smallest_within(rows: list[dict], target_auc: float, margin: float = AUC_MARGIN) -> dict | None:
    """The row with the fewest parameters (then MACs) whose test AUC >= target - margin."""
    ok = [r for r in rows if r["test_auc"] >= target_auc - margin - 1e-12]
    return min(ok, key=lambda r: (r["params"], r["macs"])) if ok else None


def picks(rows: list[dict]) -> dict:
    """Best AUC, smallest within 0.01 of it, and the compact-vs-baseline answer."""
    best = max(rows, key=lambda r: r["test_auc"])
    out = {
        "best": best["name"],
        "smallest_within_margin_of_best": smallest_within(rows, best["test_auc"])["name"],
    }
    baselines = [r for r in rows if r["role"] == "baseline"]
    if baselines:
        base = baselines[0]
        small = [r for r in rows if r["params"] * 10 <= base["params"]]
        pick = smallest_within(small, base["test_auc"]) if small else None
        out["baseline"] = base["name"]
        out["compact_vs_baseline"] = (
            {
                "name": pick["name"],
                "param_ratio": pick["params"] / base["params"],
                "mac_ratio": pick["macs"] / base["macs"],
                "auc_difference": pick["test_auc"] - base["test_auc"],
                "latency_ratio": pick["latency_ms"] / base["latency_ms"],
            }
            if pick
            else None
        )
    return out


def write_report(work: Path, cfg, ds, grid, done: dict, sessions: list[dict]) -> dict:
    """Write study.json, study.md and pareto.svg into `work`; returns the study dict."""

    rows = [done[p.name] for p in grid if p.name in done]
    study = {
        "format": "edgemed-study/1",
        "config": cfg.to_dict(),
        "data": ds.summary(),
        "input_size": list(ds.split("train").images.shape[1:3]),
        "rows": rows,
        "picks": picks(rows),
        "pareto": {"macs": front_names(rows, "macs"), "latency": front_names(rows, "latency_ms")},
        "time": {
            "point_seconds_total": round(sum(r["point_seconds"] for r in rows), 1),
            "train_seconds_total": round(sum(r["train_seconds"] for r in rows), 1),
            "cpu_seconds_total": round(sum(r.get("cpu_seconds") or 0.0 for r in rows), 1),
            "points_without_cpu_seconds": [r["name"] for r in rows if r.get("cpu_seconds") is None],
            "sessions": sessions,
            "cpu_count": os.cpu_count(),
        },
        "provenance": provenance(inputs={"data": ds.data_hash}, config=cfg.to_dict()),
    }
    write_json_atomic(work / "study.json", study)
    write_bytes_atomic(work / "study.md", study_markdown(study).encode())
    write_bytes_atomic(work / "pareto.svg", pareto_svg(study).encode())
    return study


def study_markdown(study: dict) -> str:
    """The table and the picks, as markdown."""
    rows = study["rows"]
    prec = rows[0]["latency_precision"].upper() if rows else "INT8"
    sizes = ", ".join(f"{k} {v}" for k, v in study["data"]["sizes"].items())
    h, w = study["input_size"]
    lines = [
        f"Data: `{study['data']['path']}` ({sizes}), input {h}x{w}.",
        "",
        f"| model | params | MACs | train s | epochs | test AUC (95% CI) | ORT {prec} AUC | latency ms (ORT {prec}, b1, 1 thr) | Pareto |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(_md_row(r, study["pareto"]))
    lines += ["", *pick_lines(study)]
    t = study["time"]
    lines.append(
        f"- Time: {t['point_seconds_total']:.0f} s over all points (training {t['train_seconds_total']:.0f} s); "
        f"finished sessions: {_sessions(t['sessions'])} (an interrupted session is not listed; "
        "its finished points are in the total)."
    )
    if t.get("cpu_seconds_total"):
        missing = t.get("points_without_cpu_seconds") or []
        lines.append(
            f"- CPU time of the points: {t['cpu_seconds_total']:.0f} s"
            + (f" (not recorded for {', '.join(missing)})" if missing else "")
            + "."
        )
    loads = [r["loadavg_start"][0] for r in rows] + [r["loadavg_end"][0] for r in rows]
    if loads:
        lines.append(
            f"- 1-min load average during the points: {min(loads):.1f}-{max(loads):.1f} on {t['cpu_count']} cores "
            "(numbers taken under that load)."
        )
    return "\n".join(lines) + "\n"


def _sessions(sessions: list[dict]) -> str:
    done = [s for s in sessions if s["points"]]
    return ", ".join(f"{s['seconds']:.0f} s ({s['points']} points)" for s in done) or "none"


def _md_row(r: dict, pareto: dict) -> str:
    ci = r.get("test_auc_ci95")
    ci_text = f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    marks = [
        k
        for k, names in (("MACs", pareto["macs"]), ("latency", pareto["latency"]))
        if r["name"] in names
    ]
    name = f"**{r['name']}** (baseline)" if r["role"] == "baseline" else r["name"]
    return (
        f"| {name} | {r['params']:,} | {_si(r['macs'])} | {r['train_seconds']:.0f} | {r['epochs_run']} | "
        f"{r['test_auc']:.4f}{ci_text} | {r['artifact_test_auc']:.4f} | {r['latency_ms']:.3f} | {', '.join(marks)} |"
    )


def pick_lines(study: dict) -> list[str]:
    p = study["picks"]
    by = {r["name"]: r for r in study["rows"]}
    best, small = by[p["best"]], by[p["smallest_within_margin_of_best"]]
    lines = [
        f"- Best test AUC: **{best['name']}** {best['test_auc']:.4f} ({best['params']:,} params).",
        f"- Smallest model within {AUC_MARGIN} AUC of the best: **{small['name']}** "
        f"{small['test_auc']:.4f}, {small['params']:,} params, {_si(small['macs'])} MACs.",
    ]
    if "baseline" in p:
        base, cmp = by[p["baseline"]], p["compact_vs_baseline"]
        if cmp:
            c = by[cmp["name"]]
            lines.append(
                f"- Versus the large baseline **{base['name']}** ({base['params']:,} params, AUC {base['test_auc']:.4f}): "
                f"**{c['name']}** has {cmp['param_ratio']:.4f}x its parameters (1/{1 / cmp['param_ratio']:.0f}), "
                f"{cmp['mac_ratio']:.3f}x its MACs, {cmp['latency_ratio']:.2f}x its latency, AUC {c['test_auc']:.4f} "
                f"({cmp['auc_difference']:+.4f})."
            )
        else:
            lines.append(
                f"- No model with <= 1/10 the parameters of **{base['name']}** is within {AUC_MARGIN} AUC of it."
            )
    return lines


def _si(n: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"
