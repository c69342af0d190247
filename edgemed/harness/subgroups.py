"""bench --groups: the groups file read against the plan's data before anything runs, and each
finished row's drift per group computed from its saved logits (so --resume needs no re-run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemed.errors import EdgemedError
from edgemed.evaluation.group_sources import dicom_group_table
from edgemed.evaluation.groups import (
    ImageKeys,
    group_drifts,
    group_violations,
    read_groups_csv,
    worst_groups,
)
from edgemed.harness.plan import Plan


def read_groups(groups: str | None, plan: Plan) -> dict:
    """The groups file checked against each evaluated data set (data key -> GroupTable)."""

    if not groups:
        return {}

    def table(ev):
        keys = ImageKeys(ev.ids, ev.hashes, ev.known)
        if groups.startswith("dicom:"):  # from each evaluated image's own DICOM header
            return dicom_group_table(groups, ev.ref["path"], keys)
        return read_groups_csv(groups, keys)

    return {key: table(ev) for key, ev in plan.data.items()}


def add_subgroups(req, plan: Plan, rows: list[dict], tables: dict) -> list[str]:
    """Each finished row's drift per group (from its saved logits); returns the per-group gate
    violations when --gate-per-group."""

    violations = []
    configs = {c.key: c for c in plan.configs}
    for row in rows:
        cfg = configs[row["key"]]
        if row["status"] != "ok" or cfg.data_key not in tables:
            row["subgroups"], row["worst_groups"] = None, None
            continue
        paths = (Path(req.out) / "references" / f"{cfg.reference.key}.npy",
                 Path(req.out) / "logits" / f"{cfg.key}.npy")  # fmt: skip
        if not all(p.is_file() for p in paths):
            raise EdgemedError(
                f"{row['label']}: its saved outputs ({', '.join(map(str, paths))}) are gone, so "
                "no group can be evaluated; re-run it with --force or without --resume"
            )
        ref, cand = (np.load(p) for p in paths)
        ev = plan.data[cfg.data_key]
        groups = group_drifts(
            cfg.contract, ref, cand, ev.labels, tables[cfg.data_key], n_boot=req.n_boot,
            name=cfg.label,
        )  # fmt: skip
        row["subgroups"] = [g.to_dict() for g in groups]
        row["worst_groups"] = worst_groups(groups)
        if req.gate_per_group:
            violations += [f"{row['label']} {v}" for v in group_violations(req.limits(), groups)]
    return violations
