"""MONAI factories x CPU backend x INT8 (issue 18): exported within budget or refused (the cause),
the fraction of compute ops in INT8 (manifest backend.int8_ops), export time and peak RSS.

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 python benchmarks/monai_matrix.py --out runs/monai [--models vit]

Each factory (`package.module:factory` with `--model-arg`, nothing of ours in between) trains a
few epochs on the embedded chest X-ray subset at 64 px, then exports with `--model FACTORY
--checkpoint model.pt --contract` (the trained contract) at the default budget; each command runs in
its own process through benchmarks/zoo_matrix.py's `_child`, so its RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.zoo_matrix import _child  # noqa: E402

NETS = "monai.networks.nets"
FACTORIES = {  # name -> (factory, --model-arg list, extra flags, epochs)
    "densenet121": (f"{NETS}:DenseNet121", ["spatial_dims=2", "in_channels=1", "out_channels=1"],
                    [], 1),
    # MONAI's EfficientNet BatchNorm momentum is 0.01 (TF's 0.99): after a few hundred steps its
    # running statistics are still near their initial values and eval-mode outputs are constant
    # (measured: 1 epoch at 64 px gave the same logit for all 270 validation images). 0.1 is
    # PyTorch's default and what DenseNet121 uses.
    "efficientnet-b0": (f"{NETS}:EfficientNetBN", ['model_name="efficientnet-b0"',
                        "spatial_dims=2", "in_channels=1", "num_classes=1", "pretrained=false",
                        'norm=["batch", {"eps": 0.001, "momentum": 0.1}]'], [], 3),
    "vit": (f"{NETS}:ViT", ["in_channels=1", "img_size=64", "patch_size=8", "hidden_size=128",
            "mlp_dim=256", "num_layers=2", "num_heads=4", "classification=true", "num_classes=1",
            "spatial_dims=2", "post_activation=null"], ["--output-index", "0"], 2),
}  # fmt: skip
# (target, extra export flags); accuracy control only where issue 18 asks for it
EXPORTS = {
    "densenet121": [("onnx", []), ("openvino", []), ("tflite", [])],
    "efficientnet-b0": [("onnx", []), ("openvino", []), ("tflite", []),
                        ("onnx", ["--accuracy-control"])],
    "vit": [("onnx", []), ("openvino", []), ("tflite", []), ("onnx", ["--accuracy-control"])],
}  # fmt: skip


def factory_args(name: str) -> list[str]:
    """--model FACTORY --model-arg ... (and --output-index for a tuple output)."""
    factory, margs, extra, _ = FACTORIES[name]
    out = ["--model", factory, *extra]
    for a in margs:
        out += ["--model-arg", a]
    return out


def int8_ops(out: Path) -> str:
    """'N of M compute ops in INT8' from the manifest (or '-' without one)."""
    path = out / "manifest.json"
    if not path.exists():
        return "-"
    ops = json.loads(path.read_text())["backend"].get("int8_ops") or {}
    return ops.get("words", "-")


def run_model(name: str, root: Path, reuse: bool) -> list[dict]:
    model = root / name / "model"
    rows = []
    if not (reuse and (model / "model.pt").exists()):
        train = ["train", "--data", "embedded", *factory_args(name), "--image-size", "64",
                 "--epochs", str(FACTORIES[name][3]), "--threads", "2", "--out", str(model),
                 "--force"]  # fmt: skip
        rows.append({"model": name, "step": "train", **_child(train)})
        print(json.dumps(rows[-1]), flush=True)
    contract = root / name / "contract.json"
    contract.write_text(json.dumps(json.loads((model / "card.json").read_text())["contract"]))
    for target, extra in EXPORTS[name]:
        label = f"{target} int8" + (" accuracy-control" if extra else "")
        out = root / name / label.replace(" ", "-")
        export = ["export", *factory_args(name), "--checkpoint", str(model / "model.pt"),
                  "--contract", str(contract), "--data", "embedded", "--target", target,
                  "--precision", "int8", "--calib", "embedded", "--calib-count", "128", *extra,
                  "--out", str(out), "--force"]  # fmt: skip
        row = {"model": name, "step": label, **_child(export), "int8_ops": int8_ops(out)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default=",".join(FACTORIES))
    ap.add_argument("--reuse", action="store_true", help="reuse an existing trained model dir")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        rows = run_model(name, args.out, args.reuse)
        dump = {"load": os.getloadavg(), "rows": rows}
        (args.out / f"monai_matrix-{name}.json").write_text(json.dumps(dump))


if __name__ == "__main__":
    main()
