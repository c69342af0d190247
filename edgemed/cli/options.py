"""Click options shared by several commands."""

from __future__ import annotations

import click

from edgemed.evaluation.limits import METRICS

out_option = click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(),
    help="Output directory (refused if it exists, unless --force).",
)
force_option = click.option(
    "--force", is_flag=True, help="Replace an existing output (atomically, after success)."
)
model_arg_option = click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keyword argument for the model factory (repeatable; values parsed as JSON).",
)


def output_options(f):
    """--output-name / --output-index: which output of a tuple/dict/multi-output model is the
    logits; the command receives `output` (str, int or None)."""
    f = click.option(
        "--output-index",
        type=click.IntRange(min=0),
        help="Position of the logits when the model returns a tuple or list (or ONNX outputs).",
    )(f)
    f = click.option(
        "--output-name",
        help="Key of the logits when the model returns a dict (or the ONNX output's name).",
    )(f)
    return f


def output_choice(output_name: str | None, output_index: int | None) -> str | int | None:
    if output_name is not None and output_index is not None:
        raise click.UsageError("give --output-name or --output-index, not both")
    return output_index if output_index is not None else output_name


def _set_max_pixels(ctx: click.Context, param: click.Parameter, value: int) -> int:
    from edgemed.imagecheck import set_max_pixels  # lazy: --help

    set_max_pixels(value)
    return value


max_pixels_option = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=64_000_000,
    show_default=True,
    expose_value=False,
    is_eager=True,
    callback=_set_max_pixels,
    help="Refuse images whose header declares more pixels (checked before decoding).",
)


class FiniteFloat(click.ParamType):
    """A float that is finite (NaN and Inf are refused, never compared) and above `low`."""

    name = "number"

    def __init__(self, low: float | None = None, low_open: bool = True) -> None:
        self.low, self.low_open = low, low_open

    def convert(self, value, param, ctx):
        import math

        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            self.fail(f"{v:g} must be {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        return v


FINITE = FiniteFloat()  # range checked where the meaning is known
POSITIVE = FiniteFloat(0.0)
NON_NEGATIVE = FiniteFloat(0.0, low_open=False)
COUNT = click.IntRange(min=1)


def limit_options(defaults: tuple[str, ...], keys: tuple[str, ...] | None = None):
    """One flag per gateable metric of the evaluation core (edgemed.evaluation.limits.METRICS);
    the command receives them as `limits_given` (metric key -> value or None). `defaults` are the
    metrics this command gates even when their flag is not given (shown in --help)."""
    import functools

    chosen = [k for k in METRICS if keys is None or k in keys]

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            given = {k: kwargs.pop(f"limit_{k}") for k in chosen}
            return f(*args, limits_given=given, **kwargs)

        for key in reversed(chosen):
            m = METRICS[key]
            limit = "a floor" if m.kind == "min" else "a ceiling"
            default = f" (default {m.default:g})" if key in defaults else " (default: not gated)"
            text = f"Gate ({limit}): {m.words}{default}."
            wrapper = click.option(m.flag, f"limit_{key}", type=FINITE, help=text)(wrapper)
        return wrapper

    return decorate


def executor_options(f):
    """--executor local|ray|ray:HOST:PORT and --workers (CPUs of a local Ray)."""
    f = click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="With --executor ray (no address): CPUs of the local Ray (default: all cores).",
    )(f)
    return click.option(
        "--executor",
        default="local",
        show_default=True,
        metavar="local|ray|ray:HOST:PORT",
        help="Where jobs run: here, a local Ray started for this run, or a Ray cluster "
        "(needs edgemed[cluster]).",
    )(f)
