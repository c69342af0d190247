"""Drift by subgroup on brain MRI (issue 12): groups from the files themselves (source format:
JPEG color / JPEG grayscale / PNG; resolution band of the stored image), then `edgemed bench
--groups` on the FP32 and default INT8 ONNX artifacts of a CNN trained on the set.

    python benchmarks/subgroups.py [--work DIR] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._markdown import dataset, load_average, replace_section, table  # noqa: E402

SIZE, EPOCHS = (64, 64), 20


def trained(data: Path, work: Path) -> Path:
    from edgemed.models import ModelSpec
    from edgemed.pipeline.training import TrainConfig, train, write_training_dir

    out = work / "model"
    if not (out / "model.pt").is_file():
        cfg = TrainConfig(data=str(data), model=ModelSpec("cnn"), epochs=EPOCHS, patience=EPOCHS,
                          image_size=SIZE, near_duplicates=True)  # fmt: skip
        print(f"training brain MRI CNN {SIZE[0]} px ({EPOCHS} epochs) ...", flush=True)
        write_training_dir(train(cfg), cfg.model, out, force=False)
    return out


def artifacts(model: Path, data: Path, work: Path) -> list[Path]:
    from edgemed.pipeline.export import ExportRequest, run_export

    out = []
    for precision in ("fp32", "int8"):
        art = work / f"onnx-{precision}"
        if not (art / "manifest.json").is_file():
            calib = str(data) if precision == "int8" else None
            run_export(ExportRequest(model=str(model), target="onnx", precision=precision,
                                     out=art, calib=calib, force=True))  # fmt: skip
        out.append(art)
    return out


def rows(results: dict) -> list[list[str]]:
    from edgemed.harness.group_report import group_blocks

    out = []
    for title, cells in group_blocks(results):
        label, column = title.split(" by ")
        out += [[label, column, *c] for c in cells]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgemed-subgroups"))
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args()
    from edgemed.cli import main as cli
    from edgemed.evaluation.group_sources import folder_groups_csv
    from edgemed.harness.group_report import GROUP_COLUMNS

    data = dataset("brain_mri")
    args.work.mkdir(parents=True, exist_ok=True)
    arts = artifacts(trained(data, args.work), data, args.work)
    groups = args.work / "brain_groups.csv"
    groups.write_text(folder_groups_csv(data))
    out = args.work / "bench"
    argv = ["bench", *map(str, arts), "--data", str(data), "--groups", str(groups), "--out",
            str(out), "--force"]  # fmt: skip
    load = load_average()
    try:
        cli(argv)
    except SystemExit as exc:
        if exc.code:
            raise
    results = json.loads((out / "results.json").read_text())
    body = rows(results)
    head = ["artifact", "column", *GROUP_COLUMNS]
    print(table(head, body))
    if args.write:
        n = results["data"]["n"]
        text = "\n".join([
            f"Command: `python benchmarks/subgroups.py --write` ({load}), which runs "
            f"`edgemed bench {' '.join(a.name for a in arts)} --data brain_mri --groups "
            "brain_groups.csv`. Groups from the files themselves "
            "(`edgemed.evaluation.group_sources.folder_groups_csv`): source format (JPEG color, "
            "JPEG grayscale, PNG of any mode) and resolution band of the stored image. CNN at "
            f"{SIZE[0]} px, {EPOCHS} epochs, duplicate-aware split; test split n={n}; drift vs the "
            "torch FP32 reference; 95% CIs (AUC: DeLong; drop: paired bootstrap; sens/spec: "
            "Wilson).",
            "",
            table(head, body),
            "",
            "On a split this small every group's CI is wide: a group of a few images cannot show "
            "a drop, and a group with one class has no AUC (reported as such; under "
            "`--gate-per-group` it fails with its size).",
        ])  # fmt: skip
        replace_section("Subgroups (brain MRI)", text)


if __name__ == "__main__":
    main()
