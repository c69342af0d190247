"""Study grid points as executor jobs (`edgemed study --executor ray[:ADDRESS]`).

Each point is trained, exported and timed in a temporary directory on the node that runs it; its
model and artifact come back as one tar through the object store, checked against their SHA-256
and unpacked into the study's working directory, and the row (with the node it ran on) is
appended to points.jsonl at once, so an interrupted run resumes like a local one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edgemed.data import Dataset
from edgemed.executors import Executor, Job, RunOutcome
from edgemed.executors.blobs import pack_dirs, unpack
from edgemed.models import ModelSpec, build_model
from edgemed.models.complexity import measure_complexity
from edgemed.study import GridPoint, StudyConfig
from edgemed.study.point import run_point


def point_files(pt: GridPoint, precision: str) -> list[str]:
    """The folders a point writes under the study directory."""
    return [f"models/{pt.name}", f"artifacts/{pt.name}-onnx-{precision}"]


def point_task(pt: GridPoint, ds: Dataset, cfg: StudyConfig, precision: str) -> dict:
    """On a worker: one grid point in a node-local temp dir; its row and its files as a blob."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgemed-point-") as d:
        row = run_point(pt, ds, cfg, Path(d), precision)
        return {"row": row, "files": pack_dirs(Path(d), point_files(pt, precision))}


def largest_first(points: list[GridPoint], ds: Dataset, channels: int) -> list[GridPoint]:
    """The points by decreasing multiply-accumulates at the data's input size.

    Workers take tasks in submission order; the grid lists the largest models last, and one of
    them started last on an otherwise idle cluster sets the makespan.
    """

    size = ds.split("train").images.shape[1:3]
    outputs = 1 if ds.task == "binary" else len(ds.class_names)

    def macs(pt: GridPoint) -> int:
        spec = ModelSpec(pt.model, dict(pt.kwargs))
        # The grid is edgemed's own code, so its factory names are the ones allowed to load.
        module = build_model(spec, channels, outputs, None if spec.is_zoo else pt.model)
        return measure_complexity(module, (1, channels, *size)).macs

    return sorted(points, key=macs, reverse=True)


def run_points(
    executor: Executor,
    todo: list[GridPoint],
    ds: Dataset,
    cfg: StudyConfig,
    work: Path,
    precision: str,
    on_row: Callable[[dict], None],
) -> RunOutcome:
    """Run the points on `executor`; on_row(row) for each as it arrives (files already in work)."""
    # One torch thread per task unless --threads says otherwise: tasks share the node's cores.
    task_cfg = replace(cfg, threads=cfg.threads or 1)
    ds_ref = executor.put(ds)  # one copy in the object store for every task
    jobs = [
        Job(pt.name, point_task, (pt, ds_ref, task_cfg, precision), cpus=task_cfg.threads)
        for pt in largest_first(todo, ds, cfg.channels)
    ]

    def done(key: str, value: dict, node: dict) -> None:
        unpack(value["files"], work, f"the model and artifact of study point {key}")
        on_row({**value["row"], "node": node, "executor": executor.label})

    return executor.run(jobs, done)
