"""The training-recipe options of `edgemed train` (augmentation, imbalance, schedule, init)."""

from __future__ import annotations

import click

from edgemed.pipeline.loss import WEIGHT_CAP

_AUGMENT_HELP = "(default: the --augment level's value)"


def recipe_options(f):
    """Decorate a command with the recipe options; they arrive as keyword arguments."""
    options = [
        click.option(
            "--augment",
            type=click.Choice(["none", "light", "strong"]),
            default="light",
            show_default=True,
            help="On-the-fly augmentation of training images (rotation, shift, zoom, intensity).",
        ),
        click.option(
            "--hflip/--no-hflip",
            default=False,
            show_default=True,
            help="Random horizontal flips (off: laterality matters, e.g. dextrocardia).",
        ),
        click.option("--rotate", type=float, help=f"Max rotation in degrees {_AUGMENT_HELP}."),
        click.option(
            "--translate", type=float, help=f"Max shift, fraction of size {_AUGMENT_HELP}."
        ),
        click.option(
            "--scale",
            type=float,
            help=f"Largest zoom factor (>= 1; zooms in 1/S..S) {_AUGMENT_HELP}.",
        ),
        click.option(
            "--intensity",
            type=float,
            help=f"Max brightness/contrast/gamma change, fraction {_AUGMENT_HELP}.",
        ),
        click.option(
            "--class-weights",
            type=click.Choice(["auto", "none"]),
            default="auto",
            show_default=True,
            help="auto: pos_weight per label / weight per class from the training split.",
        ),
        click.option(
            "--class-weight-cap",
            type=float,
            default=WEIGHT_CAP,
            show_default=True,
            help="Clip every class weight / pos_weight to [1/CAP, CAP] (rare labels).",
        ),
        click.option("--weight-decay", type=float, default=1e-4, show_default=True),
        click.option(
            "--warmup-epochs",
            type=float,
            default=1.0,
            show_default=True,
            help="Linear LR warm-up, then cosine decay to 0 at the last epoch.",
        ),
        click.option(
            "--init",
            "init",
            type=click.Path(dir_okay=False),
            help="Start from these weights: a state dict (.pt/.pth, weights only), an edgemed "
            "model.pt, or .safetensors.",
        ),
        click.option(
            "--freeze-epochs",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="With --init: train only the classifier head for the first N epochs.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def recipe_from_options(o: dict) -> dict:
    """TrainConfig keyword arguments from the recipe options (ranges checked, naming the flag)."""
    from edgemed.pipeline.augment import augment_settings

    augment = augment_settings(
        o["augment"],
        hflip=o["hflip"],
        rotate=o["rotate"],
        translate=o["translate"],
        scale=o["scale"],
        intensity=o["intensity"],
    )
    return {
        "augment": augment,
        "class_weights": o["class_weights"],
        "class_weight_cap": o["class_weight_cap"],
        "weight_decay": o["weight_decay"],
        "warmup_epochs": o["warmup_epochs"],
        "init": o["init"],
        "freeze_epochs": o["freeze_epochs"],
    }
