"""Subgroup tables (bench --groups) for the terminal and the HTML report: per configuration and
group column, every metric per group value with its 95% CI, the worst group marked."""

from __future__ import annotations

from html import escape

from edgemed.harness.label_report import group_label_html

GROUP_COLUMNS = (
    "group", "n", "pos", "ref AUC [95% CI]", "AUC [95% CI]", "AUC drop (positive = worse) [95% CI]",
    "sens [95% CI]", "spec [95% CI]", "flips b/d", "note",
)  # fmt: skip
GROUP_LEGEND = (
    "per group: drift of each configuration vs its FP32 reference on that group's images; "
    "worst = largest AUC drop (ties: lowest AUC); '-' = not computable on this group (see note)"
)


def _v(v, ci, fmt: str) -> str:
    if v is None:
        return "-"
    return f"{v:{fmt}}" + (f" [{ci[0]:{fmt}},{ci[1]:{fmt}}]" if ci else "")


def group_cells(g: dict, worst: str | None) -> list[str]:
    """One group as table cells (dashes and a note where a metric cannot be computed)."""
    d = g.get("drift") or {}
    pos = "-" if g.get("positives") is None else str(g["positives"])
    note = g.get("error") or ""
    if d and d.get("per_label") and d.get("task") != "binary":  # AUCs: macro, drop: worst label
        used, missing = d.get("macro_labels") or (), d.get("not_evaluable") or ()
        worst_ = "worst; " if g["value"] == worst else ""
        note = note or f"{worst_}macro over {len(used)} labels; {len(missing)} not evaluable here"
    elif d and d.get("auc_reference") is None:
        note = f"too small for AUC: {g['n']} image{'' if g['n'] == 1 else 's'}, {pos} positive"
    elif not note and g["value"] == worst:
        note = "worst"
    flips = f"{d['borderline_flips']}/{d['decisive_flips']}" if d else "-"
    return [
        g["value"],
        str(g["n"]),
        pos,
        _v(d.get("auc_reference"), d.get("auc_reference_ci95"), ".3f"),
        _v(d.get("auc_candidate"), d.get("auc_candidate_ci95"), ".3f"),
        _v(d.get("auc_drop"), d.get("auc_drop_ci95"), "+.4f"),
        _v(d.get("sensitivity"), g.get("sensitivity_ci95"), ".3f"),
        _v(d.get("specificity"), g.get("specificity_ci95"), ".3f"),
        flips,
        note,
    ]


def group_blocks(results: dict) -> list[tuple[str, list[list[str]]]]:
    """(title, rows of cells) per configuration x group column."""
    out = []
    for row in results["rows"]:
        groups = row.get("subgroups")
        if not groups:
            continue
        for column in dict.fromkeys(g["column"] for g in groups):
            worst = (row.get("worst_groups") or {}).get(column)
            cells = [group_cells(g, worst) for g in groups if g["column"] == column]
            out.append((f"{row['label']} by {column}", cells))
    return out


def group_tables(results: dict) -> str:
    """Plain-text tables, one per configuration x group column."""
    sub = results["subgroups"]
    lines = [f"subgroups from {sub['path']} (sha256 {sub['sha256'][:12]}); {GROUP_LEGEND}"]
    for title, cells in group_blocks(results):
        table = [list(GROUP_COLUMNS), *cells]
        widths = [max(len(r[i]) for r in table) for i in range(len(GROUP_COLUMNS))]
        lines.append(title)
        for i, r in enumerate(table):
            lines.append("  ".join(c.ljust(w) if j in (0, 9) else c.rjust(w)
                                   for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())  # fmt: skip
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def group_html(results: dict) -> str:
    """The HTML section body ('' without --groups)."""
    if not results.get("subgroups"):
        return ""
    sub = results["subgroups"]
    parts = [f"<p>from {escape(sub['path'])} (sha256 {escape(sub['sha256'][:12])}); "
             f"{escape(GROUP_LEGEND)}</p>"]  # fmt: skip
    head = "".join(f"<th>{escape(c)}</th>" for c in GROUP_COLUMNS)
    for title, cells in group_blocks(results):
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in cells
        )
        parts.append(
            f"<h3>{escape(title)}</h3><div class='scroll'><table><tr>{head}</tr>{body}</table></div>"
        )

    return "".join(parts) + group_label_html(results)
