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
