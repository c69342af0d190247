"""Drift budget and accuracy-aware fallback, the same for every backend.

After an FP16/INT8 conversion the artifact is run on the validation split and compared with the
FP32 reference. Over budget (AUC drop, flip rate) the export fails with the numbers, unless
`--accuracy-control` was given: then each layer the backend can keep in float
(`Backend.quantizable_nodes`) is tried on its own (exclude-one sensitivity: the drift left when
only that layer stays in float), and the most sensitive layers are kept in float one by one
until the budget holds. Where exclude-one is blind (no single layer helps), the layers are also
ranked by quantize-alone sensitivity (the drift when only that layer is INT8) and that order grows
side by side; quantize-alone is also the last try before the export fails with the table of what
was tried.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgemed.backends import Backend, Converted, ConvertRequest
from edgemed.backends.int8_ops import Int8Coverage, count_int8, refuse_float
from edgemed.backends.quant import parse_node_list
from edgemed.errors import DriftError, InputError
from edgemed.evaluation.drift import Drift
from edgemed.pipeline.budget import Budget
from edgemed.progress import Progress

Measure = Callable[[Path, Converted], Drift]
GROW_STEP = {"exclude-one": "fallback", "quantize-alone": "alone-fallback"}  # attempt step names
BLIND_FRACTION = 0.95  # exclude-one is blind when its best try keeps 95% of the excess
MAX_LISTED = 10  # attempts named in a failure message (all of them are in the error's numbers)


@dataclass(frozen=True)
class Attempt:
    """One conversion tried: which layers stayed in float and the drift it produced."""

    step: str  # "requested", "sensitivity", "fallback", "alone" or "alone-fallback"
    excluded: tuple[str, ...]
    drift: Drift | None  # None: the attempt's outputs failed the sanity check (see `broken`)
    within: bool
    path: Path
    converted: Converted
    broken: str | None = None
    int8: Int8Coverage | None = None  # INT8: compute ops counted in the attempt's artifact

    def row(self, budget: Budget | None = None) -> dict:
        """The attempt for the manifest; with `budget`, also the fraction of it used (its rank)."""
        d = self.drift
        row = {"step": self.step, "excluded": list(self.excluded), "within_budget": self.within}
        if budget is not None and d is not None:
            row["budget_used"] = budget.excess(d)
        if self.int8 is not None:
            row["int8_ops"] = self.int8.words()
        if d is None:
            return row | {"broken": self.broken}
        return row | {
            "auc_drop": d.auc_drop,
            "flip_rate": d.flip_rate,
            "flips": d.flips,
            "decisive_flips": d.decisive_flips,
            "mean_abs_dp": d.mean_abs_dp,
            "drift": d.to_dict(),
        }

    def text(self) -> str:
        return f"outputs broken ({self.broken})" if self.drift is None else _fmt(self.drift)

    def rank(self, budget: Budget) -> tuple[float, float]:
        """Sort key for accuracy control: budget used, then mean |delta p| (broken last)."""
        if self.drift is None:
            return (float("inf"), float("inf"))
        return (budget.excess(self.drift), self.drift.mean_abs_dp)


def _fmt(d: Drift) -> str:
    drop = "n/a" if d.auc_drop is None else f"{d.auc_drop:.4f}"
    return (
        f"AUC drop {drop}, decisive flips {d.decisive_flips}/{d.n} "
        f"({d.borderline_flips} more within the {d.band:g} band)"
    )


def convert_within_budget(
    backend: Backend,
    req: ConvertRequest,
    budget: Budget | None,
    out: Path,
    scratch: Path,
    measure: Measure | None,
) -> tuple[Converted, Drift | None, dict | None]:
    """Convert `req` into `out`, holding fp16/int8 to `budget` (see module docstring; None: fp32).

    `measure(dir, converted)` runs an artifact written to `dir` on the validation split; None when
    it cannot run here (no evaluation images, or a device this machine lacks). Returns the
    conversion, its measured drift (None when not measured) and the budget report for the manifest.
    """
    if budget is None:
        return convert_counted(backend, req, out)[0], None, None
    control = budget.accuracy_control
    if measure is None:
        if control:
            raise InputError(
                "--accuracy-control needs validation images run on this machine: pass --data, "
                "and use a target whose device is this CPU"
            )
        print(
            "edgemed: warning: drift budget not checked (no validation images run here)",
            file=sys.stderr,
        )
        conv = convert_counted(backend, req, out)[0]
        return conv, None, {"budget": budget.to_dict(), "checked": False}
    search = _Search(backend, req, Path(scratch), measure, budget)
    chosen = search.attempt(parse_node_list(req.options.get("exclude_nodes")), "requested")
    refuse_float(chosen.int8, f"the {backend.name} int8 artifact")
    if chosen.drift is not None:
        _warn_unresolvable(budget, chosen.drift)
    if not chosen.within:
        if not control:
            failed = "; ".join(c.detail for c in budget.verdict(chosen.drift).failed)
            raise DriftError(
                f"{backend.name} {req.precision} drifted beyond the budget on {chosen.drift.n} "
                f"validation images: {failed}; pass --accuracy-control to keep the most "
                "sensitive layers in float, or relax the limit named",
                chosen.row(),
            )
        chosen = search.fallback(chosen)
    _move_files(chosen, Path(out))
    _note_low_fraction(chosen.int8)
    return chosen.converted, chosen.drift, search.report(chosen, control)


def convert_counted(
    backend: Backend, req: ConvertRequest, out: Path, refuse: bool = True
) -> tuple[Converted, Int8Coverage | None]:
    """`backend.convert`, then for INT8 the compute ops counted in the written artifact
    (recorded in the backend facts as `int8_ops`); an all-float artifact is refused unless
    `refuse` is False (accuracy control scores it as a failed attempt instead)."""
    conv = backend.convert(req, out)
    if req.precision != "int8":
        return conv, None
    cov = count_int8(Path(out) / conv.model_file)
    conv = replace(conv, info={**conv.info, "int8_ops": cov.to_dict() if cov else None})
    if refuse:
        refuse_float(cov, f"the {backend.name} int8 artifact")
        _note_low_fraction(cov)
    return conv, cov


def _note_low_fraction(cov: Int8Coverage | None) -> None:
    if cov is not None and cov.note():
        print(f"edgemed: note: {cov.note()}", file=sys.stderr)


def _warn_unresolvable(budget: Budget, d: Drift) -> None:
    need = d.images_to_resolve(budget.limits.get("flip_rate") or 0.0)
    if need:
        print(
            f"edgemed: warning: one decisive flip on the {d.n} validation images is "
            f"{1 / d.n:.2%}, above --max-flip-rate {budget.limits.get('flip_rate'):.2%}: the "
            f"budget allows no decisive flip on this split (one needs >= {need} images); flips "
            f"within {d.band:g} of the threshold are borderline and not counted",
            file=sys.stderr,
        )


class _Search:
    """The attempts of one fallback search (each converted into its own scratch directory)."""

    def __init__(self, backend, req, scratch: Path, measure: Measure, budget: Budget) -> None:
        self.backend, self.req, self.scratch = backend, req, scratch
        self.measure, self.budget = measure, budget
        self.attempts: list[Attempt] = []
        self.ranking: list[tuple[Attempt, str]] = []  # exclude-one, most sensitive first
        self.ranking_alone: list[tuple[Attempt, str]] = []  # quantize-alone, most harmful first
        self.grown: list[tuple[str, str, Attempt]] = []  # (order, "+layer", try) as grown
        self.orders: list[tuple[str, list]] = []  # the rankings grown, in order
        self.blind: bool | None = None
        self.bar: Progress | None = None

    def attempt(self, excluded: tuple[str, ...], step: str) -> Attempt:
        d = self.scratch / f"try-{len(self.attempts)}"
        d.mkdir(parents=True)
        req = replace(self.req, options={**self.req.options, "exclude_nodes": excluded})
        try:
            conv, cov = convert_counted(self.backend, req, d, refuse=False)
        except DriftError as exc:  # e.g. a layer the quantizer cannot split off: a failed try
            if step == "requested" or not self.budget.accuracy_control:
                raise
            conv, cov = Converted((), "", self.req.contract), None
            drift, broken = None, f"conversion failed: {exc}"
        else:
            drift, broken = self._score(d, conv, cov, probe=step == "alone")
        within = drift is not None and self.budget.holds(drift)
        a = Attempt(step, excluded, drift, within, d, conv, broken, cov)
        self.attempts.append(a)
        if not a.within or step == "alone":
            shutil.rmtree(d, ignore_errors=True)  # never chosen: free the disk
        if self.bar:
            self.bar.advance(1)
            self.bar.note(f"{step}: {len(excluded)} layers in float: {a.text()}")
        return a

    def _score(self, d: Path, conv: Converted, cov, probe: bool) -> tuple[Drift | None, str | None]:
        # No compute op in INT8: never an answer. A quantize-alone probe is still measured: one
        # LayerNormalization quantized alone puts Q/DQ on its input without any INT8 compute op.
        if cov is not None and cov.quantized == 0 and not probe:
            return None, f"all float: {cov.words()}"
        try:
            return self.measure(d, conv), None
        except DriftError as exc:  # NaN/constant/saturated outputs: a failed try, not the end
            if not self.budget.accuracy_control:
                raise
            return None, str(exc)

    def fallback(self, first: Attempt) -> Attempt:
        """Keep the most sensitive layers in float, one more per step, until the budget holds.

        Layers are ranked by exclude-one sensitivity. Where no single layer in float removes even
        5% of the excess (exclude-one is blind: several layers quantize one tensor, as a ViT's
        class token shares a per-tensor scale with the patch tokens at the Concat and both of
        its consumers), they are also ranked by quantize-alone sensitivity (the drift when only
        that layer is INT8) and both orders grow side by side; the first step that holds wins.
        Quantize-alone is also the last try before failing. Each ranking costs one conversion
        per layer, so it runs only where needed.
        """
        candidates = [
            n for n in self.backend.quantizable_nodes(self.req) if n not in first.excluded
        ]
        if not candidates:
            raise DriftError(
                f"{self.backend.name} {self.req.precision} is over budget ({first.text()}) and "
                f"{self.backend.name} cannot keep layers in float; use a higher precision",
                first.row(),
            )
        self.bar = Progress(2 * len(candidates), "accuracy control")
        self.ranking = self._rank(first, candidates, "exclude-one")
        orders = self.orders = [("exclude-one", self.ranking)]
        alone = len(candidates) > 1  # one layer: quantize-alone is the requested try again
        blind = self.blind = alone and _blind(first, self.ranking, self.budget)
        if blind:
            orders.append(self._alone(first, candidates))
        found = self._grow(first, orders)
        if found is None and alone and not blind:
            orders.append(self._alone(first, candidates))
            found = self._grow(first, orders[1:])
        self.bar.close()
        if found is None:
            raise DriftError(
                self._failure(first, orders),
                {"attempts": [a.row(self.budget) for a in self.attempts]},
            )
        return found

    def _alone(self, first: Attempt, candidates: list[str]) -> tuple[str, list]:
        self.bar.total += len(candidates)
        self.ranking_alone = self._rank(first, candidates, "quantize-alone")
        return ("quantize-alone", self.ranking_alone)

    def _rank(self, first: Attempt, candidates: list[str], how: str) -> list[tuple[Attempt, str]]:
        """(attempt, layer), most sensitive first, one conversion per layer."""
        if how == "exclude-one":
            scored = [(self.attempt((*first.excluded, n), "sensitivity"), n) for n in candidates]
            return sorted(scored, key=lambda an: an[0].rank(self.budget))
        scored = [
            (self.attempt((*first.excluded, *(m for m in candidates if m != n)), "alone"), n)
            for n in candidates
        ]
        return sorted(scored, key=lambda an: an[0].rank(self.budget), reverse=True)  # broken first

    def _grow(self, first: Attempt, orders) -> Attempt | None:
        """Top k of each order in float, k = 1, 2, ...; the best try of the first k that holds."""
        n = len(orders[0][1])
        tried: set[frozenset[str]] = set()
        for k in range(1, min(self.budget.max_float_layers or n, n) + 1):
            held = []
            for how, scored in orders:
                keep = tuple(name for _, name in scored[:k])
                if frozenset(keep) in tried:
                    continue
                tried.add(frozenset(keep))
                if how == "exclude-one" and k == 1:
                    a = scored[0][0]  # already converted and measured by the ranking
                else:
                    a = self.attempt((*first.excluded, *keep), GROW_STEP[how])
                self.grown.append((how, f"+{keep[-1]}", a))
                held += [a] if a.within else []
            if held:
                return min(held, key=lambda a: a.rank(self.budget))
        return None

    def _failure(self, first: Attempt, orders) -> str:
        note = first.drift.margin_note() if first.drift else ""
        steps = [
            (label if how == "exclude-one" else f"{how} order {label}", a)
            for how, label, a in self.grown
        ]
        shown = _closest(steps, self.budget, MAX_LISTED - 1)
        left = len(steps) - len(shown)
        tried = [f"none: {first.text()}{note}"] + [f"{k}: {a.text()}" for k, a in shown]
        b = self.budget
        n = len(orders[0][1])
        used = min(b.max_float_layers or n, n)
        ranked = " and ".join(f"by {how} sensitivity" for how, _ in orders)
        return (
            f"accuracy control could not bring {self.backend.name} {self.req.precision} within "
            f"the budget ({b.words()}) even with {used} of {n} layers in float (ranked "
            f"{ranked}); layers kept in float, cumulative, the steps closest to the budget: "
            + "; ".join(tried)
            + (f" ({left} more steps not listed)" if left else "")
            + "; use a higher precision, relax the budget"
            + (" or raise --max-float-layers" if b.max_float_layers else "")
        )

    def report(self, chosen: Attempt, control: bool) -> dict:
        return {
            "budget": self.budget.to_dict(),
            "checked": True,
            "accuracy_control": control,
            "validation_images": chosen.drift.n if chosen.drift else None,
            "excluded_nodes": list(chosen.excluded),
            "attempts": [a.row(self.budget) for a in self.attempts],
            "rankings": [how for how, _ in self.orders],
            "exclude_one_blind": self.blind,  # see BLIND_FRACTION
            "sensitivity": [_sensitivity_row(a, n) for a, n in self.ranking],
            **(
                {
                    "sensitivity_quantize_alone": [
                        _sensitivity_row(a, n) for a, n in self.ranking_alone
                    ]
                }
                if self.ranking_alone
                else {}
            ),
        }


def _sensitivity_row(a: Attempt, node: str) -> dict:
    if a.drift is None:
        return {"node": node, "broken": a.broken}
    d = a.drift
    return {
        "node": node,
        "flip_rate": d.flip_rate,
        "auc_drop": d.auc_drop,
        "mean_abs_dp": d.mean_abs_dp,
    }


def _blind(first: Attempt, ranking: list[tuple[Attempt, str]], budget: Budget) -> bool:
    """No single layer kept in float removes even 5% of the first try's budget excess."""
    best = min(a.rank(budget)[0] for a, _ in ranking)
    return best >= BLIND_FRACTION * first.rank(budget)[0]


def _closest(steps: list[tuple[str, Attempt]], budget: Budget, k: int):
    """The `k` steps closest to the budget, kept in the order they were tried."""
    best = sorted(range(len(steps)), key=lambda i: steps[i][1].rank(budget))[:k]
    return [steps[i] for i in sorted(best)]


def _move_files(a: Attempt, out: Path) -> None:
    """Everything the backend wrote for the chosen attempt moves into the artifact directory."""
    for src in sorted(a.path.iterdir()):
        os.replace(src, out / src.name)
