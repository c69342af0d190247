"""The domain guard's goals, measured on the shared data (issue 25).

    PYTHONPATH=$PWD python benchmarks/domain_guard.py --cxr-model DIR --brain-model DIR --out OUT

Exports each model to every CPU runtime at FP32 and INT8 (the guard fitted with that artifact),
then per artifact: AUROC / share flagged / FPR@95TPR per OOD set (far: other modality; near:
adult chest X-rays; inverted; rotated), the in-domain false-flag rate on the test split with its
Wilson interval, the guard's cost at batch 1 (artifact alone vs artifact + feature output +
guard, interleaved in one process), and the window monitor on simulated streams (10,000
in-domain images resampled from the test split; switches to OOD and to a shifted prevalence).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from edgemed.artifact import load_artifact
from edgemed.backends import open_runner
from edgemed.data import load_dataset
from edgemed.domain.guard import DomainGuard, infer_features
from edgemed.domain.monitor import monitor_for
from edgemed.domain.ood import in_domain_row, ood_row, score_images
from edgemed.domain.reference import load_reference
from edgemed.pipeline.export import ExportRequest, run_export

DATA = Path("../shared/datasets")
CXR = DATA / "pneumoniamnist_subset.npz"
BRAIN = DATA / "brain_mri"
NIH = DATA / "nih_chestxray14_1000" / "nih1000_64.npz"
TARGETS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8"),
           ("tflite", "fp32"), ("tflite", "int8")]  # fmt: skip


def all_images(path: Path, c) -> np.ndarray:
    ds = load_dataset(str(path), c.input_size, c.channels)
    return np.concatenate([ds.split(s).images for s in ("train", "val", "test")])


def ood_sets(model: str, c, test: np.ndarray) -> dict:
    rot = {"inverted": 255 - test, "rotated90": np.rot90(test, 1, axes=(1, 2)).copy()}
    if model == "cxr":
        return {"brain_mri (far)": all_images(BRAIN, c), "adult_cxr (near)": all_images(NIH, c),
                **rot}  # fmt: skip
    return {"chest_xray (far)": all_images(CXR, c), **rot}


def guard_cost(runner, guard, c, images: np.ndarray, reps: int = 3000) -> dict:
    """Median ms per image at batch 1: runner.infer alone vs infer_features + guard, interleaved."""
    x = [c.normalize(images[i % len(images)][None]) for i in range(64)]
    plain, guarded = [], []
    for i in range(reps):
        xi, im = x[i % 64], images[i % len(images)][None]
        t0 = time.perf_counter()
        runner.infer(xi)
        t1 = time.perf_counter()
        _, f = infer_features(runner, xi)
        guard.verdicts(im, f)
        t2 = time.perf_counter()
        plain.append(t1 - t0)
        guarded.append(t2 - t1)
    p, g = float(np.median(plain)) * 1e3, float(np.median(guarded)) * 1e3
    return {"plain_ms": p, "guarded_ms": g, "ratio": g / p}


def results_for(runner, guard, c, images: np.ndarray) -> list[dict]:
    """Per-image result dicts as the predictor makes them (scores + probabilities)."""
    from edgemed.domain.fit import run_with_features

    logits, feats = run_with_features(runner, c, images)
    s = guard.scores(images, feats)
    probs = c.probabilities(logits)
    out = []
    for i in range(len(images)):
        p = probs[i]
        pd = {"a": 1 - p[0], "b": p[0]} if c.task == "binary" else dict(enumerate(p))
        out.append({"domain_scores": {k: float(v[i]) for k, v in s.items()}, "probabilities": pd})
    return out


def stream(guard, c, normal: list[dict], switch: list[dict] | None, n: int, seed: int,
           keep_test: np.ndarray | None = None) -> dict:  # fmt: skip
    """Feed `n` resampled in-domain results (then `switch` ones, resampled): alarms and delay.
    `keep_test`: the monitor's reference keeps only these test images (the rest streamed)."""
    if keep_test is not None:
        r = guard.reference
        guard = DomainGuard(dataclasses.replace(
            r, test_feature_scores=r.test_feature_scores[keep_test] if len(r.test_feature_scores)
            else r.test_feature_scores, test_input_scores=r.test_input_scores[keep_test],
            test_probabilities=r.test_probabilities[keep_test]))  # fmt: skip
    mon = monitor_for(guard, c)
    rng = np.random.default_rng(seed)
    before: dict[str, int] = {}
    after = None
    for i in rng.integers(0, len(normal), n):
        for a in mon.observe(normal[i]):
            before[a.statistic] = before.get(a.statistic, 0) + 1
    if switch is not None:
        for k, i in enumerate(rng.integers(0, len(switch), 500)):
            if mon.observe(switch[i]) and after is None:
                after = k + 1
    return {"false_alarms": sum(before.values()), "by_statistic": before,
            "images_to_alarm": after}  # fmt: skip


