"""Training recipe before/after, side by side in one run on the same load.

"before" is the edgemed package of a git commit (default: the commit before issue 27), unpacked
with `git archive` into a temporary folder; "after" is this checkout. Every training runs in its
own subprocess (cwd and PYTHONPATH = the source tree), seeds interleaved (before and after of one
seed back to back, the order alternating per seed), 2 torch threads, on the shared sets:
- chest X-ray subset (PneumoniaMNIST, 28 px): test AUC and training seconds (ratio of medians)
- brain MRI at 128 px (duplicate-aware split, 63 test images): test AUC with its DeLong 95% CI
- NIH ChestX-ray14 1000 (64 px, 14 labels): macro test AUC over labels with both classes in
  test, with the class-weight cap variants (`--variants`)
- transfer: pretrain on one set (seed 0), fine-tune on another with `init`, vs scratch (the
  "after" rows of the target set, same seeds)

"after" runs record the test AUC of every epoch (its cost is subtracted from their seconds), so
the early-stopping rules are compared exactly on one full-schedule run: a run stopped at epoch E
is the same computation as the full run up to E.

    python benchmarks/train_recipe.py [--before COMMIT] [--seeds 0 1 2]
        [--only chest brain nih transfer timing] [--repeat N] [--variants uncapped cap20] [--rows FILE.jsonl]
    python benchmarks/train_recipe.py --summarize FILE.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
VARIANTS = {  # after-code config overrides measured next to the defaults (NIH: the cap)
    "uncapped": {"class_weight_cap": None},
    "cap20": {"class_weight_cap": 20.0},
    "cap3": {"class_weight_cap": 3.0},
}
TRANSFER = (  # (source, source overrides, target); the source is pretrained once, seed 0
    ("nih", {}, "chest"),
    ("chest", {}, "brain"),  # pretrained at its native 28 px, fine-tuned at 128 px
)

ONE = """
import json, sys, time
from pathlib import Path
from edgemed.models import ModelSpec
import edgemed.pipeline.training as T
job = json.loads(sys.argv[1])
kw = dict(job["config"])
if kw.get("image_size"):
    kw["image_size"] = tuple(kw["image_size"])
trace = []
if job["trace"]:  # the test AUC of every epoch, its time taken out of the training seconds
    fit0 = T.fit
    def fit(module, ds, contract, r, loss_fn, score, **more):
        test = ds.split("test")
        def both(m):
            v = score(m)
            t0 = time.perf_counter()
            a = T.selection_auc(contract, test.labels, T.predict_logits(m, contract, test.images))
            trace.append((a, time.perf_counter() - t0))
            return v
        return fit0(module, ds, contract, r, loss_fn, both, **more)
    T.fit = fit
cfg = T.TrainConfig(model=ModelSpec("cnn"), **kw)
r = T.train(cfg)
if job.get("save"):
    T.write_training_dir(r, cfg.model, Path(job["save"]), force=True)
t, v = r.card["test"], r.card["training"]
print("RESULT " + json.dumps({"auc": t["auc"], "ci": t.get("auc_ci95"), "acc": t.get("accuracy"),
      "seconds": v["seconds"] - sum(s for _, s in trace), "epochs_run": v["epochs_run"],
      "best_epoch": v["best_epoch"], "val_curve": [h["val_auc"] for h in v["history"]],
      "test_curve": [round(a, 5) for a, _ in trace],
      "class_weights": v.get("recipe", {}).get("class_weights")}))
"""


def run_one(src: Path, config: dict, trace: bool, save: str | None = None) -> dict:
    """Train once in a fresh process with `src` first on sys.path; the RESULT line as a dict."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    job = json.dumps({"config": config, "save": save, "trace": trace})
    t0 = time.perf_counter()
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
    return {**json.loads(line[-1][7:]), "wall": round(time.perf_counter() - t0, 2)}


def before_tree(commit: str, tmp: Path) -> Path:
    """The edgemed package of `commit`, unpacked into tmp/before."""
    dest = tmp / "before"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "edgemed"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


class Rows:
    """Result rows, each printed and appended to a JSONL file as it arrives."""

    def __init__(self, path: Path | None) -> None:
        self.rows: list[dict] = []
        self.path = path
        if path and path.exists():  # a resumed run: rows already measured are not run again
            self.rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

    def has(self, name: str, recipe: str, seed: int) -> bool:
        return any((r["set"], r["recipe"], r["seed"]) == (name, recipe, seed) for r in self.rows)

    def add(self, row: dict) -> dict:
        row = {**row, "load": [round(v, 2) for v in os.getloadavg()]}
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.path:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return row


