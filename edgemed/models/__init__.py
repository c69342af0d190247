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
    "vgg": ("edgemed.models.baselines:VGGStyle", {}),
    "inception": ("edgemed.models.baselines:InceptionStyle", {}),
    "resnet50": ("edgemed.models.baselines:ResNet50Style", {}),
    "vit": ("edgemed.models.baselines:SmallViT", {}),
}
DEFAULT_MODEL = "cnn"


@dataclass(frozen=True)
class ModelSpec:
    """Which architecture: a zoo name or a `package.module:factory`, and its keyword arguments."""

    name: str
    kwargs: dict = field(default_factory=dict)
    output: str | int | None = None  # which output of a tuple/dict-returning model is the logits

    @property
    def is_zoo(self) -> bool:
        return self.name in ZOO

    def to_dict(self) -> dict:
        d = {"name": self.name, "kwargs": dict(self.kwargs)}
        if self.output is not None:
            d["output"] = self.output
        return d


# Compressed checkpoints name this internal factory; its base must itself be allowed. The name is
# an identifier stored in every compressed checkpoint already written (the rebuild lived in
# compress/arch.py then): it is compared, never imported; `edgemed.models.arch.rebuild` runs it.
REBUILD = "edgemed.compress.arch:rebuild"


def build_model(
    spec: ModelSpec,
    in_channels: int,
    num_outputs: int,
    factory: str | None = None,
    origin: str = "the model file",
):
    """Instantiate the torch module for `spec` (zoo nets get in_channels/num_outputs injected).

    A `package.module:factory` is imported only when it equals `factory`, the one the user named
    on the command line for this run: a name read from a file never decides what gets imported.
    """
    check_allowed(spec, factory, origin)
    if spec.name == REBUILD:
        from edgemed.models.arch import rebuild  # lazy: import cycle with its package

        return _call(spec, rebuild, {**spec.kwargs, "factory": factory})
    if spec.is_zoo:
        target, fixed = ZOO[spec.name]
        kwargs = {**fixed, "in_channels": in_channels, "num_outputs": num_outputs, **spec.kwargs}
    else:
        target, kwargs = spec.name, dict(spec.kwargs)
    module = _call(spec, load_factory(target), kwargs)
    if spec.output is None:
        return module
    from edgemed.models.outputs import SelectOutput  # lazy: imports torch

    return SelectOutput(module, spec.output)


def _call(spec: ModelSpec, factory, kwargs: dict):
    try:
        return factory(**kwargs)
    except ImportError as exc:  # an optional dependency imported when the model is built
        from edgemed.models.probe import missing_module_error  # lazy: numpy (models imports none)

        raise missing_module_error(exc, f"model {spec.name!r}") from None
    except (TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"model {spec.name!r} does not accept these arguments: {exc}") from None
    except ValueError as exc:
        raise InputError(
            f"model {spec.name!r} cannot be built with these arguments: {exc}"
        ) from None


def check_allowed(spec: ModelSpec, factory: str | None, origin: str = "the model file") -> None:
    """Refuse a spec naming code the user did not name for this run (compressed bases included)."""
    if not isinstance(spec.name, str) or not isinstance(spec.kwargs, dict):
        raise InputError(
            f"model spec {spec.name!r} is malformed; re-train or re-compress the model"
        )
    if spec.is_zoo:
        return
    if spec.name == REBUILD:
        base = spec.kwargs.get("base")
        if not isinstance(base, dict) or not isinstance(base.get("kwargs", {}), dict):
            raise InputError("compressed model spec has no valid 'base'; re-compress the model")
        check_allowed(ModelSpec(base.get("name"), dict(base.get("kwargs", {}))), factory, origin)
        return
    if ":" not in spec.name:
        raise InputError(
            f"unknown model {spec.name!r}; choose one of {', '.join(ZOO)} or give package.module:factory"
        )
    if spec.name != factory:
        raise InputError(
            f"{origin} asks for model factory {spec.name!r}, which is not a zoo architecture; "
            f"edgemed imports code only when you name it: if you trust it, pass --model {spec.name} "
            "(with --checkpoint FILE) for this run"
        )


def load_factory(target: str):
    """Import `package.module:attr`; a missing module or attribute is an InputError."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise InputError(
                f"cannot import {module_name!r} for model factory {target!r}: no module "
                f"{exc.name!r} here; check the spelling, pip install its package, or add its "
                "folder to PYTHONPATH"
            ) from None
        from edgemed.models.probe import missing_module_error  # lazy: numpy (models imports none)

        raise missing_module_error(exc, f"model factory {target!r}") from None
    except ImportError as exc:
        raise InputError(
            f"cannot import {module_name!r} for model factory {target!r} ({exc}); install it"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InputError(f"module {module_name!r} has no factory {attr!r}") from None


def parse_model_args(pairs: tuple[str, ...] | list[str], flag: str = "--model-arg") -> dict:
    """`key=value` strings -> kwargs, values parsed as JSON when possible (2 -> int, true -> bool)."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            what = "model argument" if flag == "--model-arg" else "option"
            raise InputError(
                f"{flag} {pair!r}: a {what} must be KEY=VALUE, e.g. {flag} {pair or 'key'}=1"
            )
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
