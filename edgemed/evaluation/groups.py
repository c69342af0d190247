"""Drift by subgroup: a groups file assigns each evaluated image a value per column (site,
scanner, sex, age band, ...); every drift number is then computed again on each group's images.

The groups file is a CSV with a header row. Its first column names an image, in either form:
- the image's id in the dataset: for a class-folder tree its path relative to the data folder
  (``yes/Y1.jpg``, forward slashes), for an npz ``SPLIT/INDEX`` (``test/12``);
- the SHA-256 of its content (64 hex digits): of the file's bytes for a folder tree (of the
  decoded pixels for a DICOM file), of the stored uint8 array for an npz (the hashes
  `edgemed.data` computes).
Every other column is a group column. Every evaluated image needs a row; a row may name an image
of another split (one file serves the whole dataset) but must name an image of the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.contract import Contract
from edgemed.errors import InputError
from edgemed.evaluation.drift import DEFAULT_BAND, Drift, drift_from_logits
from edgemed.evaluation.limits import Limits, verdict
from edgemed.evaluation.sanity import OutputError
from edgemed.evaluation.stats import wilson_interval

MAX_BYTES = 16 * 1024 * 1024  # a groups file for a million images is ~100 MB; 16 MB is plenty
MAX_COLUMNS = 32
MAX_VALUES = 200  # distinct values per column: more is an id-like column, not a group
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ImageKeys:
    """How the evaluated images may be named: their ids and hashes, and every key of the dataset."""

    ids: tuple[str, ...]
    hashes: tuple[str, ...]
    known: frozenset[str]


@dataclass(frozen=True)
class GroupTable:
    """One value per group column for each evaluated image (in the split's order)."""

    path: str
    sha256: str
    columns: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    def members(self) -> list[tuple[str, str, np.ndarray]]:
        """(column, value, image indices) for every group, columns in file order, values sorted."""
        out = []
        for c, column in enumerate(self.columns):
            col = np.array([v[c] for v in self.values], dtype=object)
            for value in sorted(set(col.tolist())):
                out.append((column, value, np.flatnonzero(col == value)))
        return out

    def to_dict(self) -> dict:
        sizes = {}
        for column, value, idx in self.members():
            sizes.setdefault(column, {})[value] = len(idx)
        return {"path": self.path, "sha256": self.sha256, "columns": list(self.columns),
                "sizes": sizes}  # fmt: skip


def read_groups_csv(path: str | Path, keys: ImageKeys) -> GroupTable:
    """Parse and check a groups file against the evaluated images; InputError on any problem."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"groups file {p} does not exist; pass a CSV (image id or sha256, groups)")
    if p.stat().st_size > MAX_BYTES:
        raise InputError(
            f"groups file {p} is {p.stat().st_size} bytes, over the {MAX_BYTES} byte limit; "
            "keep one row per image and only the group columns"
        )
    return groups_from_csv(p.read_bytes(), p, str(p.resolve()), keys)


def groups_from_csv(raw: bytes, name: Path | str, source: str, keys: ImageKeys) -> GroupTable:
    """Parse and check groups CSV bytes (`name` in messages, `source` recorded in the table)."""
    p = name
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"groups file {p} is not a UTF-8 CSV ({exc}); save it as CSV") from None
    columns = _header(p, rows)
    by_key = _rows_by_key(p, rows[1:], len(columns) + 1, keys)
    values = _assign(p, by_key, keys)
    table = GroupTable(source, hashlib.sha256(raw).hexdigest(), columns, values)
    for c, column in enumerate(columns):
        n = len({v[c] for v in values})
        if n > MAX_VALUES:
            raise InputError(
                f"groups file {p}: column {column!r} has {n} distinct values (limit {MAX_VALUES}); "
                "a group column holds categories (site, scanner, sex, age band), not ids"
            )
    return table


def _header(p: Path | str, rows: list[list[str]]) -> tuple[str, ...]:
    if not rows:
        raise InputError(f"groups file {p} is empty; write a header row: image,site,scanner,...")
    names = [h.strip() for h in rows[0]]
    if len(names) < 2:
        raise InputError(
            f"groups file {p} has no group columns (header {rows[0]!r}); the first column names "
            "the image, the others its groups: image,site,scanner"
        )
    if len(names) - 1 > MAX_COLUMNS or not all(names[1:]) or len(set(names)) != len(names):
        raise InputError(
            f"groups file {p}: header {rows[0]!r} needs 1 to {MAX_COLUMNS} group columns with "
            "distinct, non-empty names"
        )
    return tuple(names[1:])


def _rows_by_key(p: Path | str, rows: list[list[str]], width: int, keys: ImageKeys) -> dict:
    """key -> (line, values); refuses short/long rows, empty cells, duplicates and unknown ids."""
    out: dict[str, tuple[int, tuple[str, ...]]] = {}
    unknown = []
    for line, row in enumerate(rows, start=2):
        if not any(c.strip() for c in row):
            continue  # blank line
        cells = [c.strip() for c in row]
        if len(cells) != width or not all(cells):
            raise InputError(
                f"groups file {p} line {line}: {len(cells)} fields {row!r}, expected {width} "
                "non-empty fields (image id or sha256, then one value per group column)"
            )
        key = cells[0].lower() if _SHA256.fullmatch(cells[0]) else cells[0].replace("\\", "/")
        if key in out:
            raise InputError(
                f"groups file {p}: image {cells[0]!r} is listed twice (lines {out[key][0]} and "
                f"{line}); keep one row per image"
            )
        if key not in keys.known:
            unknown.append((line, cells[0]))
        out[key] = (line, tuple(cells[1:]))
    if unknown:
        line, name = unknown[0]
        raise InputError(
            f"groups file {p}: {len(unknown)} rows name no image of the dataset (first: "
            f"{name!r} on line {line}); {_id_help()}"
        )
    return out


def _assign(p: Path | str, by_key: dict, keys: ImageKeys) -> tuple[tuple[str, ...], ...]:
    values, missing = [], []
    for image_id, sha in zip(keys.ids, keys.hashes, strict=True):
        found = [by_key[k] for k in (image_id, sha) if k in by_key]
        if not found:
            missing.append(image_id)
            continue
        if len(found) == 2 and found[0][1] != found[1][1]:
            raise InputError(
                f"groups file {p}: image {image_id} is given different groups by its id (line "
                f"{found[0][0]}) and its sha256 (line {found[1][0]}); keep one row per image"
            )
        values.append(found[0][1])
    if missing:
        raise InputError(
            f"groups file {p} has no row for {len(missing)} of the {len(keys.ids)} evaluated "
            f"images (first: {missing[0]}); every image needs its groups. {_id_help()}"
        )
    return tuple(values)


def _id_help() -> str:
    return (
        "name images by their path relative to the data folder (class-folder tree), by SPLIT/INDEX "
        "(npz), or by the SHA-256 of their content"
    )


# ---------------------------------------------------------------- drift per group


@dataclass(frozen=True)
class GroupDrift:
    """Drift on one group's images, or why it could not be computed."""

    column: str
    value: str
    n: int
    positives: int | None  # binary: positive labels in the group
    drift: Drift | None
    error: str | None = None

    @property
    def where(self) -> str:
        pos = f", {self.positives} positive" if self.positives is not None else ""
        return f"{self.column}={self.value} ({_images(self.n)}{pos})"

    def rate_ci(self, which: str) -> tuple[float, float] | None:
        """Wilson 95% CI of the candidate's sensitivity or specificity (binary only)."""
        c = (self.drift.details or {}).get("confusion") if self.drift else None
        if not c:
            return None
        hit, total = (
            (c["tp"], c["tp"] + c["fn"]) if which == "sens" else (c["tn"], c["tn"] + c["fp"])
        )
        return wilson_interval(hit, total) if total else None

    def to_dict(self) -> dict:
        return {
            "column": self.column,
            "value": self.value,
            "n": self.n,
            "positives": self.positives,
            "drift": self.drift.to_dict() if self.drift else None,
            "sensitivity_ci95": _list(self.rate_ci("sens")),
            "specificity_ci95": _list(self.rate_ci("spec")),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict) -> GroupDrift:
        drift = Drift.from_dict(d["drift"]) if d.get("drift") else None
        return cls(d["column"], d["value"], d["n"], d.get("positives"), drift, d.get("error"))


def _images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def _list(ci):
    return None if ci is None else list(ci)


def group_drifts(
    contract: Contract,
    ref_logits: np.ndarray,
    cand_logits: np.ndarray,
    labels: np.ndarray,
    table: GroupTable,
    *,
    n_boot: int = 0,
    band: float = DEFAULT_BAND,
    name: str = "the candidate",
) -> tuple[GroupDrift, ...]:
    """`drift_from_logits` on each group's images (a group whose outputs cannot be evaluated,
    e.g. two identical images, records the reason instead of numbers)."""
    ref, cand, y = np.asarray(ref_logits), np.asarray(cand_logits), np.asarray(labels)
    out = []
    for column, value, idx in table.members():
        pos = (
            int((y[idx].reshape(len(idx), -1)[:, 0] > 0).sum())
            if contract.task == "binary"
            else None
        )
        try:
            d = drift_from_logits(
                contract, ref[idx], cand[idx], y[idx], n_boot=n_boot, band=band,
                names=(f"the FP32 reference on {column}={value}", f"{name} on {column}={value}"),
            )  # fmt: skip
        except OutputError as exc:
            out.append(GroupDrift(column, value, len(idx), pos, None, str(exc)))
        else:
            out.append(GroupDrift(column, value, len(idx), pos, d))
    return tuple(out)


def worst_groups(groups: tuple[GroupDrift, ...]) -> dict[str, str | None]:
    """Per column, the group with the largest AUC drop, ties (e.g. all 0 for an FP32 runtime)
    going to the lowest AUC; None when no group has an AUC."""
    out: dict[str, str | None] = {}
    for g in groups:
        out.setdefault(g.column, None)
    for column in out:
        have = [
            g for g in groups if g.column == column and g.drift and g.drift.auc_drop is not None
        ]
        if have:
            worst = max(
                have, key=lambda g: (round(g.drift.auc_drop, 12), -(g.drift.auc_candidate or 0))
            )
            out[column] = worst.value
    return out


def group_violations(limits: Limits, groups: tuple[GroupDrift, ...]) -> list[str]:
    """Every limit on every group (--gate-per-group): a group whose metric cannot be computed
    fails, saying how many images it has."""
    out = []
    for g in groups:
        if g.drift is None:
            out.append(f"{g.where}: not evaluated ({g.error})")
            continue
        for check in verdict(limits, g.drift).failed:
            small = "; the group is too small" if check.value is None else ""
            out.append(f"{g.where}: {check.detail}{small}")
    return out
