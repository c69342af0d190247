"""What `edgemed compress` was asked to do, and the checks that refuse a bad request up front."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgemed.compress import get_method
from edgemed.errors import InputError

# Every method setting (a CLI flag); a method takes the ones its `Method.settings` names.
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
    def spec(self):
        """The `Method` this request names (raises InputError for an unknown name)."""
        return get_method(self.method)

    @property
    def fit_epochs(self) -> int:
        return self.spec.epochs if self.epochs is None else self.epochs

    @property
    def fit_lr(self) -> float:
        return self.spec.lr if self.lr is None else self.lr

    def settings(self) -> dict:
        """The method's effective settings (its defaults filled in)."""
        m = self.spec
        s = {k: getattr(self, k) for k in m.settings if getattr(self, k) is not None}
        s = {**m.defaults, **s}
        return {**s, "epochs": self.fit_epochs, "lr": self.fit_lr, "seed": self.seed}

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["out"] = str(self.out)
        return d


def check_request(req: CompressRequest) -> None:
    """Refuse unknown methods, missing or misplaced settings and out-of-range values (one line)."""
    m = req.spec
    extra = [f"--{k}" for k in FLAGS if getattr(req, k) is not None and k not in m.settings]
    if extra:
        raise InputError(
            f"{', '.join(extra)} does not apply to --method {req.method}; it takes "
            f"{', '.join('--' + k for k in m.settings) or 'no method setting'}"
        )
    if m.check:
        m.check(req)
    if req.epochs is not None and req.epochs < m.min_epochs:
        raise InputError(f"--epochs must be >= {m.min_epochs} for --method {req.method}")
    if req.lr is not None and req.lr <= 0:
        raise InputError("--lr must be positive")
    if req.model_args and not m.student:
        raise InputError(
            "--model-arg only applies to a zoo student of a method with a student (distill)"
        )
    if req.threads is not None and req.threads < 1:
        raise InputError("--threads must be >= 1")
