"""The one Pareto front (bench's latency-vs-AUC plot, study's MACs/latency-vs-AUC picks)."""

from __future__ import annotations


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, AUC) points no other point beats on both lower cost and higher AUC,
    by increasing cost. Of equal points the first is kept; at equal cost only the best AUC."""
    front, best = [], float("-inf")
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i)):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
