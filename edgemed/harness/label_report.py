"""The bench HTML report's per-label tables for multi-label and multi-class artifacts: every
reported label with its counts, AUCs and CIs, operating point and drops, flagged when it cannot be
evaluated or the FP32 reference is inverted; a confusion matrix for multi-class."""

from __future__ import annotations

from html import escape


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


LABEL_COLUMNS = (
    "label", "pos", "neg", "ref AUC [95% CI]", "AUC [95% CI]", "AUC drop", "sens", "sens drop",
    "spec", "spec drop", "threshold", "flips", "ECE", "note",
)  # fmt: skip


def label_cells(p: dict) -> list[str]:
    """One label of one row: counts, AUCs with CIs, operating point and drops."""

    def ci(v, c):
        return "-" if v is None else f"{v:.3f}" + (f" [{c[0]:.3f},{c[1]:.3f}]" if c else "")

    note = "" if p.get("evaluable", True) else "not evaluable: too few cases, cannot pass a floor"
    if not note and p.get("auc_reference_ci95") and p["auc_reference_ci95"][1] < 0.5:
        note = "INVERTED: FP32 reference AUC 95% CI below 0.5"
    elif not note and p.get("auc_reference_ci95") and p["auc_reference_ci95"][0] <= 0.5:
        note = "FP32 reference not above chance"
    if p.get("ci_too_wide"):
        note += ("; " if note else "") + "CI too wide to rank (few cases)"
    return [
        p["label"], str(p.get("positives", "-")), str(p.get("negatives", "-")),
        ci(p.get("auc_reference"), p.get("auc_reference_ci95")),
        ci(p.get("auc_candidate"), p.get("auc_candidate_ci95")),
        _f(p.get("auc_drop"), "+.4f"), _f(p.get("sensitivity"), ".3f"),
        _f(p.get("sens_drop"), "+.3f"), _f(p.get("specificity"), ".3f"),
        _f(p.get("spec_drop"), "+.3f"), _f(p.get("threshold"), ".3f"), str(p.get("flips", "-")),
        _f(p.get("ece"), ".3f"), note,
    ]  # fmt: skip


def per_label_html(rows: list[dict]) -> str:
    """Per configuration, one table row per reported label (and a multi-class confusion matrix)."""
    out = []
    ths = "".join(f"<th>{escape(c)}</th>" for c in LABEL_COLUMNS)
    for row in rows:
        d = row["drift"]
        if not d.get("per_label") or d.get("task") == "binary":
            continue
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in label_cells(p)) + "</tr>"
            for p in d["per_label"]
        )
        out.append(f"<h3>{escape(row['label'])}</h3><div class='scroll'><table><tr>{ths}</tr>"
                   f"{body}</table></div>{_matrix_html(d)}")  # fmt: skip
    return "".join(out)


def _matrix_html(d: dict) -> str:
    m = (d.get("details") or {}).get("confusion_matrix")
    if not m:
        return ""
    names = [p["label"] for p in d["per_label"]]
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{escape(n)}</th>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>"
        for n, r in zip(names, m, strict=True)
    )
    return (f"<p>confusion matrix (rows: actual class, columns: predicted = argmax)</p>"
            f"<table><tr><th></th>{head}</tr>{body}</table>")  # fmt: skip


def group_label_html(results: dict) -> str:
    """Subgroups per label (bench --groups on a multi-label/multi-class artifact): per
    configuration and group column, one table row per group value and label."""
    out = []
    ths = "".join(f"<th>{escape(c)}</th>" for c in ("group", *LABEL_COLUMNS))
    for row in results["rows"]:
        groups = [g for g in row.get("subgroups") or () if (g.get("drift") or {}).get("per_label")]
        if not groups or groups[0]["drift"].get("task") == "binary":
            continue
        for column in dict.fromkeys(g["column"] for g in groups):
            body = "".join(
                "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in [g["value"], *label_cells(p)])
                + "</tr>"
                for g in groups if g["column"] == column for p in g["drift"]["per_label"]
            )  # fmt: skip
            out.append(f"<h3>{escape(row['label'])} by {escape(column)}, per label</h3>"
                       f"<div class='scroll'><table><tr>{ths}</tr>{body}</table></div>")  # fmt: skip
    return "".join(out)
