"""The domain reference: Gaussian fits (class means + one shrinkage precision), thresholds set on
the validation split, the validation scores the monitor compares windows with. Stored as
`domain.json` (numbers, hashes) + `domain.npz` (float arrays, loaded with allow_pickle=False)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemed.domain import FORMAT, REFERENCE_JSON, REFERENCE_NPZ
from edgemed.domain.stats import NAMES
from edgemed.errors import InputError

MAX_NPZ_BYTES = 64 << 20
ARRAYS = ("feature_means", "feature_precision", "input_means", "input_precision",
          "val_feature_scores", "val_input_scores", "val_probabilities",
          "test_feature_scores", "test_input_scores", "test_probabilities")  # fmt: skip


@dataclass(frozen=True)
class Gaussian:
    """Class means (K, D) and one shared precision matrix (D, D)."""

    means: np.ndarray
    precision: np.ndarray

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance to the nearest class mean, (N,); NaN/Inf rows -> inf."""
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        d = x[:, None, :] - self.means[None, :, :]
        out = np.einsum("nkd,nkd->nk", d @ self.precision, d).min(axis=1)
        return np.where(np.isfinite(out) & np.isfinite(x).all(axis=1), out, np.inf)


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrinkage covariance of centred rows `x` (N, D) (Ledoit & Wolf 2004)."""
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    target = mu * np.eye(d)
    delta = np.sum((s - target) ** 2) / d
    x2 = x**2
    beta = min(delta, np.sum(x2.T @ x2 / n - s**2) / (d * n))
    shrink = beta / delta if delta > 0 else 1.0
    return shrink * target + (1.0 - shrink) * s


def fit_gaussian(x: np.ndarray, groups: np.ndarray | None) -> Gaussian:
    """Class-conditional means and the Ledoit-Wolf covariance of the within-class residuals.

    The shrinkage runs on standardized columns (each divided by its spread) and is mapped back:
    shrinking raw columns towards one common variance would drown a statistic of small spread
    (edge energy next to grey levels) and make the distance blind to it (measured: brain MRI
    model, 61% of chest X-rays flagged on raw input statistics, 95% standardized)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise InputError("the domain reference got non-finite features from the model; re-export")
    keys = np.zeros(len(x), int) if groups is None else np.asarray(groups)
    means = np.stack([x[keys == k].mean(axis=0) for k in np.unique(keys)])
    resid = x - means[np.searchsorted(np.unique(keys), keys)]
    spread = resid.std(axis=0)
    spread = np.where(spread > 0, spread, max(float(spread.max()), 1.0) * 1e-6)
    cov = ledoit_wolf(resid / spread)
    cov += np.eye(len(cov)) * max(1e-9, 1e-6 * np.trace(cov) / len(cov))
    return Gaussian(means, np.linalg.inv(cov) / np.outer(spread, spread))


def threshold_at(scores: np.ndarray, rate: float) -> float:
    """The (1 - rate) quantile of `scores`: the larger of the empirical one and that of a
    log-normal fit, or the fit alone where the split is too small to hold one image beyond it.

    A few hundred validation images hold one or two images beyond a 0.5% quantile, so the
    empirical tail alone is noisy (measured: 2.8% of the chest test split flagged at a 1% target
    with it alone); with fewer than 1/rate images it is just the largest score, an outlier."""
    s = np.sort(np.asarray(scores, np.float64))
    logs = np.log(np.maximum(s, 1e-12))
    fitted = float(np.exp(logs.mean() + _normal_quantile(1.0 - rate) * logs.std(ddof=1)))
    k = int(math.floor(rate * len(s)))  # how many may lie above
    if k == 0:
        return fitted
    return max(float(s[len(s) - k - 1]), fitted)


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class DomainReference:
    """A fitted reference: `meta` is domain.json; the Gaussians and the held-out (val, test)
    scores and probabilities are its npz."""

    meta: dict
    features: Gaussian | None
    inputs: Gaussian
    val_feature_scores: np.ndarray
    val_input_scores: np.ndarray
    val_probabilities: np.ndarray
    test_feature_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    test_input_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    test_probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def thresholds(self) -> dict:
        return self.meta["thresholds"]

    @property
    def feature_size(self) -> int | None:
        return self.meta.get("feature_size")