def compare(name: str, before: Path, seeds, recipes, variants, rows: Rows) -> None:
    """One set: before and after (and after's variants) per seed, interleaved."""
    lanes = [("before", before, {}), ("after", ROOT, {})]
    lanes += [(f"after-{v}", ROOT, VARIANTS[v]) for v in variants]
    lanes = [lane for lane in lanes if lane[0].split("-")[0] in recipes]
    for i, seed in enumerate(seeds):
        for recipe, src, extra in lanes if i % 2 == 0 else lanes[::-1]:
            if rows.has(name, recipe, seed):
                continue
            config = {**SETS[name], **extra, "seed": seed, "threads": 2}
            r = run_one(src, config, trace=src == ROOT)
            rows.add({"set": name, "recipe": recipe, "seed": seed, **r})


def timing(before: Path, seeds, repeat: int, rows: Rows) -> None:
    """Chest subset training time only: before/after pairs back to back, the order alternating,
    no per-epoch test trace (the seconds are the loop's own)."""
    for i in range(repeat):
        for j, seed in enumerate(seeds):
            lanes = [("before", before), ("after", ROOT)]
            for recipe, src in lanes if (i + j) % 2 == 0 else lanes[::-1]:
                r = run_one(src, {**SETS["chest"], "seed": seed, "threads": 2}, trace=False)
                rows.add({"set": "chest-timing", "recipe": recipe, "seed": seed, **r})


def transfer(seeds, tmp: Path, rows: Rows) -> None:
    """Pretrain on `source` (seed 0), fine-tune on `target` from its model.pt (all defaults);
    scratch = the "after" rows of the target (run here when absent)."""
    for source, extra, target in TRANSFER:
        pre = tmp / f"pre-{source}"
        cfg = {**SETS[source], **extra, "seed": 0, "threads": 2}
        r = run_one(ROOT, cfg, trace=False, save=str(pre))
        rows.add({"set": f"pretrain {source}", "recipe": "after", "seed": 0, **r})
        for seed in seeds:
            config = {**SETS[target], "seed": seed, "threads": 2}
            if rows.has(f"{source}->{target}", "init", seed):
                continue
            if not rows.has(target, "after", seed):
                rows.add(
                    {"set": target, "recipe": "after", "seed": seed, **run_one(ROOT, config, True)}
                )
            r = run_one(ROOT, {**config, "init": str(pre / "model.pt")}, trace=True)
            rows.add({"set": f"{source}->{target}", "recipe": "init", "seed": seed, **r})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=BEFORE_COMMIT)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", default=["before", "after"])
    ap.add_argument("--only", nargs="+", default=["chest", "brain", "nih", "transfer"])
    ap.add_argument("--variants", nargs="*", default=["uncapped", "cap20"], choices=list(VARIANTS))
    ap.add_argument("--repeat", type=int, default=1, help="timing: rounds over the seeds")
    ap.add_argument("--rows", type=Path, help="append every result row to this JSONL file")
    ap.add_argument("--summarize", type=Path, help="only summarize the rows of this JSONL file")
    args = ap.parse_args()
    if args.summarize:
        rows = [json.loads(ln) for ln in args.summarize.read_text().splitlines() if ln.strip()]
        return summarize(rows)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    t0 = time.time()
    rows = Rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = before_tree(args.before, tmp)
        for name in ("chest", "brain", "nih"):
            if name in args.only:
                variants = args.variants if name == "nih" else []
                compare(name, before, args.seeds, args.recipes, variants, rows)
        if "timing" in args.only:
            timing(before, args.seeds, args.repeat, rows)
        if "transfer" in args.only:
            transfer(args.seeds, tmp, rows)
    summarize(rows.rows)
    print(f"load average at end: {os.getloadavg()}; wall {time.time() - t0:.0f} s")


# --- the tables -------------------------------------------------------------------------------


def summarize(rows: list[dict]) -> None:
    accuracy_table(rows)
    time_ratio(rows)
    early_stopping_table(rows)
    transfer_table(rows)


def accuracy_table(rows: list[dict]) -> None:
    print("\n| set | recipe | seeds | test AUC per seed | mean | SD | min-max | best epochs |")
    print("|---|---|---|---|---|---|---|---|")
    keys = sorted(
        {(r["set"], r["recipe"]) for r in rows}, key=lambda k: (k[0], k[1] != "before", k[1])
    )
    for key in keys:
        rs = sorted((r for r in rows if (r["set"], r["recipe"]) == key), key=lambda r: r["seed"])
        a = np.array([r["auc"] for r in rs])
        per = ", ".join(f"{v:.4f}" for v in a)
        sd = a.std(ddof=1) if len(a) > 1 else float("nan")
        best = ", ".join(str(r["best_epoch"]) for r in rs)
        print(
            f"| {key[0]} | {key[1]} | {len(a)} | {per} | {a.mean():.4f} | {sd:.4f} | "
            f"{a.min():.4f}-{a.max():.4f} | {best} |"
        )
    for r in rows:
        if r.get("ci"):
            lo, hi = r["ci"]
            print(
                f"{r['set']} {r['recipe']} seed {r['seed']}: AUC {r['auc']:.4f} ({lo:.3f}-{hi:.3f})"
            )


