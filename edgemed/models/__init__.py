"""The model zoo and model sources. Importing this package does not import torch; building does."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from edgemed.errors import InputError

# name -> (factory "module:attr", fixed kwargs). Zoo factories take in_channels and num_outputs.
ZOO: dict[str, tuple[str, dict]] = {
    "cnn": ("edgemed.models.zoo:CompactCNN", {}),
    "cnn-grouped": ("edgemed.models.zoo:CompactCNN", {"conv": "grouped"}),
    "cnn-dwsep": ("edgemed.models.zoo:CompactCNN", {"conv": "dwsep"}),
    "cnn-lowrank": ("edgemed.models.zoo:CompactCNN", {"conv": "lowrank"}),
    "densenet-small": ("edgemed.models.zoo:SmallDenseNet", {}),
    "mobilenetv2-small": ("edgemed.models.zoo:SmallMobileNetV2", {}),
    "resnet18": ("edgemed.models.zoo:ResNet18", {}),
}
DEFAULT_MODEL = "cnn"


@dataclass(frozen=True)
class ModelSpec:
    """Which architecture: a zoo name or a `package.module:factory`, and its keyword arguments."""

    name: str
    kwargs: dict = field(default_factory=dict)

    @property
    def is_zoo(self) -> bool:
        return self.name in ZOO

    def to_dict(self) -> dict:
        return {"name": self.name, "kwargs": dict(self.kwargs)}


def build_model(spec: ModelSpec, in_channels: int, num_outputs: int):
    """Instantiate the torch module for `spec` (zoo nets get in_channels/num_outputs injected)."""
    if spec.is_zoo:
        target, fixed = ZOO[spec.name]
        kwargs = {**fixed, "in_channels": in_channels, "num_outputs": num_outputs, **spec.kwargs}
    elif ":" in spec.name:
        target, kwargs = spec.name, dict(spec.kwargs)
    else:
        raise InputError(
            f"unknown model {spec.name!r}; choose one of {', '.join(ZOO)} or give package.module:factory"
        )
    factory = load_factory(target)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise InputError(f"model {spec.name!r} does not accept these arguments: {exc}") from None


def load_factory(target: str):
    """Import `package.module:attr`; a missing module or attribute is an InputError."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"cannot import {module_name!r} for model factory {target!r} ({exc}); install it"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InputError(f"module {module_name!r} has no factory {attr!r}") from None


def parse_model_args(pairs: tuple[str, ...] | list[str]) -> dict:
    """`key=value` strings -> kwargs, values parsed as JSON when possible (2 -> int, true -> bool)."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"model argument {pair!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