def save_reference(ref: DomainReference, root: Path) -> tuple[str, str]:
    """Write domain.json and domain.npz into `root`; returns their names."""
    f = ref.features
    empty = np.zeros((0, 0))
    arrays = {
        "feature_means": f.means if f else empty,
        "feature_precision": f.precision if f else empty,
        "input_means": ref.inputs.means,
        "input_precision": ref.inputs.precision,
        "val_feature_scores": ref.val_feature_scores,
        "val_input_scores": ref.val_input_scores,
        "val_probabilities": ref.val_probabilities,
        "test_feature_scores": ref.test_feature_scores,
        "test_input_scores": ref.test_input_scores,
        "test_probabilities": ref.test_probabilities,
    }
    with open(root / REFERENCE_NPZ, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v, np.float64) for k, v in arrays.items()})
    (root / REFERENCE_JSON).write_text(json.dumps(ref.meta, indent=2, sort_keys=True) + "\n")
    return REFERENCE_JSON, REFERENCE_NPZ


def load_reference(root: Path) -> DomainReference | None:
    """The reference in `root`, None when it has none; a malformed one is refused (one line)."""
    js, npz = Path(root) / REFERENCE_JSON, Path(root) / REFERENCE_NPZ
    if not js.is_file():
        return None
    try:
        meta = json.loads(js.read_text())
        if meta.get("format") != FORMAT or not npz.is_file():
            raise ValueError(f"not {FORMAT} or {REFERENCE_NPZ} missing")
        if meta.get("input_statistics") != list(NAMES):
            raise ValueError("its input statistics are not the ones this edgemed computes")
        if npz.stat().st_size > MAX_NPZ_BYTES:
            raise ValueError(f"{REFERENCE_NPZ} is larger than {MAX_NPZ_BYTES >> 20} MiB")
        with np.load(npz, allow_pickle=False) as z:
            a = {k: np.asarray(z[k], np.float64) for k in ARRAYS}
        thresholds = {k: float(v) for k, v in meta["thresholds"].items()}
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError(
            f"domain reference {js} is malformed ({exc}); re-export the model"
        ) from None
    feats = (
        Gaussian(a["feature_means"], a["feature_precision"]) if a["feature_means"].size else None
    )
    _check_shapes(feats, a, meta, js)
    meta = {**meta, "thresholds": thresholds}
    return DomainReference(meta, feats, Gaussian(a["input_means"], a["input_precision"]),
                           *(a[k] for k in ARRAYS[4:]))  # fmt: skip


def _check_shapes(feats: Gaussian | None, a: dict, meta: dict, where: Path) -> None:
    size = meta.get("feature_size")
    ok = feats is None or (
        size is not None
        and feats.means.shape[1:] == (size,)
        and feats.precision.shape == (size, size)
    )
    d = a["input_means"].shape[-1] if a["input_means"].ndim == 2 else -1
    ok = ok and a["input_precision"].shape == (d, d)
    if not ok:
        raise InputError(
            f"domain reference {where}: array shapes do not match its feature size {size}; "
            "re-export the model"
        )


def check_matches(ref: DomainReference, model_files: dict, data_hash: str | None) -> None:
    """Refuse a reference fitted for other model files or other data (one line naming which)."""
    want = ref.meta.get("model_files") or {}
    for name, entry in want.items():
        sha = str(entry.get("sha256") if isinstance(entry, dict) else entry)
        have = (model_files.get(name) or {}).get("sha256")
        if have != sha:
            raise InputError(
                f"domain reference does not match the model: {name} has sha256 "
                f"{str(have)[:12]} but the reference was fitted on {sha[:12]}; re-export the model"
            )
    if data_hash and ref.meta.get("data_hash") != data_hash:
        raise InputError(
            f"domain reference does not match the model's data: fitted on data "
            f"{str(ref.meta.get('data_hash'))[:12]}, the model was evaluated on {data_hash[:12]}; "
            "re-export the model"
        )


def check_feature_size(ref: DomainReference, size: int | None) -> None:
    """The model's feature output must have the width the reference was fitted on."""
    if ref.feature_size != size:
        raise InputError(
            f"domain reference does not match the model: feature size {ref.feature_size}, the "
            f"model's feature output has {size}; re-export the model"
        )
