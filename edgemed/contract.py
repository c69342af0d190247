"""The preprocessing contract: how pixels become model input and logits become a decision.

It travels with every artifact (ONNX `metadata_props["edgemed.contract"]` and each manifest), so
anyone can run an exported model without edgemed:

    x = resize(image, input_size, bilinear) as float32 / scale      # pixel values in [0, 1]
    x = (x - mean[c]) / std[c]                                        # per channel
    layout NCHW (or NHWC for TFLite artifacts); outputs are logits
    binary: p = sigmoid(logit[0]); positive when p >= threshold
    multiclass: p = softmax(logits); multilabel: p_k = sigmoid(logit_k) >= threshold_k
    (threshold: one number, or for multilabel a list with one threshold per label)
    reported (multilabel, optional): the labels the artifact reports; the model may emit more
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from edgemed.errors import InputError

CONTRACT_KEY = "edgemed.contract"
TASKS = ("binary", "multiclass", "multilabel")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Contract:
    """Input size, channels, layout, normalization, class names, task and operating threshold."""

    input_size: tuple[int, int]
    channels: int
    class_names: tuple[str, ...]
    task: str = "binary"
    layout: str = "NCHW"
    scale: float = 255.0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    threshold: float | tuple[float, ...] = 0.5  # multilabel: one per label, chosen on validation
    resample: str = "bilinear"
    # The model file's input and output tensor names (ONNX/OpenVINO); None where unrecorded.
    input_name: str | None = None
    output_name: str | None = None
    # multilabel: the labels this artifact reports (export --labels); None = all of them
    reported: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        problems = _contract_problems(self)
        if problems:
            raise InputError("invalid preprocessing contract: " + "; ".join(problems))

    @property
    def num_outputs(self) -> int:
        """Logits the model emits: 1 for binary, one per class otherwise."""
        return 1 if self.task == "binary" else len(self.class_names)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        h, w = self.input_size
        if self.layout == "NCHW":
            return (batch, self.channels, h, w)
        return (batch, h, w, self.channels)

    @property
    def thresholds(self) -> np.ndarray:
        """The operating threshold of each output (num_outputs,), a single one broadcast."""
        return np.broadcast_to(np.asarray(self.threshold, np.float64), (self.num_outputs,))

    @property
    def reported_names(self) -> tuple[str, ...]:
        """The labels an artifact reports (all class names unless export --labels chose some)."""
        return self.reported if self.reported is not None else self.class_names

    @property
    def reported_index(self) -> np.ndarray:
        """Output columns of the reported labels, in output order (all outputs unless multilabel)."""
        if self.task != "multilabel":
            return np.arange(self.num_outputs)
        return np.array([self.class_names.index(n) for n in self.reported_names], np.int64)

    def with_reported(self, names: tuple[str, ...] | None) -> Contract:
        """Report only `names` (export --labels); unknown names and non-multilabel refused."""
        if names is None:
            return self
        if self.task != "multilabel":
            raise InputError(
                f"--labels chooses which labels a multi-label model reports; this model is "
                f"{self.task} (its decision is over all of {', '.join(self.class_names)})"
            )
        unknown = [n for n in names if n not in self.class_names]
        if unknown or not names or len(set(names)) != len(names):
            raise InputError(
                f"--labels must name distinct labels of this model, got {list(names)}; unknown "
                f"{unknown}; the model's labels: {', '.join(self.class_names)}"
            )
        return replace(self, reported=tuple(n for n in self.class_names if n in names))

    def with_threshold(self, threshold: float | tuple[float, ...]) -> Contract:
        return replace(self, threshold=_coerce("threshold", threshold))

    def with_layout(self, layout: str) -> Contract:
        if layout == self.layout:
            return self
        # another layout is another model file (TFLite), whose tensors have their own names
        return replace(self, layout=layout, input_name=None, output_name=None)

    def with_io_names(self, input_name: str, output_name: str) -> Contract:
        return replace(self, input_name=input_name, output_name=output_name)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        for key in ("class_names", "mean", "std"):
            d[key] = list(d[key])
        if self.reported is None:
            del d["reported"]
        else:
            d["reported"] = list(self.reported)
        if isinstance(self.threshold, tuple):
            d["threshold"] = list(self.threshold)
        for key in ("input_name", "output_name"):
            if d[key] is None:
                del d[key]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Contract:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"preprocessing contract has unknown keys {sorted(unknown)}")
        try:
            return cls(
                input_size=tuple(int(v) for v in d["input_size"]),
                channels=int(d["channels"]),
                class_names=tuple(str(c) for c in d["class_names"]),
                **{
                    k: _coerce(k, d[k])
                    for k in d
                    if k not in ("input_size", "channels", "class_names")
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"preprocessing contract is incomplete or malformed ({exc})") from None

    @classmethod
    def from_json(cls, text: str) -> Contract:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"preprocessing contract is not valid JSON ({exc})") from None

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C) already at `input_size` -> float32 model input in `layout`."""
        if images.ndim != 4 or images.shape[1:] != (*self.input_size, self.channels):
            raise InputError(
                f"images have shape {images.shape[1:]}, the model expects "
                f"{(*self.input_size, self.channels)} (H, W, C); resize them with the contract"
            )
        x = images.astype(np.float32) / np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits (N, num_outputs) -> probabilities: sigmoid (binary, multilabel) or softmax."""
        z = np.asarray(logits, np.float64).reshape(len(logits), -1)
        if self.task == "multiclass":
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """The score the threshold applies to: p(positive) for binary, all probabilities otherwise."""
        p = self.probabilities(logits)
        return p[:, 0] if self.task == "binary" else p

    def decisions(self, logits: np.ndarray) -> np.ndarray:
        """Binary/multilabel: score >= threshold. Multiclass: argmax."""
        p = self.probabilities(logits)
        if self.task == "multiclass":
            return p.argmax(axis=1)
        d = p >= self.thresholds
        return d[:, 0] if self.task == "binary" else d


def _coerce(key: str, value):
    if key == "reported":
        return tuple(str(v) for v in value)
    if key in ("mean", "std"):
        return tuple(float(v) for v in value)
    if key == "threshold" and isinstance(value, list | tuple):
        return tuple(float(v) for v in value)
    if key in ("scale", "threshold"):
        return float(value)
    return str(value)


def _contract_problems(c: Contract) -> list[str]:
    problems = []
    if len(c.input_size) != 2 or min(c.input_size) < 1:
        problems.append(f"input_size must be [H, W] with positive sizes, got {list(c.input_size)}")
    if c.channels not in (1, 3):
        problems.append(f"channels must be 1 or 3, got {c.channels}")
    if c.task not in TASKS:
        problems.append(f"task must be one of {', '.join(TASKS)}, got {c.task!r}")
    if c.layout not in LAYOUTS:
        problems.append(f"layout must be NCHW or NHWC, got {c.layout!r}")
    if len(c.mean) != c.channels or len(c.std) != c.channels:
        problems.append(f"mean and std need {c.channels} values each (one per channel)")
    if any(s <= 0 for s in c.std) or c.scale <= 0:
        problems.append("std and scale must be positive")
    if len(c.class_names) < 2 and c.task != "multilabel":
        problems.append("class_names needs at least two classes")
    problems += _threshold_problems(c)
    if c.reported is not None and (
        c.task != "multilabel"
        or not c.reported
        or not set(c.reported) <= set(c.class_names)
        or len(set(c.reported)) != len(c.reported)
    ):
        problems.append(
            f"reported must be distinct labels of a multilabel contract, got {list(c.reported)}"
        )
    return problems


def _number(v) -> bool:
    return isinstance(v, int | float | np.floating) and not isinstance(v, bool)


def _threshold_problems(c: Contract) -> list[str]:
    t = c.threshold
    values = t if isinstance(t, tuple) else (t,)
    if isinstance(t, tuple) and (c.task != "multilabel" or len(t) != len(c.class_names)):
        return [
            f"threshold is a list of {len(t)}; only a multilabel contract takes one threshold per "
            f"label ({len(c.class_names)} labels here), other tasks take one number"
        ]
    if not all(_number(v) and 0.0 < v < 1.0 for v in values):
        return [f"threshold must be in (0, 1), got {list(values) if isinstance(t, tuple) else t}"]
    return []
