"""Everything `edgemed bench` checks before it runs anything: the artifacts, the data against each
artifact's preprocessing contract, and the FP32 reference each artifact is compared with.

A bad input here is refused before a file is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.artifact import MANIFEST, Artifact, load_artifact
from edgemed.backends import get_backend
from edgemed.contract import Contract
from edgemed.data import card_split_config, load_dataset
from edgemed.data.locate import data_path
from edgemed.data.overlap import split_overlap
from edgemed.errors import InputError, UnavailableError
from edgemed.fileio import read_json, sha256_file
from edgemed.runtimes import REFERENCE_RUNTIME, RUNTIMES


@dataclass(frozen=True)
class EvalData:
    """The labelled split at one input size/channel count, shared by every artifact that uses it."""

    key: str
    images: np.ndarray
    labels: np.ndarray
    ref: dict
    ids: tuple[str, ...] = ()  # per image: its id in the dataset (edgemed.data)
    hashes: tuple[str, ...] = ()  # per image: its content SHA-256
    known: frozenset[str] = frozenset()  # every id and hash of the dataset, any split


@dataclass(frozen=True)
class Reference:
    """The FP32 model a row is compared with: a torch checkpoint or an ONNX file."""

    key: str
    kind: str  # "torch" or "onnx"
    path: Path
    sha256: str
    why: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256, "why": self.why}


@dataclass(frozen=True)
class Config:
    """One row: an artifact (or the torch reference itself) with its data and reference."""

    key: str
    label: str
    kind: str  # "artifact" or "torch"
    path: Path
    runtime: str
    precision: str
    manifest_sha256: str | None
    model_bytes: int
    contract: Contract
    device: str
    data_key: str
    reference: Reference
    problem: str | None = None  # set: the row fails with this error, nothing is run
    int8_ops: str | None = None  # INT8 artifacts: "N/M" compute ops in INT8 (from the manifest)


def artifact_bytes(art: Artifact) -> int:
    """Bytes of the model files (everything the manifest lists except JSON side files)."""
    files = art.manifest.get("files", {})
    return int(sum(f["bytes"] for name, f in files.items() if not name.endswith(".json")))


def load_artifacts(paths: tuple[str, ...]) -> tuple[list[Artifact], dict[Path, str]]:
    """Load and verify every artifact; refuse unknown or unavailable runtimes up front. Among
    several, one whose files do not match its manifest becomes a failed row (the problems)."""

    arts, problems = [], {}
    for p in paths:
        path = Path(p).expanduser().resolve()
        try:
            art = load_artifact(path, verify=True)
        except InputError as exc:
            art = load_artifact(path, verify=False)  # an unreadable manifest still refuses
            if len(paths) == 1:
                raise
            problems[art.path] = " ".join(str(exc).split())
        if art.runtime not in RUNTIMES:
            raise InputError(
                f"artifact {art.path} has runtime {art.runtime!r}, which this edgemed does not know; "
                f"known: {', '.join(RUNTIMES)}"
            )
        missing = get_backend(art.runtime).available()
        if missing:
            raise UnavailableError(f"cannot bench {art.path}: {missing}")
        arts.append(art)
    if not arts:
        raise InputError("give at least one ARTIFACT_DIR written by `edgemed export`")
    return arts, problems


def card_of(art: Artifact) -> dict | None:
    p = art.path / "card.json"
    return read_json(p, "model card") if p.is_file() else None


def split_config(data: str, card: dict | None) -> dict:
    """The training split settings when benching on the model's own data (so 'test' is its test)."""

    return card_split_config(data, card)


def native_npz_shape(path: Path, split: str) -> tuple[int, ...] | None:
    """Image shape (H, W, C) stored in an npz split, before any resizing."""
    if path.suffix != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            shape = f[f"{split}_images"].shape
    except (KeyError, OSError, ValueError):
        return None
    return (*shape[1:3], shape[3] if len(shape) == 4 else 1)


def contract_mismatch(contract: Contract, ds, native: tuple | None, same_data: bool) -> str | None:
    """The first preprocessing-contract field the data disagrees with, as a sentence, or None."""
    if ds.task != contract.task:
        return f"task: the data is {ds.task}, the artifact is {contract.task}"
    # An npz holds no class names (they are guessed from its file name): compare the count only.
    names = [len(ds.class_names), len(contract.class_names)] if ds.kind == "npz" else None
    if (names[0] != names[1]) if names else tuple(ds.class_names) != tuple(contract.class_names):
        return (
            f"class_names: the data has {list(ds.class_names)}, "
            f"the artifact expects {list(contract.class_names)}"
        )
    if native and not same_data:
        if tuple(native[:2]) != tuple(contract.input_size):
            return (
                f"input_size: the data's images are {native[0]}x{native[1]}, "
                f"the artifact expects {contract.input_size[0]}x{contract.input_size[1]}"
            )
        if native[2] != contract.channels:
            return f"channels: the data has {native[2]}, the artifact expects {contract.channels}"
    return None


