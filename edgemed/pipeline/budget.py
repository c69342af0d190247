"""The drift budget an FP16/INT8 export is held to (FP32 is held to --parity-tol instead): the
evaluation core's export limits plus accuracy control's own settings, from the export options."""

from __future__ import annotations

from dataclasses import dataclass

from edgemed.backends.quant import LIMIT_OPTIONS
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

BUDGET_OPTIONS = (*LIMIT_OPTIONS, "accuracy_control", "max_float_layers")


@dataclass(frozen=True)
class Budget:
    """How far a reduced-precision artifact may drift from FP32 on the validation split."""

    limits: Limits
    max_float_layers: int | None = None  # accuracy control: at most this many layers in float

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


def budget_from_options(options: dict, precision: str) -> Budget | None:
    """The drift budget for fp16/int8 (None for fp32, which is held to parity instead)."""
    if precision == "fp32":
        given = [f"--{k.replace('_', '-')}" for k in BUDGET_OPTIONS if options.get(k) is not None]
        if given:
            raise InputError(
                f"{', '.join(given)} applies to fp16/int8 exports; fp32 is held to --parity-tol"
            )
        return None
    given = {k: options.get(METRICS[k].flag[2:].replace("-", "_")) for k in EXPORT_LIMITS}
    limits = limits_from(given, EXPORT_DEFAULTS)
    cap = options.get("max_float_layers")
    if cap is not None:
        if not options.get("accuracy_control"):
            raise InputError("--max-float-layers applies only with --accuracy-control; add it")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise InputError(f"--max-float-layers must be a positive integer, got {cap!r}")
    return Budget(limits, max_float_layers=cap)
