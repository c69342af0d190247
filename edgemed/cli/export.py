"""`edgemed export`: one trained model -> one runtime artifact (model files + manifest.json)."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import (
    COUNT,
    POSITIVE,
    force_option,
    limit_options,
    max_pixels_option,
    model_arg_option,
    out_option,
    output_choice,
    output_options,
)
from edgemed.evaluation.limits import EXPORT_DEFAULTS, EXPORT_LIMITS
from edgemed.runtimes import RUNTIMES


@click.command()
@click.option(
    "--model",
    required=True,
    help="Training output dir, .pt checkpoint, .onnx file, or package.module:factory.",
)
@click.option(
    "--target",
    required=True,
    help=f"Runtime ({', '.join(RUNTIMES)}), profile name, or profile .toml path.",
)
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True
)
@click.option("--calib", help="Calibration recipe (.toml) or data path, required for int8.")
@click.option(
    "--data", help="Data for parity/drift checks (default: the data recorded in the model card)."
)
@click.option("--checkpoint", help="State-dict checkpoint for a package.module:factory model.")
@click.option(
    "--contract",
    "contract_path",
    help="Contract JSON for factory models or ONNX files without one.",
)
@model_arg_option
@output_options
@click.option(
    "--opset",
    type=click.IntRange(min=13, max=20),
    default=17,
    show_default=True,
    help="ONNX opset for the torch export (13-20).",
)
@click.option("--simplify", is_flag=True, help="Simplify the ONNX graph with onnxslim.")
@click.option(
    "--parity-tol",
    type=POSITIVE,
    default=1e-4,
    show_default=True,
    help="Max |delta p| allowed for FP32 parity.",
)
@click.option(
    "--data-root",
    type=click.Path(),
    help="Directory that a calibration recipe's 'data' is relative to (default: $EDGEMED_DATA, else ../shared/datasets, else the current directory).",
)
@click.option(
    "--calib-count",
    type=COUNT,
    help="Calibration images when --calib is a data path (default 256).",
)
@click.option(
    "--calib-seed",
    type=click.IntRange(min=0),
    help="Which calibration images are drawn when --calib is a data path (default 0).",
)
@click.option(
    "--calib-method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    help="INT8 range estimation (default: the backend's measured best).",
)
@click.option(
    "--granularity",
    type=click.Choice(["per-channel", "per-tensor"]),
    help="INT8 weight quantization granularity (default per-channel).",
)
@click.option(
    "--quant-mode",
    type=click.Choice(["static", "dynamic"]),
    help="INT8 static (calibrated) or dynamic (ONNX Runtime only).",
)
@click.option(
    "--accuracy-control",
    is_flag=True,
    default=None,
    help="Keep the most sensitive layers in float until the drift budget holds.",
)
@limit_options(EXPORT_DEFAULTS, keys=EXPORT_LIMITS)
@click.option(
    "--max-float-layers",
    type=click.IntRange(min=0),
    help="With --accuracy-control: keep at most this many layers in float (default: no cap).",
)
@click.option(
    "--option",
    "backend_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Backend-specific setting (repeatable).",
)
@click.option(
    "--labels",
    help="Comma-separated labels a multi-label artifact reports (default: all); the model file "
    "keeps every output, the contract records the reported ones, and export's budget, bench, the "
    "bundle gate, predict and the SR judge and carry only these.",
)
@click.option(
    "--domain-fpr",
    type=click.FloatRange(min=0.0, max=0.2),
    default=0.01,
    show_default=True,
    help="Domain guard: share of validation images it may flag (0: export without a guard).",
)
@click.option(
    "--feature-output",
    metavar="NAME",
    help="Graph tensor the domain guard reads as features (default: the input of the final "
    "linear layer; 'none': input-space statistics only).",
)
@max_pixels_option
@out_option
@force_option
def export(
    model,
    target,
    precision,
    calib,
    data,
    checkpoint,
    contract_path,
    model_args,
    output_name,
    output_index,
    opset,
    simplify,
    parity_tol,
    data_root,
    calib_count,
    calib_seed,
    calib_method,
    granularity,
    quant_mode,
    accuracy_control,
    limits_given,
    max_float_layers,
    backend_options,
    labels,
    domain_fpr,
    feature_output,
    out,
    force,
) -> None:
    """Export MODEL to TARGET at PRECISION, check it against FP32 on real images, write DIR."""
    from edgemed.calibration import CalibrationOptions  # lazy: --help
    from edgemed.data.npz import parse_names  # lazy: --help
    from edgemed.models import parse_model_args  # lazy: --help
    from edgemed.pipeline.budget import BudgetOptions  # lazy: --help
    from edgemed.pipeline.export import ExportRequest, run_export  # lazy: --help

    quant = {"calib_method": calib_method, "granularity": granularity, "quant_mode": quant_mode}
    options = {k: v for k, v in quant.items() if v is not None}
    options.update(parse_model_args(backend_options, "--option"))
    req = ExportRequest(
        model=model,
        target=target,
        out=Path(out),
        precision=precision,
        force=force,
        calib=calib,
        data=data,
        checkpoint=checkpoint,
        contract=contract_path,
        model_args=parse_model_args(model_args),
        opset=opset,
        simplify=simplify,
        parity_tol=parity_tol,
        calibration=CalibrationOptions(calib_count, data_root, calib_seed),
        budget=BudgetOptions(
            {k: v for k, v in limits_given.items() if v is not None},
            bool(accuracy_control),
            max_float_layers,
        ),
        options=options,
        output=output_choice(output_name, output_index),
        labels=parse_names(labels, "--labels"),
        feature_output=feature_output,
        domain_fpr=domain_fpr,
    )
    manifest = run_export(req)
    click.echo(export_summary(manifest, out))


def export_summary(m: dict, out) -> str:
    size = sum(f["bytes"] for name, f in m["files"].items() if not name.endswith((".json", ".npz")))
    parts = [f"exported {m['target']} {m['precision']} ({size / 1024:.0f} KiB) -> {out}"]
    if m.get("parity"):
        p = m["parity"]
        parts.append(
            f"parity vs {p.get('against', 'torch')}: max |dp| {p['max_abs_dp']:.1e}, "
            f"{p['flips']} flips / {p['n']}"
        )
    d = m.get("drift")
    if d:
        auc = f", AUC drop {d['auc_drop']:+.4f}" if d.get("auc_drop") is not None else ""
        worst = (d.get("worst_labels") or {}).get("auc_drop")
        auc += f" (worst label {worst})" if auc and worst else ""
        if d.get("not_evaluable"):  # named with counts: the split cannot judge them
            auc += "; not evaluable on the validation split: " + ", ".join(
                f"{x['label']} ({x['positives']}+/{x['negatives']}-)" for x in d["not_evaluable"]
            )
        sim = f" (simulated: {d['simulated']})" if d.get("simulated") else ""
        flips = f"flips {d['flips']}/{d['n']} ({d.get('decisive_flips', d['flips'])} decisive)"
        parts.append(f"drift vs FP32{sim}: max |dp| {d['max_abs_dp']:.1e}, {flips}{auc}")
    parts.append(domain_summary(m.get("domain")))
    # e.g. TensorRT: the engine is built on the target device
    step = (m.get("backend") or {}).get("next_step")
    if step:
        parts.append(step.format(out=out))
    return "; ".join(parts)


def domain_summary(domain: dict | None) -> str:
    """One clause on the domain guard the artifact carries (or why it has none)."""
    if not domain:
        return "no domain guard (no validation data here, or --domain-fpr 0): results say domain unknown"
    v = domain["val_flag_rate"]
    what = (
        "features + input statistics" if domain.get("feature_output") else "input statistics only"
    )
    return (
        f"domain guard ({what}): {v['k']}/{v['n']} validation images flagged "
        f"(target {domain['target_fpr']:.1%})"
    )
