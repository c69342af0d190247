"""`edgemed demo`: the main job on the embedded default, end to end, with a summary."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import force_option


@click.command()
@click.option(
    "--out",
    default="edgemed-demo",
    show_default=True,
    type=click.Path(),
    help="Working directory for all outputs.",
)
@click.option("--epochs", type=int, default=15, show_default=True)
@force_option
def demo(out, epochs, force) -> None:
    """Train the default compact CNN on the bundled chest X-ray subset, export it to ONNX,
    check parity against torch on real images, and print a summary."""
    from edgemed.export import ExportRequest, run_export
    from edgemed.fileio import refuse_existing
    from edgemed.models import ModelSpec
    from edgemed.training import TrainConfig, train, write_training_dir

    root = Path(out)
    refuse_existing(root, force)
    root.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(data="embedded", model=ModelSpec("cnn"), epochs=epochs)
    click.echo(
        f"[1/2] training the default model on the bundled PneumoniaMNIST subset -> {root / 'model'}"
    )
    result = train(cfg)
    write_training_dir(result, cfg.model, root / "model", force=True)
    from edgemed.cli.train import summary_line

    click.echo(summary_line(result.card, root / "model"))
    click.echo(f"[2/2] exporting to ONNX and checking parity -> {root / 'onnx-fp32'}")
    m = run_export(
        ExportRequest(model=str(root / "model"), target="onnx", out=root / "onnx-fp32", force=True)
    )
    from edgemed.cli.export import export_summary

    click.echo(export_summary(m, root / "onnx-fp32"))
