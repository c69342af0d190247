"""Bench report drawing rules: AUC axes show the CIs instead of magnifying noise, point labels
never overlap, reliability bins show their counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgemed.harness.report import MIN_AUC_SPAN, _bin_counts, auc_axis, spread_labels
from edgemed.harness.svg import Axes


def test_auc_axis_covers_every_ci_and_never_magnifies_a_tiny_difference():
    lo, hi = auc_axis([(0.9838, (0.97, 0.995)), (0.9835, (0.969, 0.994))])
    assert lo <= 0.969 and hi >= 0.995 and hi <= 1.0
    lo, hi = auc_axis([(0.98380, None), (0.98381, None)])  # no CI: still a 0.05-wide axis
    assert hi - lo >= MIN_AUC_SPAN - 1e-12
    lo, hi = auc_axis([(0.999, (0.998, 1.0))])  # against the ceiling: extends downward
    assert hi == 1.0 and hi - lo >= MIN_AUC_SPAN - 1e-12


@given(st.lists(st.floats(0, 300), min_size=1, max_size=20))
def test_spread_labels_keeps_every_pair_apart(ys):
    out = spread_labels(ys, 12, 20, 272)
    s = sorted(out)
    assert all(b - a >= 12 - 1e-9 for a, b in zip(s, s[1:], strict=False))
    if len(ys) * 12 <= 252:  # room for all of them: all inside the frame
        assert min(out) >= 20 - 1e-9 and max(out) <= 272 + 1e-9


def test_reliability_bins_print_their_counts():
    ax = Axes((0, 1), (0, 1), "p", "rate", 280, 260)
    bins = [
        {"lo": k / 10, "hi": (k + 1) / 10, "n": n}
        for k, n in enumerate([0, 3, 0, 0, 0, 0, 0, 0, 41, 7])
    ]
    _bin_counts(ax, bins)
    svg = ax.svg()
    assert all(f">{n}</text>" in svg for n in (3, 41, 7)) and svg.count(">0</text>") >= 7


def test_the_multilabel_header_names_the_macro_labels_and_warns_when_rows_differ():
    from edgemed.evaluation.limits import METRICS
    from edgemed.harness.report import COLUMNS, label_set_line, row_cells

    assert all(m.column in COLUMNS for m in METRICS.values())  # one column per gateable metric
    per = [{"label": "a", "evaluable": True, "auc_drop_decisive": 0.01, "auc_drop": 0.02},
           {"label": "b", "evaluable": True, "auc_drop_decisive": 0.03, "auc_drop": 0.01},
           {"label": "h", "evaluable": False, "auc_drop_decisive": None, "auc_drop": None}]  # fmt: skip
    d = {"task": "multilabel", "per_label": per, "macro_labels": ["a", "b"], "min_per_class": 5,
         "not_evaluable": [{"label": "h", "positives": 0, "negatives": 90}],
         "borderline_flips": 0, "decisive_flips": 1, "auc_candidate": 0.7}  # fmt: skip
    row = {"label": "int8", "status": "ok", "drift": d}
    line = label_set_line({"rows": [row]})
    assert "macro over the 2 labels" in line and "h (0+/90-)" in line and "WARNING" not in line
    cells = dict(zip(COLUMNS, row_cells(row), strict=False))
    assert cells["AUC drop (positive = worse)"] == "+0.0100 b"  # worst by the gated number
    other = {"label": "sub", "status": "ok", "drift": {**d, "macro_labels": ["a"]}}
    assert "rows report different labels" in label_set_line({"rows": [row, other]})
