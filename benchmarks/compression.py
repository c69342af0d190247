"""Each `edgemed compress` method on a zoo model trained on the chest X-ray set, side by side in
one run: params, MACs, checkpoint size, test AUC before/after, and the ORT INT8 export of every
compressed model (its own test AUC, size and batch-1 1-thread latency).

    python benchmarks/compression.py --out /tmp/edgemed-compression [--threads 1]

Writes OUT/compression.json and prints the markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from edgemed.data.locate import embedded_dataset_path  # noqa: E402

CXR = embedded_dataset_path()  # byte-identical to ../shared/datasets/pneumoniamnist_subset.npz

BASES = {"cnn": ("cnn", {"width": 1.0}), "cnn-dwsep": ("cnn-dwsep", {"width": 1.0})}
# (label, base, method, settings); distill uses the cnn base as the teacher of a fresh cnn w0.25.
RUNS = [
    ("prune 50%", "cnn", "prune", {"amount": 0.5}),
    ("prune 80%", "cnn", "prune", {"amount": 0.8}),
    ("channel-prune 50%", "cnn", "channel-prune", {"amount": 0.5}),
    ("channel-prune 30%", "cnn", "channel-prune", {"amount": 0.3}),
    ("svd energy 0.9", "cnn-dwsep", "svd", {"energy": 0.9}),
    ("tucker energy 0.9", "cnn", "tucker", {"energy": 0.9}),
    ("tucker rank 8", "cnn", "tucker", {"rank": 8}),
    ("binarize", "cnn", "binarize", {}),
    ("distill -> cnn w0.25", "cnn", "distill", {"model_args": {"width": 0.25}}),
]


def train_base(name: str, out: Path, epochs: int, threads: int | None) -> Path:
    from edgemed.models import ModelSpec
    from edgemed.pipeline.training import TrainConfig, train, write_training_dir

    if (out / "model.pt").is_file():
        return out
    model, kwargs = BASES[name]
    cfg = TrainConfig(data=str(CXR), model=ModelSpec(model, kwargs), epochs=epochs, threads=threads)
    write_training_dir(train(cfg), cfg.model, out, force=False)
    return out


def int8_of(model_dir: Path, out: Path) -> dict:
    """ORT INT8 export (drift measured, not gated) + its own test AUC and latency."""
    from edgemed.data import load_dataset
    from edgemed.pipeline.budget import UNGATED
    from edgemed.pipeline.export import ExportRequest, run_export
    from edgemed.study.point import time_artifact

    m = run_export(
        ExportRequest(
            model=str(model_dir),
            target="onnx",
            out=out,
            precision="int8",
            calib=str(CXR),
            force=True,
            budget=UNGATED,
        )
    )
    t = time_artifact(out, load_dataset(CXR), 1.0)
    return {
        "test_auc": t["artifact_test_auc"],
        "bytes": t["artifact_bytes"],
        "latency_ms": t["latency"]["median_ms"],
        "val_flip_rate": m["drift"]["flip_rate"],
    }


def run_one(label, base, method, settings, bases, root: Path, args) -> dict:
    from edgemed.compress.pipeline import run_compress
    from edgemed.compress.request import CompressRequest

    out = root / "compressed" / label.replace(" ", "_").replace("%", "pct").replace(">", "")
    kw = dict(settings)
    model_args = kw.pop("model_args", {})
    if method == "distill":
        req = CompressRequest(
            model="cnn", method=method, out=out, teacher=str(bases[base]), model_args=model_args
        )
    else:
        req = CompressRequest(model=str(bases[base]), method=method, out=out, **kw)
    req = CompressRequest(**{**req.__dict__, "threads": args.threads, "force": True})
    t0 = time.perf_counter()
    card = run_compress(req)
    seconds = time.perf_counter() - t0
    int8 = int8_of(out, root / "int8" / out.name)
    return {
        "label": label,
        "base": base,
        "compression": card["compression"],
        "seconds": seconds,
        "int8": int8,
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| method (base) | params | MACs | model.pt KiB (gzip) | test AUC before -> after (drop) | "
        "ORT INT8 test AUC (drop vs FP32 before) | INT8 KiB | INT8 ms |\n"
        "|---|---:|---:|---:|---|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        c, q = r["compression"], r["int8"]
        b, a = c["before"], c["after"]
        lines.append(
            f"| {r['label']} ({r['base']}) | {b['params']:,} -> {a['params']:,} | "
            f"{b['macs'] / 1e6:.2f} M -> {a['macs'] / 1e6:.2f} M | "
            f"{b['size_bytes'] / 1024:.0f} -> {a['size_bytes'] / 1024:.0f} "
            f"({b['size_gzip_bytes'] / 1024:.0f} -> {a['size_gzip_bytes'] / 1024:.0f}) | "
            f"{b['test_auc']:.4f} -> {a['test_auc']:.4f} ({c['auc_drop']:+.4f}) | "
            f"{q['test_auc']:.4f} ({b['test_auc'] - q['test_auc']:+.4f}) | {q['bytes'] / 1024:.0f} | "
            f"{q['latency_ms']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()
    bases = {b: train_base(b, args.out / "base" / b, args.epochs, args.threads) for b in BASES}
    from edgemed.models import ModelSpec
    from edgemed.pipeline.training import TrainConfig, train  # the student without a teacher

    plain = train(
        TrainConfig(
            data=str(CXR), model=ModelSpec("cnn", {"width": 0.25}), epochs=15, threads=args.threads
        )
    )
    rows = []
    for label, base, method, settings in RUNS:
        rows.append(run_one(label, base, method, settings, bases, args.out, args))
        print(f"{label}: done", file=sys.stderr, flush=True)
    result = {
        "rows": rows,
        "plain_student_test_auc": plain.card["test"]["auc"],
        "wall_seconds": time.perf_counter() - t0,
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
    }
    (args.out / "compression.json").write_text(json.dumps(result, indent=2, default=str))
    print(markdown(rows))
    print(
        f"\nplain cnn w0.25 (no teacher, 15 epochs): test AUC {result['plain_student_test_auc']:.4f}; "
        f"wall {result['wall_seconds']:.0f} s; load average {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
