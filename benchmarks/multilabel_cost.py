"""Cost of judging 14 labels vs one: the evaluation `edgemed bench` runs per row, side by side.

    python benchmarks/multilabel_cost.py --bench DIR [--repeats 5] [--sizes 181,10000]

DIR is an `edgemed bench` output of a multi-label artifact (e.g. an NIH ChestX-ray14 1000 INT8
export): its `references/*.npy` holds the FP32 reference logits and `logits/*.npy` each
artifact's. The first INT8 artifact's logits are judged against the reference with the bench's own
call (`drift_from_logits`, n_boot=1000: output sanity, flips, per-label AUCs with DeLong CIs, the
bootstrap CI of each AUC drop, sensitivity/specificity, ECE, reliability) as
- the 14-label multi-label model it is, and
- a binary model: the same model's first label (its logit column and its truth) alone,
on the split's images and on N images resampled from them with replacement (seed 0). The model
runs are the same for both (identical logits), so the difference is the evaluation alone.
Time = the fastest of --repeats runs (the one least disturbed on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgemed.contract import Contract  # noqa: E402
from edgemed.data import load_dataset  # noqa: E402
from edgemed.evaluation.drift import drift_from_logits  # noqa: E402


def _inputs(bench: Path):
    doc = json.loads((bench / "results.json").read_text())
    row = next(r for r in doc["rows"] if r["status"] == "ok" and r.get("precision") == "int8")
    manifest = json.loads((Path(row["artifact"]) / "manifest.json").read_text())
    contract = Contract.from_dict(manifest["contract"]).with_layout("NCHW")
    ref = np.load(next((bench / "references").glob("*.npy")))
    cand = np.load(bench / "logits" / f"{row['key']}.npy")
    split = load_dataset(doc["data"]["path"]).split(doc["data"]["split"])
    return contract, ref, cand, split.labels, row["label"]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _row(binary: Contract, ml: Contract, r, c, y, repeats: int):
    t_bin = _best(lambda: drift_from_logits(binary, r[:, :1], c[:, :1], y[:, 0], n_boot=1000),
                  repeats)  # fmt: skip
    t_ml = _best(lambda: drift_from_logits(ml, r, c, y, n_boot=1000), repeats)
    return t_bin, t_ml, drift_from_logits(ml, r, c, y, n_boot=1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="181,10000")
    args = ap.parse_args()
    ml, ref, cand, y, name = _inputs(args.bench)
    binary = Contract(ml.input_size, ml.channels, ("no " + ml.class_names[0], ml.class_names[0]),
                      threshold=float(ml.thresholds[0]), mean=ml.mean, std=ml.std)  # fmt: skip
    print(f"artifact {name}; {ml.task} with {len(ml.class_names)} labels; load average "
          f"{os.getloadavg()[0]:.2f}; cores {os.cpu_count()}")  # fmt: skip
    print("| images | binary (1 label) s | multi-label (14 labels) s | ratio | evaluable labels |")
    print("|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        idx = np.arange(len(y)) if n == len(y) else np.random.default_rng(0).integers(0, len(y), n)
        t_bin, t_ml, d = _row(binary, ml, ref[idx], cand[idx], y[idx], args.repeats)
        print(f"| {n} | {t_bin:.3f} | {t_ml:.3f} | {t_ml / t_bin:.2f} | {len(d.macro_labels)} |")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
