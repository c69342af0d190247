"""The bundle in service: verified and loaded completely, or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemed.appliance import load
from edgemed.serve.config import ServeConfig, modality_filter
from edgemed.serve.sr import Algorithm


@dataclass(frozen=True)
class Model:
    """One verified bundle in service: its predictor, identity and the modalities it takes."""

    predictor: object
    algorithm: Algorithm
    modalities: tuple[str, ...]


def open_model(bundle: Path, pubkey: Path, cfg: ServeConfig) -> Model:
    """Verify and load `bundle` completely (appliance.load), or raise; nothing half-switched."""

    predictor = load(bundle, pubkey, cfg.threads)
    try:
        mods = modality_filter(cfg.modalities, predictor.spec.modalities)
    except BaseException:
        predictor.close()
        raise
    m = predictor.bundle.manifest
    algo = Algorithm(
        bundle_id=predictor.bundle.bundle_id,
        bundle_sha256=predictor.bundle.sha256,
        name=str(m["model"]["label"]),
        version=f"{m['bundle_id']} (edgemed {m.get('versions', {}).get('edgemed', '?')})",
        runtime=f"{predictor.runtime} {predictor.runtime_version} {predictor.precision}",
    )
    return Model(predictor, algo, mods)
