"""What `edgemed compress` was asked to do, and the checks that refuse a bad request up front."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgemed.compress import METHODS
from edgemed.errors import InputError

DEFAULT_EPOCHS = {
    "prune": 5,
    "channel-prune": 8,
    "svd": 5,
    "tucker": 5,
    "distill": 15,
    "binarize": 10,
}
# Which method takes which setting (flags given to a method that ignores them are refused).
SETTINGS = {
    "prune": ("amount",),
    "channel-prune": ("amount",),
    "svd": ("rank", "energy"),
    "tucker": ("rank", "energy"),
    "distill": ("teacher", "temperature", "alpha"),
    "binarize": (),
}
FLAGS = ("amount", "rank", "energy", "teacher", "temperature", "alpha")


@dataclass(frozen=True)
class CompressRequest:
    """Everything `edgemed compress` was asked to do (recorded in the card as the config)."""

    model: str
    method: str
    out: Path
    amount: float | None = None
    rank: int | None = None
    energy: float | None = None
    teacher: str | None = None
    temperature: float | None = None
    alpha: float | None = None
    epochs: int | None = None
    lr: float | None = None
    data: str | None = None
    model_args: dict = field(default_factory=dict)
    seed: int = 0
    threads: int | None = None
    force: bool = False

    @property
    def fit_epochs(self) -> int:
        return DEFAULT_EPOCHS[self.method] if self.epochs is None else self.epochs

    @property
    def fit_lr(self) -> float:
        return self.lr if self.lr is not None else (3e-3 if self.method == "distill" else 1e-3)

    @property
    def kd_temperature(self) -> float:
        return 4.0 if self.temperature is None else self.temperature

    @property
    def kd_alpha(self) -> float:
        return 0.7 if self.alpha is None else self.alpha

    def settings(self) -> dict:
        """The method's effective settings (defaults filled in)."""
        s = {k: getattr(self, k) for k in SETTINGS[self.method] if getattr(self, k) is not None}
        if self.method == "distill":
            s.update(temperature=self.kd_temperature, alpha=self.kd_alpha)
        return {**s, "epochs": self.fit_epochs, "lr": self.fit_lr, "seed": self.seed}

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["out"] = str(self.out)
        return d


def check_request(req: CompressRequest) -> None:
    """Refuse unknown methods, missing or misplaced settings and out-of-range values (one line)."""
    if req.method not in METHODS:
        raise InputError(
            f"unknown compression method {req.method!r}; choose one of {', '.join(METHODS)}"
        )
    wanted = SETTINGS[req.method]
    extra = [f"--{k}" for k in FLAGS if getattr(req, k) is not None and k not in wanted]
    if extra:
        raise InputError(
            f"{', '.join(extra)} does not apply to --method {req.method}; it takes "
            f"{', '.join('--' + k for k in wanted) or 'no method setting'}"
        )
    _check_method_settings(req)
    if req.epochs is not None and req.epochs < (1 if req.method == "distill" else 0):
        raise InputError("--epochs must be >= 0 (>= 1 for distill)")
    if req.lr is not None and req.lr <= 0:
        raise InputError("--lr must be positive")
    if req.model_args and req.method != "distill":
        raise InputError("--model-arg only applies to a zoo student of --method distill")
    if req.threads is not None and req.threads < 1:
        raise InputError("--threads must be >= 1")


def _check_method_settings(req: CompressRequest) -> None:
    m = req.method
    if m in ("prune", "channel-prune"):
        if req.amount is None:
            raise InputError(f"--method {m} needs --amount X, the fraction to remove (0 < X < 1)")
        if not 0.0 < req.amount < 1.0:
            raise InputError(f"--amount must be between 0 and 1 (exclusive), got {req.amount}")
    elif m in ("svd", "tucker"):
        if (req.rank is None) == (req.energy is None):
            raise InputError(
                f"--method {m} needs exactly one of --rank R or --energy E (0 < E <= 1)"
            )
        if req.rank is not None and req.rank < 1:
            raise InputError(f"--rank must be >= 1, got {req.rank}")
        if req.energy is not None and not 0.0 < req.energy <= 1.0:
            raise InputError(f"--energy must be in (0, 1], got {req.energy}")
    elif m == "distill":
        if not req.teacher:
            raise InputError(
                "--method distill needs --teacher MODEL (a trained, larger model's dir)"
            )
        if req.temperature is not None and req.temperature <= 0:
            raise InputError(f"--temperature must be positive, got {req.temperature}")
        if req.alpha is not None and not 0.0 <= req.alpha <= 1.0:
            raise InputError(f"--alpha must be in [0, 1], got {req.alpha}")
