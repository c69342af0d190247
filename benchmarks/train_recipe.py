"""Training recipe before/after, side by side in one run on the same load.

"before" is the edgemed package of a git commit (default: the commit before issue 27), unpacked
with `git archive` into a temporary folder; "after" is this checkout. Every training runs in its
own subprocess (PYTHONPATH picks the source tree), 3 seeds each, on the shared sets:
- chest X-ray subset (PneumoniaMNIST, 28 px): test AUC and training seconds (time ratio goal <= 1.5x)
- brain MRI at 128 px (duplicate-aware split, 63 test images): test AUC with its DeLong 95% CI
- NIH ChestX-ray14 1000 (64 px, 14 labels): macro test AUC over labels with both classes in test
- transfer: pretrain on one set, fine-tune on another with `init`, vs scratch (same seeds)

    python benchmarks/train_recipe.py [--before COMMIT] [--seeds 0 1 2] [--only chest brain nih transfer]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEMED_DATA", ROOT.parent / "shared" / "datasets"))
BEFORE_COMMIT = "04a9313"  # main before issue 27
SETS = {
    "chest": {"data": str(DATA / "pneumoniamnist_subset.npz")},
    "brain": {"data": str(DATA / "brain_mri"), "image_size": [128, 128]},
    "nih": {"data": str(DATA / "nih_chestxray14_1000" / "nih1000_64.npz")},
}

ONE = """
import json, sys
from edgemed.models import ModelSpec
from edgemed.pipeline.training import TrainConfig, train, write_training_dir
from pathlib import Path
job = json.loads(sys.argv[1])
kw = dict(job["config"])
if kw.get("image_size"):
    kw["image_size"] = tuple(kw["image_size"])
cfg = TrainConfig(model=ModelSpec("cnn"), **kw)
r = train(cfg)
if job.get("save"):
    write_training_dir(r, cfg.model, Path(job["save"]), force=True)
t, v = r.card["test"], r.card["training"]
print("RESULT " + json.dumps({"auc": t["auc"], "ci": t.get("auc_ci95"), "seconds": v["seconds"],
      "epochs_run": v["epochs_run"], "best_epoch": v["best_epoch"],
      "val_curve": [h["val_auc"] for h in v["history"]]}))
"""


def run_one(src: Path, config: dict, save: str | None = None) -> dict:
    """Train once in a fresh process with `src` first on PYTHONPATH; the RESULT line as a dict."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    job = json.dumps({"config": config, "save": save})
    out = subprocess.run(
        [sys.executable, "-c", ONE, job],
        env=env,
        cwd=src,  # `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
        raise SystemExit(f"training failed ({src}, {config}):\n{out.stderr[-2000:]}")
    return json.loads(line[-1][7:])


def before_tree(commit: str, tmp: Path) -> Path:
    """The edgemed package of `commit`, unpacked into tmp/before."""
    dest = tmp / "before"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "edgemed"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def compare(name: str, before: Path, seeds: list[int], recipes: list[str]) -> list[dict]:
    """3-seed rows for one set: before (its defaults) and after (the new defaults)."""
    rows = []
    for recipe, src in (("before", before), ("after", ROOT)):
        if recipe not in recipes:
            continue
        for seed in seeds:
            r = run_one(src, {**SETS[name], "seed": seed, "threads": 2})
            rows.append({"set": name, "recipe": recipe, "seed": seed, **r})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def transfer(seeds: list[int], tmp: Path) -> list[dict]:
    """Pretrain on the NIH 1000 set (adults, 64 px) and the chest subset; fine-tune on the chest
    subset and brain MRI respectively, vs scratch."""
    rows = []
    pairs = (("nih", "chest", {}), ("chest", "brain", {"image_size": [128, 128]}))
    for source, target, extra in pairs:
        pre = tmp / f"pre-{source}"
        cfg = {**SETS[source], "seed": 0, "threads": 2}
        if source == "chest" and target == "brain":
            cfg["image_size"] = [128, 128]  # the same conv weights see 128 px on the target
        run_one(ROOT, cfg, save=str(pre))
        for seed in seeds:
            for mode, init in (("scratch", None), ("init", str(pre / "model.pt"))):
                config = {**SETS[target], **extra, "seed": seed, "threads": 2}
                if init:
                    config["init"] = init
                r = run_one(ROOT, config)
                rows.append({"set": f"{source}->{target}", "recipe": mode, "seed": seed, **r})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summarize(rows: list[dict]) -> None:
    print("\n| set | recipe | test AUC mean | spread (min-max) | seconds mean | epochs to best |")
    print("|---|---|---|---|---|---|")
    keys = sorted({(r["set"], r["recipe"]) for r in rows}, key=lambda k: (k[0], k[1] != "before"))
    for key in keys:
        rs = [r for r in rows if (r["set"], r["recipe"]) == key]
        a = np.array([r["auc"] for r in rs])
        s = np.array([r["seconds"] for r in rs])
        best = np.mean([r["best_epoch"] for r in rs])
        print(
            f"| {key[0]} | {key[1]} | {a.mean():.4f} | {a.min():.4f}-{a.max():.4f} | "
            f"{s.mean():.1f} | {best:.1f} |"
        )
    for r in rows:
        if r.get("ci"):
            print(f"{r['set']} {r['recipe']} seed {r['seed']}: AUC {r['auc']:.4f} CI {r['ci']}")
    chest = {
        k: np.mean([r["seconds"] for r in rows if r["set"] == "chest" and r["recipe"] == k])
        for k in ("before", "after")
    }
    if all(np.isfinite(v) for v in chest.values()):
        print(f"chest training time ratio after/before: {chest['after'] / chest['before']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=BEFORE_COMMIT)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", default=["before", "after"])
    ap.add_argument("--only", nargs="+", default=["chest", "brain", "nih", "transfer"])
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = before_tree(args.before, tmp)
        for name in ("chest", "brain", "nih"):
            if name in args.only:
                rows += compare(name, before, args.seeds, args.recipes)
        if "transfer" in args.only:
            rows += transfer(args.seeds, tmp)
    summarize(rows)
    print(f"load average at end: {os.getloadavg()}; wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