def load_eval_data(data: str, split: str, art: Artifact, cache: dict) -> EvalData:
    """The split at the artifact's input size, checked against its contract (cached per size)."""

    path = data_path(data)
    c, card = art.contract, card_of(art)
    cfg = split_config(str(path), card)
    key_src = f"{path.resolve()}|{split}|{c.input_size}|{c.channels}|{sorted(cfg.items())}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    if key not in cache:
        ds = load_dataset(path, c.input_size, c.channels, **cfg)
        s = ds.split(split)

        ref = {"path": ds.path, "split": split, "n": len(s), "data_hash": ds.data_hash,
               "split_overlap": split_overlap(ds)}  # fmt: skip
        known = frozenset(k for sp in ds.splits.values() for k in (*sp.ids, *sp.hashes))
        ev = EvalData(key, s.images, s.labels, ref, s.ids, s.hashes, known)
        cache[key] = (ds, ev)
    ds, ev = cache[key]
    trained_on = ((card or {}).get("data") or {}).get("data_hash")
    problem = contract_mismatch(c, ds, native_npz_shape(path, split), trained_on == ds.data_hash)
    if problem:
        raise InputError(
            f"data {path} does not match the preprocessing contract of {art.path}: {problem}; "
            "bench it on data prepared like its training data"
        )
    return ev


def _source_file(source: dict) -> tuple[str, Path] | None:
    kind, path = source.get("kind"), source.get("path")
    if not path or kind not in ("training-dir", "checkpoint", "onnx"):
        return None
    return ("onnx" if kind == "onnx" else "torch"), Path(path)


def resolve_reference(art: Artifact, arts: list[Artifact], data_key: str) -> Reference:
    """FP32 reference: the torch checkpoint (or ONNX file) the artifact was exported from, when it
    is still there unchanged; else an FP32 ONNX artifact of the same model among those given."""
    source = art.manifest.get("source") or {}
    found = _source_file(source)
    problem = "its manifest names no source file"
    if found:
        kind, path = found
        if not path.is_file():
            problem = f"its source {path} is gone"
        elif source.get("sha256") and sha256_file(path) != source["sha256"]:
            problem = f"its source {path} changed since export (SHA-256 differs)"
        else:
            return _reference(
                kind, path, source.get("sha256") or sha256_file(path), data_key, "source"
            )
    for other in arts:
        same_model = (other.manifest.get("source") or {}).get("sha256") == source.get("sha256")
        if (
            other.runtime == REFERENCE_RUNTIME
            and other.precision == "fp32"
            and same_model
            and source
        ):
            why = f"FP32 ONNX artifact {other.path} ({problem})"
            return _reference(
                "onnx", other.model_file, sha256_file(other.model_file), data_key, why
            )
    raise InputError(
        f"no FP32 reference for {art.path}: {problem}; restore it, or add the FP32 ONNX artifact "
        "of the same model (`edgemed export --target onnx`) to the command"
    )


def _reference(kind: str, path: Path, sha: str, data_key: str, why: str) -> Reference:
    key = hashlib.sha256(f"{kind}|{sha}|{data_key}".encode()).hexdigest()[:16]
    return Reference(key, kind, path.resolve(), sha, why)


def manifest_sha256(art: Artifact) -> str:
    return sha256_file(art.path / MANIFEST)


def row_key(path: Path, sha: str, threads: int, batch: int) -> str:
    return hashlib.sha256(f"{path}|{sha}|{threads}|{batch}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """The checked work: rows in run order, the references they need, the data they use."""

    configs: tuple[Config, ...]
    references: dict[str, Reference]
    data: dict[str, EvalData]


def build_plan(
    artifacts: tuple[str, ...],
    data: str,
    split: str,
    threads: int,
    batch: int,
    include_reference: bool = False,
) -> Plan:
    """Check artifacts, data and references; refuse any bad input before work starts."""
    arts, problems = load_artifacts(artifacts)
    sound = [a for a in arts if a.path not in problems]
    cache: dict = {}
    configs, refs, seen = [], {}, {}
    for art in arts:
        ev = load_eval_data(data, split, art, cache)
        ref = resolve_reference(art, sound, ev.key)
        refs[ref.key] = ref
        if include_reference and ref.kind == "torch" and ref.key not in seen:
            seen[ref.key] = True
            configs.append(_torch_config(ref, art, ev.key, threads, batch))
        sha = manifest_sha256(art)
        configs.append(
            Config(
                row_key(art.path, sha, threads, batch),
                art.label,
                "artifact",
                art.path,
                art.runtime,
                art.precision,
                sha,
                artifact_bytes(art),
                art.contract,
                (art.manifest.get("profile") or {}).get("device", "cpu"),
                ev.key,
                ref,
                problems.get(art.path),
                int8_ops_cell(art.manifest),
            )
        )
    data_by_key = {ev.key: ev for _, ev in cache.values()}
    return Plan(_unique_labels(configs), refs, data_by_key)


def int8_ops_cell(manifest: dict) -> str | None:
    """ "N/M" compute ops in INT8 as the INT8 artifact's manifest counted them (None elsewhere)."""
    ops = (manifest.get("backend") or {}).get("int8_ops")
    return f"{ops['quantized']}/{ops['total']}" if ops else None


def _unique_labels(configs: list[Config]) -> tuple[Config, ...]:
    """Labels name rows in tables and gates: append the directory name where two rows collide."""
    from dataclasses import replace

    labels = [c.label for c in configs]
    return tuple(
        c if labels.count(c.label) == 1 else replace(c, label=f"{c.label}@{_short(c)}")
        for c in configs
    )


def _short(c: Config) -> str:
    return c.path.parent.name if c.kind == "torch" else c.path.name


def _torch_config(ref: Reference, art: Artifact, data_key: str, threads: int, batch: int) -> Config:
    return Config(
        row_key(ref.path, ref.sha256, threads, batch),
        "torch-fp32",
        "torch",
        ref.path,
        "torch",
        "fp32",
        None,
        ref.path.stat().st_size,
        art.contract.with_layout("NCHW"),
        "cpu",
        data_key,
        ref,
    )
