"""Cost of `edgemed predict` on the appliance: a fresh process per call, peak memory and time.

    python benchmarks/predict_cost.py [--model TRAINING_DIR] [--work DIR] [--images 200]
                                      [--repeats 5] [--write]

Builds (once, into --work) the default compact CNN on the chest X-ray subset (the same file that
is bundled as 'embedded') unless
--model is given, exports it to ONNX Runtime FP32 and INT8, benches both, signs both into bundles,
then runs the exact appliance command in a fresh process, side by side for the two bundles:

    edgemed predict BUNDLE IMAGE... --pubkey KEYDIR/edgemed.pub --threads 1

under a small wrapper that reads the child's peak RSS (getrusage RUSAGE_CHILDREN ru_maxrss; the
same number `/usr/bin/time -v` prints as "Maximum resident set size"). Per call: 1 image (startup:
interpreter, imports, signature + hash verification, extraction, session, one image) and N real
test images as PNG and as 16-bit DICOM. Time per image = (T_N - T_1) / (N - 1), the marginal cost
of one more image in the same call (T = fastest of the repeats, the run least disturbed on a
shared machine); the median `latency_ms` (decode + preprocess + inference) that predict itself
reports is shown next to it. `--write` puts the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._markdown import load_average, replace_section, table  # noqa: E402
from edgemed.data.locate import embedded_dataset_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CXR = embedded_dataset_path()  # byte-identical to ../shared/datasets/pneumoniamnist_subset.npz
WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "wall = time.perf_counter() - t\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'rc': p.returncode, 'wall_s': wall, 'peak_rss_kb': rss,"
    " 'out': p.stdout, 'err': p.stderr[-2000:]}))\n"
)


def edgemed_exe() -> str:
    """The console script next to this interpreter (not a pyenv shim, which adds its own cost)."""
    exe = Path(sys.executable).parent / "edgemed"
    return str(exe) if exe.exists() else "edgemed"


def sh(*args: object) -> None:
    subprocess.run([edgemed_exe(), *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def prepare(work: Path, model: Path | None) -> tuple[dict[str, Path], Path]:
    """Bundles {precision: path} and the public key, built once into `work`."""
    work.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = work / "model"
        if not model.exists():
            sh("train", "--data", CXR, "--out", model)
    if not (work / "keys" / "edgemed.pub").exists():
        sh("keygen", "--out", work / "keys")
    bundles = {}
    for precision in ("fp32", "int8"):
        art, bench, bundle = (work / f"{k}-{precision}" for k in ("onnx", "bench", "bundle"))
        if not art.exists():
            calib = ("--calib", CXR) if precision == "int8" else ()
            sh(
                "export",
                "--model",
                model,
                "--target",
                "onnx",
                "--precision",
                precision,
                *calib,
                "--out",
                art,
            )
        if not (bench / "results.json").exists():
            sh("bench", art, "--data", CXR, "--out", bench, "--force")
        if not bundle.exists():
            sh(
                "bundle",
                "--model",
                art,
                "--report",
                bench,
                "--key",
                work / "keys" / "edgemed.key",
                "--out",
                bundle,
                "--modality",
                "CR",
                "--modality",
                "DX",
            )
        bundles[precision] = bundle
    return bundles, work / "keys" / "edgemed.pub"


def write_inputs(work: Path, n: int) -> dict[str, list[Path]]:
    """N real chest X-ray test images as PNG and as 16-bit rescaled DICOM (same pixels)."""
    import numpy as np
    from PIL import Image

    from tests.bundle_support import write_dicom

    d = work / "inputs"
    d.mkdir(exist_ok=True)
    images = np.load(CXR)["test_images"][:n]
    png, dcm = [], []
    for i, im in enumerate(images):
        png.append(d / f"cxr{i:03d}.png")
        Image.fromarray(im).save(png[-1])
        dcm.append(d / f"cxr{i:03d}.dcm")
        stored = im.astype(np.uint16) * 257
        write_dicom(dcm[-1], stored, RescaleSlope=0.5, RescaleIntercept=100)
    return {"png": png, "dicom": dcm}


def run_once(cmd: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True
    )
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed: {res['err']}")
    rows = [json.loads(line) for line in res["out"].splitlines() if line.startswith("{")]
    return {"wall_s": res["wall_s"], "peak_mb": res["peak_rss_kb"] / 1024, "rows": rows}


def measure(bundle: Path, pub: Path, images: list[Path], repeats: int) -> dict:
    base = [edgemed_exe(), "predict", str(bundle)]
    tail = ["--pubkey", str(pub), "--threads", "1"]
    one = [run_once([*base, str(images[0]), *tail]) for _ in range(repeats)]
    many = [run_once([*base, *map(str, images), *tail]) for _ in range(repeats)]
    # Minimum over repeats: the run least disturbed by other work on a shared machine.
    t1 = min(r["wall_s"] for r in one)
    tn = min(r["wall_s"] for r in many)
    lat = [row["latency_ms"] for r in many for row in r["rows"]]
    inf = [row["inference_ms"] for r in many for row in r["rows"]]
    return {
        "startup_s": t1,
        "per_image_ms": (tn - t1) / (len(images) - 1) * 1000,
        "latency_ms": statistics.median(lat),
        "inference_ms": statistics.median(inf),
        "peak_mb_1": max(r["peak_mb"] for r in one),
        "peak_mb_n": max(r["peak_mb"] for r in many),
        "n": len(images),
    }


def python_baseline_mb() -> tuple[float, float]:
    """Peak RSS of a fresh Python importing numpy, and numpy + onnxruntime (for scale)."""
    numpy = run_once([sys.executable, "-c", "import numpy"])["peak_mb"]
    ort = run_once([sys.executable, "-c", "import numpy, onnxruntime"])["peak_mb"]
    return numpy, ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="Training dir (default: train the default CNN).")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgemed-predict-cost"))
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="Write the section into BENCHMARKS.md.")
    args = ap.parse_args()
    bundles, pub = prepare(args.work, args.model)
    inputs = write_inputs(args.work, args.images)
    load_before = load_average()
    results = {
        (p, kind): measure(bundles[p], pub, inputs[kind], args.repeats)
        for p in ("int8", "fp32")
        for kind in ("png", "dicom")
    }
    body = render(results, bundles, python_baseline_mb(), load_before, load_average(), args)
    print(body)
    if args.write:
        replace_section("Appliance bundle", body)


def render(
    results: dict, bundles: dict, baseline: tuple[float, float], before: str, after: str, args
) -> str:
    rows = []
    for (precision, kind), r in results.items():
        rows.append(
            [
                f"ONNX Runtime {precision.upper()}",
                kind,
                f"{bundles[precision].stat().st_size / 1024:.0f}",
                f"{r['startup_s']:.2f}",
                f"{r['per_image_ms']:.2f}",
                f"{r['latency_ms']:.2f}",
                f"{r['inference_ms']:.3f}",
                f"{r['peak_mb_1']:.0f}",
                f"{r['peak_mb_n']:.0f}",
            ]
        )
    i8, f32 = results[("int8", "png")], results[("fp32", "png")]
    header = [
        "bundle",
        "input",
        "bundle KB",
        "1-image call s",
        "per extra image ms",
        "predict latency_ms (median)",
        "inference ms",
        "peak RSS MB (1 image)",
        f"peak RSS MB ({args.images} images)",
    ]
    return "\n".join(
        [
            "Command (each row: a fresh process per call, fastest of "
            f"{args.repeats} calls; {args.images} real chest X-ray test images, 28x28):",
            "```",
            f"python benchmarks/predict_cost.py --images {args.images} --repeats {args.repeats} --write",
            "# each measured call is exactly:",
            "edgemed predict BUNDLE IMAGE... --pubkey KEYDIR/edgemed.pub --threads 1",
            "# same peak memory with: /usr/bin/time -v edgemed predict ... (Maximum resident set size)",
            "```",
            "",
            table(header, rows),
            "",
            "- Model: the default compact CNN (`edgemed train --data ../shared/datasets/pneumoniamnist_subset.npz`),",
            "  exported to ONNX Runtime FP32 and INT8 (QDQ, calibrated on the train split), benched with",
            "  `edgemed bench`, bundled with `--modality CR --modality DX`; DICOM inputs are 16-bit, rescaled.",
            f"- INT8 / FP32 (PNG): peak RSS {i8['peak_mb_n'] / f32['peak_mb_n']:.2f}x, "
            f"1-image call {i8['startup_s'] / f32['startup_s']:.2f}x, "
            f"per extra image {i8['per_image_ms'] / f32['per_image_ms']:.2f}x.",
            f"- For scale, a fresh Python importing numpy peaks at {baseline[0]:.0f} MB, numpy + onnxruntime "
            f"at {baseline[1]:.0f} MB; the rest is pydicom, Pillow, cryptography and the session.",
            "- At 28x28 inference is ~0.3 ms at either precision, so INT8 vs FP32 time differences here are",
            "  within the noise of the loaded machine; INT8 halves the bundle size.",
            "- The 1-image call is dominated by interpreter start, imports (onnxruntime, pydicom, PIL,",
            "  cryptography), signature and hash verification and the ONNX Runtime session; a 28x28 model",
            "  runs in well under a millisecond, so the per-image cost is mostly decoding the file.",
            f"- Taken under load from other work on the machine: {before} before, {after} after;",
            "  times are inflated accordingly, memory is not.",
        ]
    )


if __name__ == "__main__":
    main()
