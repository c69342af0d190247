"""`edgemed build-engine`: build a TensorRT engine on this device from a TensorRT-ready artifact."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import force_option, limit_options
from edgemed.evaluation.limits import EXPORT_DEFAULTS, EXPORT_LIMITS


@click.command("build-engine")
@click.argument("artifact", type=click.Path())
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Engine precision (default: the artifact's; FP16 can be built from an FP32 artifact).",
)
@click.option(
    "--workspace-mb",
    type=click.IntRange(min=1),
    help="TensorRT workspace limit (default: the profile's).",
)
@click.option(
    "--dla-core", type=int, help="Run on this DLA core with GPU fallback (Jetson AGX Orin: 0 or 1)."
)
@click.option(
    "--timing-cache",
    type=click.Path(),
    help="Tactic timing cache to read and update (default: one per GPU and TensorRT version).",
)
@click.option(
    "--max-batch",
    type=int,
    default=32,
    show_default=True,
    help="Largest batch the engine accepts (optimized for batch 1).",
)
@limit_options(EXPORT_DEFAULTS, keys=EXPORT_LIMITS)  # held on the shipped validation images
@click.option(
    "--out",
    type=click.Path(),
    help="Engine directory (default: ARTIFACT-engine-PRECISION; refused if it exists).",
)
@force_option
def build_engine(
    artifact,
    precision,
    workspace_mb,
    dla_core,
    timing_cache,
    max_batch,
    limits_given,
    out,
    force,
) -> None:
    """Build a TensorRT engine from ARTIFACT (made by `edgemed export --target tensorrt`) here.

    Needs TensorRT and an NVIDIA GPU (a Jetson, or a desktop GPU): engines run only on the GPU
    model and TensorRT version that built them. The engine is re-checked on the artifact's
    validation images against the FP32 reference before it is written.
    """
    from edgemed.pipeline.engine_build import (  # lazy: --help
        BuildEngineRequest,
        build_engine,
        default_out,
    )

    req = BuildEngineRequest(
        artifact=Path(artifact),
        out=Path(out) if out else None,
        precision=precision,
        workspace_mb=workspace_mb,
        dla_core=dla_core,
        timing_cache=Path(timing_cache) if timing_cache else None,
        max_batch=max_batch,
        limits_given=tuple((k, v) for k, v in limits_given.items() if v is not None),
        force=force,
    )
    m = build_engine(req)
    e, d = m["engine"], m["drift"]
    auc = f", AUC drop {d['auc_drop']:+.4f}" if d.get("auc_drop") is not None else ""
    click.echo(
        f"built {m['precision']} engine on {e['gpu_name']} (sm {e['compute_capability']}, TensorRT "
        f"{e['tensorrt']}) in {e['build_seconds']:.1f} s; drift vs FP32 on {d['n']} images: "
        f"flip rate {d['flip_rate']:.2%}{auc} -> {default_out(req, m['precision'])}"
    )
