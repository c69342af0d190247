"""The drift budget an FP16/INT8 export is held to (FP32 is held to --parity-tol instead): the
evaluation core's export limits plus accuracy control's own settings, as the user gave them
(`BudgetOptions`, built once at the CLI edge) and resolved against the defaults (`Budget`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edgemed.errors import InputError
from edgemed.evaluation.drift import Drift
from edgemed.evaluation.limits import (
    EXPORT_DEFAULTS,
    EXPORT_LIMITS,
    METRICS,
    Limits,
    Verdict,
    limits_from,
    verdict,
)


@dataclass(frozen=True)
class BudgetOptions:
    """`--max-auc-drop`, `--max-flip-rate`, ... (metric key -> limit, only those given),
    `--accuracy-control` and `--max-float-layers`."""

    limits: Mapping[str, float] = field(default_factory=dict)
    accuracy_control: bool = False
    max_float_layers: int | None = None

    def given(self) -> list[str]:
        """The flags set, as the user wrote them."""
        flags = [m.flag for k, m in METRICS.items() if k in self.limits]
        if self.accuracy_control:
            flags.append("--accuracy-control")
        if self.max_float_layers is not None:
            flags.append("--max-float-layers")
        return flags

    def to_dict(self) -> dict:
        return {
            "limits": dict(self.limits),
            "accuracy_control": self.accuracy_control,
            "max_float_layers": self.max_float_layers,
        }


# Limits nothing can exceed: the study and the sweep report drift per row instead of gating on it.
UNGATED = BudgetOptions({"auc_drop": 1.0, "flip_rate": 1.0})


@dataclass(frozen=True)
class Budget:
    """How far a reduced-precision artifact may drift from FP32 on the validation split."""

    limits: Limits
    max_float_layers: int | None = None  # accuracy control: at most this many layers in float
    accuracy_control: bool = False  # over budget, keep the most sensitive layers in float

    def verdict(self, d: Drift) -> Verdict:
        return verdict(self.limits, d)

    def holds(self, d: Drift) -> bool:
        return self.verdict(d).passed

    def excess(self, d: Drift) -> float:
        """Largest fraction of a limit used (> 1 means over budget)."""
        return self.verdict(d).excess()

    def words(self) -> str:
        return ", ".join(f"{METRICS[k].words} <= {v:g}" for k, v in self.limits.items)

    def to_dict(self) -> dict:
        return {**self.limits.to_dict(), "max_float_layers": self.max_float_layers}


def budget_for(opts: BudgetOptions, precision: str) -> Budget | None:
    """The drift budget for fp16/int8 (None for fp32, which is held to parity instead)."""
    if precision == "fp32":
        if opts.given():
            raise InputError(
                f"{', '.join(opts.given())} applies to fp16/int8 exports; fp32 is held to "
                "--parity-tol"
            )
        return None
    unknown = sorted(set(opts.limits) - set(EXPORT_LIMITS))
    if unknown:
        raise InputError(f"export takes no limit on {', '.join(unknown)}")
    limits = limits_from(dict(opts.limits), EXPORT_DEFAULTS)
    cap = opts.max_float_layers
    if cap is not None:
        if not opts.accuracy_control:
            raise InputError("--max-float-layers applies only with --accuracy-control; add it")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise InputError(f"--max-float-layers must be a positive integer, got {cap!r}")
    return Budget(limits, max_float_layers=cap, accuracy_control=opts.accuracy_control)
