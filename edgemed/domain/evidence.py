"""`bench --ood DATA`: the guard's own evidence per artifact, and the bundle's limits on it.

Per artifact with a domain reference: the in-domain false-flag rate on the bench split (Wilson
interval) and per OOD set (any dataset reader path; all its splits) AUROC with its interval, the
share flagged and FPR@95TPR. Recorded in results.json under `domain_guard`; `edgemed bundle
--max-domain-fpr / --min-ood-auroc` refuse an artifact whose measured numbers miss them (or that
has none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed.artifact import load_artifact
from edgemed.backends import open_runner
from edgemed.data import load_dataset
from edgemed.domain.guard import DomainGuard
from edgemed.domain.ood import in_domain_row, ood_row, score_images
from edgemed.domain.reference import load_reference
from edgemed.errors import DriftError
from edgemed.fileio import sha256_file

KEY = "domain_guard"


def _images(path: str, contract) -> np.ndarray:

    ds = load_dataset(path, contract.input_size, contract.channels)
    return np.concatenate(
        [ds.split(s).images for s in ("train", "val", "test") if len(ds.split(s))]
    )


def artifact_evidence(artifact: str, data: str, split: str, ood: tuple[str, ...]) -> dict:
    """The guard rows of one artifact (`domain: unknown` without a reference)."""

    art = load_artifact(artifact)
    c = art.contract
    row = {"artifact": str(Path(artifact).resolve()), "label": art.label,
           "artifact_manifest_sha256": sha256_file(art.path / "manifest.json")}  # fmt: skip
    ref = load_reference(art.path)
    if ref is None:
        return {**row, "domain": "unknown", "reason": "the artifact carries no domain reference"}
    guard = DomainGuard(ref)
    test = load_dataset(data, c.input_size, c.channels).split(split).images
    with open_runner(art) as r:
        ind = score_images(r, guard, c, test)
        rows = [ood_row(p, ind, score_images(r, guard, c, _images(p, c))) for p in ood]
    return {**row, "in_domain": {"split": split, **in_domain_row(ind)}, "ood": rows}


def domain_table(rows: list[dict]) -> str:
    """The terminal lines of the guard's evidence."""
    lines = []
    for r in rows:
        if "in_domain" not in r:
            lines.append(f"domain guard {r['label']}: none ({r['reason']})")
            continue
        i = r["in_domain"]
        lines.append(
            f"domain guard {r['label']}: in-domain flagged {i['flagged']}/{i['n']} "
            f"({i['rate']:.1%}, 95% CI {i['ci95'][0]:.1%}-{i['ci95'][1]:.1%})"
        )
        lines += [
            f"  OOD {o['ood_set']}: AUROC {o['auroc']:.3f} ({o['auroc_ci95'][0]:.3f}-"
            f"{o['auroc_ci95'][1]:.3f}), flagged {o['flagged']:.1%}, FPR@95TPR {o['fpr_at_95tpr']:.1%}"
            for o in r["ood"]
        ]
    return "\n".join(lines)


def check_limits(results: dict, manifest_sha256: str, max_fpr: float | None,
                 min_auroc: float | None) -> dict | None:  # fmt: skip
    """The measured guard evidence of the artifact, refused (DriftError) when it misses a limit."""
    if max_fpr is None and min_auroc is None:
        return None
    rows = [
        r for r in results.get(KEY) or [] if r.get("artifact_manifest_sha256") == manifest_sha256
    ]
    if not rows or "in_domain" not in rows[0]:
        raise DriftError(
            "--max-domain-fpr/--min-ood-auroc need the guard's measured evidence for this artifact; "
            "run `edgemed bench ARTIFACT --data DATA --ood OOD_DATA` and bundle with that report"
        )
    row, failed = rows[0], []
    if max_fpr is not None and row["in_domain"]["rate"] > max_fpr:
        failed.append(f"in-domain false flags {row['in_domain']['rate']:.2%} > {max_fpr:.2%}")
    if min_auroc is not None:
        if not row["ood"]:
            failed.append("no OOD set was measured (bench --ood)")
        failed += [f"OOD AUROC {o['auroc']:.3f} < {min_auroc:.3f} on {o['ood_set']}"
                   for o in row["ood"] if o["auroc"] < min_auroc]  # fmt: skip
    if failed:
        raise DriftError(f"domain guard gate failed: {'; '.join(failed)}", {"failed": failed})
    return {"in_domain": row["in_domain"], "ood": row["ood"],
            "limits": {"max_domain_fpr": max_fpr, "min_ood_auroc": min_auroc}}  # fmt: skip
