"""The compact-model study: a grid over the zoo (depth/width multipliers; standard, grouped,
depthwise-separable and low-rank convolutions; a small DenseNet and MobileNetV2) plus one large
baseline, each trained, exported to ONNX Runtime (INT8 when the backend offers it) and timed.

Importing this package does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgemed.errors import InputError


@dataclass(frozen=True)
class GridPoint:
    """One model of the study: a unique name, a zoo (or factory) model and its kwargs, a role."""

    name: str
    model: str
    kwargs: dict = field(default_factory=dict)
    role: str = "compact"  # or "baseline"
    family: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "kwargs": dict(self.kwargs),
            "role": self.role,
            "family": self.family,
        }


def _cnn(kind: str, width: float, depth: float = 1.0) -> GridPoint:
    model = "cnn" if kind == "standard" else f"cnn-{kind}"
    return GridPoint(
        f"{model}-w{width:g}-d{depth:g}", model, {"width": width, "depth": depth}, family=model
    )


# The default large baseline: torchvision-shaped ResNet-18 (7x7/2 stem + max-pool), 11.2 M params.
BASELINE = GridPoint("resnet18", "resnet18", {"small_input": False}, "baseline", "resnet18")


def default_grid() -> tuple[GridPoint, ...]:
    """13 points: CNN widths x depths, four conv kinds, DenseNet, MobileNetV2, the baseline."""
    cnn = [_cnn("standard", w, d) for w in (0.25, 0.5, 1.0) for d in (0.5, 1.0)]
    cnn.append(_cnn("standard", 2.0, 1.0))
    kinds = [_cnn(k, 1.0) for k in ("grouped", "dwsep", "lowrank")]
    others = [
        GridPoint("densenet-small", "densenet-small", {}, family="densenet-small"),
        GridPoint("mobilenetv2-small", "mobilenetv2-small", {}, family="mobilenetv2-small"),
    ]
    return (*cnn, *kinds, *others, BASELINE)


def quick_grid() -> tuple[GridPoint, ...]:
    """3 tiny points for tests: two compact CNNs and a width-1/8 ResNet-18 as the 'baseline'."""
    return (
        _cnn("standard", 0.25, 0.5),
        _cnn("dwsep", 0.5, 0.5),
        GridPoint(
            "resnet18-w0.125",
            "resnet18",
            {"width": 0.125, "small_input": False},
            "baseline",
            "resnet18",
        ),
    )


def extended_points(channels: int, num_outputs: int) -> tuple[GridPoint, ...]:
    """Optional extra baselines: the 3x3-stem (MedMNIST-style) ResNet-18, and MONAI's
    DenseNet-121 when monai is installed."""
    import importlib.util

    pts = [GridPoint("resnet18-stem3", "resnet18", {"small_input": True}, "baseline", "resnet18")]
    if importlib.util.find_spec("monai") is not None:
        kw = {"spatial_dims": 2, "in_channels": channels, "out_channels": num_outputs}
        pts.append(
            GridPoint(
                "monai-densenet121",
                "monai.networks.nets:DenseNet121",
                kw,
                "baseline",
                "densenet121",
            )
        )
    return tuple(pts)


@dataclass(frozen=True)
class StudyConfig:
    """Everything `edgemed study` was asked to do."""

    data: str
    out: Path
    quick: bool = False
    extended: bool = False
    resume: bool = False
    force: bool = False
    epochs: int = 10
    patience: int | None = None  # off, as `edgemed train` (pipeline/loop.py says why)
    image_size: int | None = None
    channels: int = 1
    seed: int = 0
    threads: int | None = None
    latency_seconds: float = 1.0
    near_duplicates: bool = False

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["out"] = str(self.out)
        return d

    def identity(self) -> dict:
        """Settings that must match for --resume to reuse finished grid points."""
        keys = ("epochs", "patience", "image_size", "channels", "seed", "near_duplicates")
        return {k: getattr(self, k) for k in keys}


def check_config(cfg: StudyConfig) -> None:
    """One-line errors for bad settings, before anything is read or written."""
    if cfg.epochs < 1:
        raise InputError("--epochs must be >= 1")
    if cfg.patience is not None and cfg.patience < 1:
        raise InputError("--patience must be >= 1")
    if cfg.image_size is not None and cfg.image_size < 8:
        raise InputError(f"--image-size must be >= 8, got {cfg.image_size}")
    if cfg.threads is not None and cfg.threads < 1:
        raise InputError("--threads must be >= 1")
    if cfg.latency_seconds <= 0:
        raise InputError("--latency-seconds must be positive")
    if cfg.resume and cfg.force:
        raise InputError("--resume continues a study and --force starts it over; pass only one")
    if not Path(cfg.data).expanduser().exists() and cfg.data != "embedded":
        raise InputError(
            f"data path {cfg.data} does not exist; pass an .npz file or a folder of class folders"
        )
