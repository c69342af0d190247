"""Click options shared by several commands."""

from __future__ import annotations

import click

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


def limit_options(defaults: tuple[str, ...], keys: tuple[str, ...] | None = None):
    """One flag per gateable metric of the evaluation core (edgemed.evaluation.limits.METRICS);
    the command receives them as `limits_given` (metric key -> value or None). `defaults` are the
    metrics this command gates even when their flag is not given (shown in --help)."""
    import functools

    from edgemed.evaluation.limits import METRICS

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
            wrapper = click.option(m.flag, f"limit_{key}", type=float, help=text)(wrapper)
        return wrapper

    return decorate