def time_ratio(rows: list[dict]) -> None:
    """Ratio of medians after/before of the training seconds (the loop), the process wall time
    and the seconds per epoch; each run listed with the load average at its end."""
    for name in ("chest", "chest-timing"):
        pick = {
            k: [r for r in rows if (r["set"], r["recipe"]) == (name, k)]
            for k in ("before", "after")
        }
        if not (pick["before"] and pick["after"]):
            continue
        for key in ("seconds", "wall", "per epoch"):
            med = {
                k: statistics.median(
                    r["seconds"] / r["epochs_run"] if key == "per epoch" else r[key] for r in v
                )
                for k, v in pick.items()
            }
            print(
                f"{name} {key} median (n={len(pick['after'])}): before {med['before']:.2f}, "
                f"after {med['after']:.2f}, ratio after/before {med['after'] / med['before']:.2f}x"
            )
        for r in (r for r in rows if r["set"] == name):
            print(f"  {r['recipe']} seed {r['seed']}: {r['seconds']:.1f} s, load {r['load']}")


def stop_epoch(val: list[float], patience: int, count_from: int) -> int:
    """The last epoch a run with this early-stopping rule trains (epochs are 1-based)."""
    best, stale = -1.0, 0
    for e, v in enumerate(val, start=1):
        if v > best + 1e-4:
            best, stale = v, 0
        elif e >= count_from:
            stale += 1
        if stale >= patience:
            return e
    return len(val)


def best_epoch(val: list[float]) -> int:
    """The epoch the loop keeps: a later one only when it gains more than 1e-4 (loop._Best)."""
    best, at = -1.0, 0
    for e, v in enumerate(val, start=1):
        if v > best + 1e-4:
            best, at = v, e
    return at


def early_stopping_table(rows: list[dict]) -> None:
    """Old rule (patience 5 from epoch 1) vs the mid-schedule rule vs off, on the after runs."""
    sys.path.insert(0, str(ROOT))
    from edgemed.pipeline.loop import patience_start

    print("\n| set | recipe | seed | rule | stops at | selected epoch | test AUC |")
    print("|---|---|---|---|---|---|---|")
    mean: dict = {}
    for r in rows:
        if not r.get("test_curve") or r["epochs_run"] != 15 or r["recipe"] == "init":
            continue
        val = r["val_curve"]
        rules = (
            ("patience 5 from epoch 1", 5, 1),
            ("patience 5 from mid-decay", 5, patience_start(15, 1.0)),
            ("off", 99, 99),
        )
        for name, p, start in rules + (("off, last epoch kept (not a rule of edgemed)", 99, 99),):
            end = stop_epoch(val, p, start)
            sel = best_epoch(val[:end]) if "last" not in name else end
            auc = r["test_curve"][sel - 1]
            mean.setdefault((r["set"], r["recipe"], name), []).append(auc)
            print(
                f"| {r['set']} | {r['recipe']} | {r['seed']} | {name} | {end} | {sel} | {auc:.4f} |"
            )
    print("\n| set | recipe | rule | mean test AUC |")
    print("|---|---|---|---|")
    for (s, rec, name), v in mean.items():
        print(f"| {s} | {rec} | {name} | {np.mean(v):.4f} (n={len(v)}) |")


def transfer_table(rows: list[dict]) -> None:
    print(
        "\n| pair | seed | scratch best val (epoch) | init: first epoch >= it | init best val (epoch) | test AUC scratch | init |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in (x for x in rows if x["recipe"] == "init"):
        target = r["set"].split("->")[1]
        s = next(
            (x for x in rows if (x["set"], x["recipe"], x["seed"]) == (target, "after", r["seed"])),
            None,
        )
        if s is None:
            continue
        best = max(s["val_curve"])
        reach = next((e for e, v in enumerate(r["val_curve"], 1) if v >= best), None)
        print(
            f"| {r['set']} | {r['seed']} | {best:.4f} ({s['best_epoch']}) | "
            f"{reach if reach else 'never'} | {max(r['val_curve']):.4f} ({r['best_epoch']}) | "
            f"{s['auc']:.4f} | {r['auc']:.4f} |"
        )
        print(f"  val AUC per epoch, scratch: {s['val_curve']}\n  init:    {r['val_curve']}")


if __name__ == "__main__":
    main()
