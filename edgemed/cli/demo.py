"""`edgemed demo`: the main job on the embedded default, end to end, with a summary."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.export import export_summary
from edgemed.cli.options import force_option
from edgemed.cli.train import summary_line
from edgemed.errors import EdgemedError


@click.command()
@click.option(
    "--out",
    default="edgemed-demo",
    show_default=True,
    type=click.Path(),
    help="Working directory for all outputs.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True)
@force_option
def demo(out, epochs, force) -> None:
    """Train the default compact CNN on the bundled chest X-ray subset, export it to ONNX (FP32 and
    INT8 calibrated on the bundled train split, plus other quick targets installed here), check
    parity against torch on real images, and bench them side by side against the FP32 model."""
    from edgemed.fileio import refuse_existing  # lazy: --help
    from edgemed.models import ModelSpec  # lazy: --help
    from edgemed.pipeline.export import ExportRequest, run_export  # lazy: --help
    from edgemed.pipeline.training import TrainConfig, train, write_training_dir  # lazy: --help

    root = Path(out)
    refuse_existing(root, force)
    root.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(data="embedded", model=ModelSpec("cnn"), epochs=epochs)
    click.echo(
        f"[1/4] training the default model on the bundled PneumoniaMNIST subset -> {root / 'model'}"
    )
    result = train(cfg)
    write_training_dir(result, cfg.model, root / "model", force=True)

    click.echo(summary_line(result.card, root / "model"))
    click.echo(f"[2/4] exporting to ONNX and checking parity -> {root / 'onnx-fp32'}")
    m = run_export(
        ExportRequest(model=str(root / "model"), target="onnx", out=root / "onnx-fp32", force=True)
    )

    click.echo(export_summary(m, root / "onnx-fp32"))
    click.echo(
        "[3/4] exporting INT8 (calibrated on the bundled train split) and quick extra targets"
    )
    artifacts = [root / "onnx-fp32", *_quick_exports(root)]
    click.echo(f"[4/4] benching {len(artifacts)} artifacts side by side -> {root / 'bench'}")
    _bench(root, artifacts)


# (target, precision) exported after ONNX FP32 when the runtime is installed; each takes seconds.
QUICK_TARGETS = (("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8"))


def _quick_exports(root: Path) -> list[Path]:
    """Export the quick targets; a runtime missing here is skipped with a note saying why."""
    from edgemed.data import embedded_dataset_path  # lazy: --help
    from edgemed.pipeline.export import ExportRequest, run_export  # lazy: --help

    done = []
    for target, precision in QUICK_TARGETS:
        out = root / f"{target}-{precision}"
        why = _unavailable(target)
        if why:
            click.echo(f"  skipped {target} {precision}: {why}", err=True)
            continue
        calib = str(embedded_dataset_path()) if precision == "int8" else None
        req = ExportRequest(
            model=str(root / "model"),
            target=target,
            out=out,
            precision=precision,
            calib=calib,
            force=True,
        )
        try:
            click.echo(export_summary(run_export(req), out))
        except EdgemedError as exc:
            click.echo(f"  skipped {target} {precision}: {exc}", err=True)
            continue
        done.append(out)
    return done


def _unavailable(runtime: str) -> str | None:
    from edgemed.backends import get_backend  # lazy: --help

    try:
        return get_backend(runtime).available()
    except ImportError as exc:
        return f"its backend is not in this edgemed ({exc})"


def _bench(root: Path, artifacts: list[Path]) -> None:
    """Bench every artifact and the torch FP32 reference on the test split; print the table."""
    from edgemed.harness.bench import BenchRequest, enforce, run_bench  # lazy: --help
    from edgemed.harness.report import terminal_table  # lazy: --help

    req = BenchRequest(
        artifacts=tuple(str(a) for a in artifacts),
        data="embedded",
        out=root / "bench",
        force=True,
        include_reference=True,
        seconds=1.0,
    )
    results = run_bench(req)
    click.echo(terminal_table(results))
    click.echo(f"report: {root / 'bench' / 'report.html'}")
    enforce(results, root / "bench")