def bench_artifact(model: str, art_dir: Path, own: Path) -> dict:
    art = load_artifact(art_dir)
    c = art.contract
    guard = DomainGuard(load_reference(art.path))
    ds = load_dataset(str(own), c.input_size, c.channels)
    test = ds.split("test")
    row = {"artifact": art.label, "features": guard.uses_features,
           "domain": art.manifest.get("domain")}  # fmt: skip
    with open_runner(art) as r:
        ind = score_images(r, guard, c, test.images)
        row["in_domain_test"] = in_domain_row(ind)
        sets = ood_sets(model, c, test.images)
        row["ood"] = [ood_row(k, ind, score_images(r, guard, c, v)) for k, v in sets.items()]
        row["cost"] = guard_cost(r, guard, c, test.images)
        normal = results_for(r, guard, c, test.images)
        val = results_for(r, guard, c, ds.split("val").images)
        first_ood = next(iter(sets.values()))
        pos = test.images[np.asarray(test.labels).reshape(len(test.labels), -1)[:, 0] == 1]
        half = np.random.default_rng(3).permutation(len(normal))
        keep, streamed = np.sort(half[: len(half) // 2]), half[len(half) // 2 :]
        row["stream"] = {
            "in_domain_10000": stream(guard, c, normal, None, 10000, 0),
            "test_half_not_in_reference_10000": stream(
                guard, c, [normal[i] for i in streamed], None, 10000, 4, keep
            ),
            "validation_10000": stream(guard, c, val, None, 10000, 0),
            "switch_to_far_ood": stream(
                guard, c, normal, results_for(r, guard, c, first_ood), 1000, 1
            ),  # fmt: skip
            "switch_to_positives_only": stream(
                guard, c, normal, results_for(r, guard, c, pos), 1000, 2
            ),  # fmt: skip
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxr-model")
    ap.add_argument("--brain-model")
    ap.add_argument("--out")
    ap.add_argument("--cost", nargs="*", default=[], help="Only the guard's cost on ARTIFACTs.")
    ap.add_argument("--targets", default=",".join(f"{t}:{p}" for t, p in TARGETS))
    ap.add_argument("--models", default="cxr,brain")
    args = ap.parse_args()
    for art_dir in args.cost:
        art = load_artifact(art_dir)
        own = load_dataset(str(BRAIN), art.contract.input_size, art.contract.channels)
        with open_runner(art, threads=1) as r:
            cost = guard_cost(r, DomainGuard(load_reference(art.path)), art.contract,
                              own.split("test").images, 1000)  # fmt: skip
        print(json.dumps({"artifact": art_dir, "size": art.contract.input_size, **cost}))
    if args.cost:
        print("load average", os.getloadavg())
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    models = (("cxr", args.cxr_model, CXR), ("brain", args.brain_model, BRAIN))
    for model, src, own in [m for m in models if m[0] in args.models.split(",")]:
        for spec in args.targets.split(","):
            target, precision = spec.split(":")
            art = out / f"{model}-{target}-{precision}"
            if not art.exists():
                calib = None if precision == "fp32" else str(own)
                run_export(ExportRequest(model=src, target=target, precision=precision, out=art,
                                         calib=calib))  # fmt: skip
            row = {"model": model, **bench_artifact(model, art, own)}
            rows.append(row)
            print(json.dumps(summary(row)), flush=True)
    doc = {"rows": rows, "load_average": os.getloadavg()}
    (out / "domain_guard.json").write_text(json.dumps(doc, indent=1, default=float))
    print("load average", os.getloadavg())


def summary(row: dict) -> dict:
    ind = row["in_domain_test"]
    return {
        "model": row["model"],
        "artifact": row["artifact"],
        "features": row["features"],
        "in_domain_flagged": f"{ind['rate']:.3f} [{ind['ci95'][0]:.3f}, {ind['ci95'][1]:.3f}]",
        **{
            o["ood_set"]: f"AUROC {o['auroc']:.3f} [{o['auroc_ci95'][0]:.3f}, "
            f"{o['auroc_ci95'][1]:.3f}] flagged {o['flagged']:.3f} FPR95 {o['fpr_at_95tpr']:.3f}"
            for o in row["ood"]
        },  # fmt: skip
        "cost": f"{row['cost']['plain_ms']:.3f} -> {row['cost']['guarded_ms']:.3f} ms "
        f"(x{row['cost']['ratio']:.3f})",
        "stream": row["stream"],
    }


if __name__ == "__main__":
    main()
