"""`edgemed train`: train a zoo or factory model on CPU, write checkpoint + model card."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import (
    COUNT,
    POSITIVE,
    force_option,
    max_pixels_option,
    model_arg_option,
    out_option,
    output_choice,
    output_options,
)
from edgemed.cli.recipe import recipe_from_options, recipe_options
from edgemed.errors import InputError


@click.command()
@click.option(
    "--data",
    required=True,
    help="MedMNIST .npz, a folder of class folders, or 'embedded' (bundled chest X-ray subset).",
)
@click.option(
    "--model",
    "model_name",
    default="cnn",
    show_default=True,
    help="Zoo name or package.module:factory.",
)
@model_arg_option
@output_options
@click.option("--width", type=POSITIVE, help="Width multiplier (zoo models).")
@click.option("--depth", type=POSITIVE, help="Depth multiplier (zoo CNNs).")
@click.option("--groups", type=COUNT, help="Groups for cnn-grouped.")
@click.option("--rank", type=COUNT, help="Rank for cnn-lowrank.")
@click.option("--epochs", type=COUNT, default=15, show_default=True)
@click.option("--batch-size", type=COUNT, default=64, show_default=True)
@click.option("--lr", type=POSITIVE, default=3e-3, show_default=True)
@click.option(
    "--patience",
    type=COUNT,
    help="Early stopping after N epochs without a val AUC gain, counted only once the cosine "
    "LR is below half its peak (default: off; the best-val epoch is kept either way).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=8, max=4096),
    help="Resize images to SIZE x SIZE (default: npz native, folders 128).",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    help="Input channels (default: 3 for an npz of RGB images, e.g. PathMNIST; else 1).",
)
@click.option(
    "--near-duplicates",
    is_flag=True,
    help="Also keep perceptually near-identical images in one split.",
)
@recipe_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--class-names",
    help="Comma-separated names of the classes (multi-class) or labels (multi-label, in label "
    "column order), recorded in the contract; the count must match the data.",
)
@click.option("--threads", type=COUNT, help="torch intra-op threads (default: all cores).")
@max_pixels_option
@out_option
@force_option
def train(
    data,
    model_name,
    model_args,
    output_name,
    output_index,
    width,
    depth,
    groups,
    rank,
    epochs,
    batch_size,
    lr,
    patience,
    image_size,
    channels,
    near_duplicates,
    seed,
    class_names,
    threads,
    out,
    force,
    **recipe,
) -> None:
    """Train a classifier with early stopping on validation AUC; write model.pt and card.json."""
    from edgemed.data.npz import parse_names
    from edgemed.data.peek import native_channels
    from edgemed.fileio import refuse_existing
    from edgemed.models import ModelSpec, parse_model_args
    from edgemed.pipeline.training import TrainConfig, write_training_dir
    from edgemed.pipeline.training import train as run_train

    refuse_existing(Path(out), force)
    kwargs = parse_model_args(model_args)
    for key, value in (("width", width), ("depth", depth), ("groups", groups), ("rank", rank)):
        if value is not None:
            kwargs[key] = value
    cfg = TrainConfig(
        data=data,
        model=ModelSpec(model_name, kwargs, output_choice(output_name, output_index)),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
        image_size=(image_size, image_size) if image_size else None,
        channels=int(channels) if channels else native_channels(data),
        near_duplicates=near_duplicates,
        threads=threads,
        class_names=parse_names(class_names, "--class-names"),
        **recipe_from_options(recipe),
    )
    _check(cfg)
    result = run_train(cfg)
    write_training_dir(result, cfg.model, Path(out), force)
    init = result.card["training"]["recipe"]["init"]
    if init:
        click.echo(init_line(init))
    click.echo(summary_line(result.card, out))
    v = result.card.get("validation") or {}
    for block in (v, result.card["test"]):  # multi-label/multi-class: named per label
        if block.get("warning"):
            click.echo(f"edgemed: WARNING: {block['warning']}; the card records it", err=True)
    if v.get("better_than_chance") is False and "per_label" not in v:
        lo, hi = v["auc_ci95"]
        click.echo(
            f"edgemed: WARNING: this model is NOT better than chance on validation (AUC "
            f"{v['auc']:.3f}, 95% CI {lo:.3f}-{hi:.3f}); the card records it and `edgemed bundle` "
            "will refuse it: train longer, lower the learning rate or check the data",
            err=True,
        )
    _warn_overlap(result.card["data"])
    dup = result.card["data"].get("duplicates")
    if dup:
        click.echo(
            f"split: {dup['exact_groups']} groups of byte-identical images ({dup['exact_redundant']} redundant "
            f"copies) and {dup['near_redundant']} near-duplicates kept within one split; sizes "
            f"{result.card['data']['sizes']}"
        )


def _warn_overlap(data: dict) -> None:
    from edgemed.data.overlap import overlap_warning

    line = overlap_warning(data["split_overlap"], data["path"])
    if line:
        click.echo(f"edgemed: warning: {line}; the card records it", err=True)


def _check(cfg) -> None:

    for name in ("epochs", "batch_size"):  # --patience: check_recipe
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if not cfg.lr > 0:
        raise InputError("--lr must be a positive number")
    for key in ("width", "depth", "groups", "rank"):
        v = cfg.model.kwargs.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and v < 1e6):
            raise InputError(
                f"--{key} (or --model-arg {key}=...) must be a positive number, got {v!r}"
            )


def init_line(init: dict) -> str:
    return (
        f"init {init['path']}: {init['loaded']} tensors loaded, {len(init['adapted'])} adapted "
        f"{init['adapted']}, {len(init['reinitialised'])} re-initialised {init['reinitialised']}, "
        f"{init['ignored_count']} ignored"
    )


def summary_line(card: dict, out) -> str:
    t, c = card["test"], card["complexity"]
    ci = t.get("auc_ci95")
    ci_text = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    if "per_label" in t:
        ci_text = f" (macro over the {len(t['auc_macro_over'])} of {len(t['per_label'])} labels evaluable)"
    sens = (
        f", sens {t['sensitivity']:.3f} spec {t['specificity']:.3f} @ {t['threshold']:.3f}"
        if "sensitivity" in t
        else ""
    )
    return (
        f"trained {card['model']['name']}: test AUC {t['auc']:.4f}{ci_text}{sens}, "
        f"{c['params']:,} params, {c['macs'] / 1e6:.1f} M MACs, {card['training']['seconds']:.0f} s -> {out}"
    )
