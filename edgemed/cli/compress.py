"""`edgemed compress`: prune, factorize, distill or binarize a trained model into a new training dir."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli.options import (
    COUNT,
    FINITE,
    POSITIVE,
    force_option,
    max_pixels_option,
    model_arg_option,
    out_option,
)
from edgemed.compress import METHODS
from edgemed.errors import InputError


@click.command()
@click.option(
    "--model",
    help="Trained model (training dir or .pt); for distill the student: a zoo name or a training dir.",
)
@click.option(
    "--method",
    help=f"One of {', '.join(METHODS)}.",
)
@click.option("--amount", type=FINITE, help="Fraction to remove (prune, channel-prune), 0 < X < 1.")
@click.option("--rank", type=COUNT, help="Rank of every factorized layer (svd, tucker).")
@click.option(
    "--energy", type=FINITE, help="Keep this fraction of squared singular values (svd, tucker)."
)
@click.option("--teacher", help="Trained teacher model dir (distill).")
@click.option("--temperature", type=FINITE, help="Distillation temperature (default 4).")
@click.option("--alpha", type=FINITE, help="Weight of the soft (teacher) loss, 0-1 (default 0.7).")
@click.option(
    "--epochs",
    type=COUNT,
    help="Fine-tuning epochs (default: the method's own, recorded in card.json).",
)
@click.option("--lr", type=POSITIVE, help="Peak learning rate (default: the method's own).")
@click.option(
    "--data", help="Data to fine-tune and evaluate on (default: the data in the model card)."
)
@model_arg_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=COUNT, help="torch intra-op threads (default: all cores).")
@max_pixels_option
@out_option
@force_option
def compress(
    model,
    method,
    amount,
    rank,
    energy,
    teacher,
    temperature,
    alpha,
    epochs,
    lr,
    data,
    model_args,
    seed,
    threads,
    out,
    force,
) -> None:
    """Compress MODEL by METHOD, fine-tune, and write model.pt + card.json (before/after numbers)."""
    from edgemed.compress.request import CompressRequest  # lazy: --help
    from edgemed.models import parse_model_args  # lazy: --help

    if not model or not method:
        raise InputError("edgemed compress needs --model MODEL and --method METHOD")
    req = CompressRequest(
        model=model,
        method=method,
        out=Path(out),
        amount=amount,
        rank=rank,
        energy=energy,
        teacher=teacher,
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        lr=lr,
        data=data,
        model_args=parse_model_args(model_args),
        seed=seed,
        threads=threads,
        force=force,
    )
    from edgemed.compress.pipeline import run_compress  # lazy: --help

    click.echo(compress_summary(run_compress(req), out))


def compress_summary(card: dict, out) -> str:
    c = card["compression"]
    b, a = c["before"], c["after"]
    return (
        f"{c['method']}: test AUC {b['test_auc']:.4f} -> {a['test_auc']:.4f} (drop {c['auc_drop']:+.4f}), "
        f"params {b['params']:,} -> {a['params']:,}, MACs {b['macs'] / 1e6:.2f} M -> {a['macs'] / 1e6:.2f} M, "
        f"size {b['size_bytes'] / 1024:.0f} -> {a['size_bytes'] / 1024:.0f} KiB -> {out}"
    )
