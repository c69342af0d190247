"""`edgemed study`: the compact-model study (grid over the zoo + a large baseline)."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import COUNT, executor_options, force_option, out_option


@click.command()
@click.option(
    "--data",
    required=True,
    help="MedMNIST .npz or a folder of class folders (split duplicate-aware).",
)
@click.option("--quick", is_flag=True, help="A 3-point grid (for tests and smoke runs).")
@click.option(
    "--extended",
    is_flag=True,
    help="Add the 3x3-stem ResNet-18 (and MONAI DenseNet-121 if monai is installed) as extra baselines.",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted study (or extend a finished one)."
)
@click.option(
    "--epochs", type=COUNT, default=10, show_default=True, help="Training epochs per model."
)
@click.option(
    "--patience",
    type=COUNT,
    help="Early-stopping patience, counted once the cosine LR is below half (default: off).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=8, max=4096),
    help="Resize to SIZE x SIZE (default: npz native, folders 64).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=COUNT, help="torch training threads (default: all cores).")
@click.option(
    "--latency-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="Timed seconds per latency measurement (after as much warm-up).",
)
@executor_options
@out_option
@force_option
def study(
    data,
    quick,
    extended,
    resume,
    epochs,
    patience,
    image_size,
    seed,
    threads,
    latency_seconds,
    executor,
    workers,
    out,
    force,
) -> None:
    """Train, export (ORT INT8) and time a grid of compact models and a large baseline;
    write study.json, study.md and pareto.svg."""
    from edgemed.executors import parse_executor  # lazy: --help
    from edgemed.study import StudyConfig  # lazy: --help
    from edgemed.study.report import pick_lines  # lazy: --help
    from edgemed.study.run import run_study  # lazy: --help

    cfg = StudyConfig(
        data=data,
        out=Path(out),
        quick=quick,
        extended=extended,
        resume=resume,
        force=force,
        epochs=epochs,
        patience=patience,
        image_size=image_size,
        seed=seed,
        threads=threads,
        latency_seconds=latency_seconds,
    )
    result = run_study(cfg, parse_executor(executor, workers))
    for line in pick_lines(result):
        click.echo(line.removeprefix("- ").replace("**", ""))
    click.echo(f"study of {len(result['rows'])} models -> {out} (study.md, study.json, pareto.svg)")
