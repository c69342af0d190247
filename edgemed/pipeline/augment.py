"""On-the-fly training augmentation: batched torch ops on the CPU, one random draw per image.

Geometry (rotation, translation, scaling, optional horizontal flip) is one affine resampling of
the batch; intensity (brightness, contrast, gamma) is applied in the [0, 1] pixel space the
contract normalizes from. Every channel of an image gets the same draw, so 1- and 3-channel data
are augmented identically. Only the training loop calls this: validation, test and calibration
images never pass through it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from edgemed.errors import InputError

LEVELS = ("none", "light", "strong")


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random draws: rotate +-degrees, translate +-fraction of the size, zoom
    factor between 1/scale and scale (log-uniform; 1 = none), intensity +- fraction (brightness
    shift, contrast and log-gamma)."""

    level: str = "light"
    rotate: float = 10.0
    translate: float = 0.06
    scale: float = 1.08
    intensity: float = 0.1
    hflip: bool = False

    @property
    def active(self) -> bool:
        return self.hflip or any((self.rotate, self.translate, self.scale != 1, self.intensity))

    def to_dict(self) -> dict:
        return asdict(self)


_PRESETS = {
    "none": dict(rotate=0.0, translate=0.0, scale=1.0, intensity=0.0),
    "light": dict(rotate=10.0, translate=0.06, scale=1.08, intensity=0.1),
    "strong": dict(rotate=20.0, translate=0.12, scale=1.15, intensity=0.25),
}
# flag -> (field, lowest, highest, meaning)
_LIMITS = {
    "--rotate": ("rotate", 0.0, 180.0, "degrees"),
    "--translate": ("translate", 0.0, 0.5, "a fraction of the image size"),
    "--scale": ("scale", 1.0, 2.0, "the largest zoom factor; zooms lie in 1/scale..scale"),
    "--intensity": ("intensity", 0.0, 0.9, "a fraction"),
}


def augment_settings(level: str, hflip: bool = False, **overrides: float | None) -> AugmentSettings:
    """The preset of `level` with any given range overridden; out-of-range values are refused
    naming the command-line flag."""
    if level not in _PRESETS:
        raise InputError(f"--augment must be one of {', '.join(LEVELS)}, got {level!r}")
    values = dict(_PRESETS[level])
    for key, value in overrides.items():
        if key not in values:
            raise InputError(f"unknown augmentation setting {key!r}")
        if value is not None:
            values[key] = value
    settings = AugmentSettings(level=level, hflip=bool(hflip), **values)
    check_augment(settings)
    return settings


def check_augment(s: AugmentSettings) -> None:
    """Refuse ranges that are negative, not finite or past their bound, naming the flag."""
    import math

    for flag, (name, low, high, meaning) in _LIMITS.items():
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{flag} must be a number ({meaning}), got {v!r}")
        if not low <= v <= high:
            raise InputError(
                f"{flag} must be between {low:g} and {high:g} ({meaning}), got {v:g}; "
                "use --augment none to turn augmentation off"
            )


def without_augment(s: AugmentSettings) -> AugmentSettings:
    return replace(s, level="none", hflip=False, **_PRESETS["none"])


def augment_batch(x, s: AugmentSettings, mean, std, gen):
    """A randomly augmented copy of the normalized NCHW float batch `x`.

    `mean`/`std` are (1, C, 1, 1) tensors of the contract's normalization; `gen` a torch.Generator
    (the draws are reproducible from the training seed).
    """
    if not s.active:
        return x
    x = _geometry(x, s, gen)
    if s.intensity > 0:
        x = (_intensity(x * std + mean, s.intensity, gen) - mean) / std
    return x


def _uniform(n: int, half: float, gen):
    import torch

    return (torch.rand(n, generator=gen) * 2 - 1) * half


def _geometry(x, s: AugmentSettings, gen):
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    if not (s.rotate or s.translate or s.scale != 1 or s.hflip):
        return x
    angle = _uniform(n, s.rotate * math.pi / 180, gen)
    zoom = torch.exp(_uniform(n, math.log(s.scale), gen))
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if s.hflip else torch.ones(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = _uniform(2 * n, 2 * s.translate, gen).reshape(n, 2)  # grid spans [-1, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _intensity(x01, amount: float, gen):
    """Contrast around the image mean, brightness shift, then gamma, on [0, 1] pixels."""
    import torch

    n = x01.shape[0]
    shape = (n, 1, 1, 1)
    contrast = (1 + _uniform(n, amount, gen)).reshape(shape)
    bright = _uniform(n, amount, gen).reshape(shape)
    gamma = torch.exp(_uniform(n, amount, gen)).reshape(shape)
    centre = x01.mean(dim=(1, 2, 3), keepdim=True)
    y = ((x01 - centre) * contrast + centre + bright).clamp(0.0, 1.0)
    return y.pow(gamma)
