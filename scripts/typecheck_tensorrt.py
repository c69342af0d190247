"""Type-check edgemed's TensorRT code against TensorRT 10.13's and TensorRT 11's Python API (mypy).

Both generations must pass: JetPack 6 ships TensorRT 10.x, desktop installs get 11.x.

TensorRT 10.13: TensorRT cannot be installed where edgemed is built (its PyPI packages are placeholders that
download from NVIDIA's own index), and `pip install tensorrt-stubs` fails for the same reason: the
stubs package requires `tensorrt==10.13.0.35`. So this script downloads the stubs wheel alone
(`pip download --no-deps`), unpacks its .pyi files into a cache directory (nothing is installed),
repairs the two syntax errors of the published stubs (4 parameters named `in`, a keyword, and a
parameter without a default after defaulted ones; the file does not parse otherwise), and points
mypy at them with MYPYPATH. A negative control (an attribute TensorRT does not have) must fail,
proving the stubs are in use.

TensorRT 11: no stubs release exists, so the stub committed under typings/tensorrt11/ (written from
NVIDIA's 11.4 API reference, without the APIs 11.x removed; see its README) is used; its negative
controls are the made-up attribute and `BuilderFlag.FP16`, which TensorRT 11 removed.

    python3 scripts/typecheck_tensorrt.py                  # both; 10.13 needs PyPI access
    python3 scripts/typecheck_tensorrt.py --generation 11  # the committed stub only (offline)

Exit status: 0 all passed, 1 type errors, 2 a negative control passed, 3 stubs not downloadable.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

STUBS = (
    "tensorrt-stubs==10.13.0.35.1"  # TensorRT 10.13; JetPack 6.1 ships 10.3 (same API used here)
)
REPO = Path(__file__).resolve().parents[1]
FILES = [
    "edgemed/backends/tensorrt/__init__.py",
    "edgemed/backends/tensorrt/device.py",
    "edgemed/backends/tensorrt/engine.py",
    "edgemed/backends/tensorrt/qdq.py",
    "edgemed/backends/tensorrt/precision.py",
    "edgemed/backends/fp16.py",
    "edgemed/pipeline/engine_build.py",
    "edgemed/harness/gpu_memory.py",
]
CONFIG = """[mypy]
python_version = 3.10
check_untyped_defs = True
warn_unused_ignores = True
follow_imports = silent
[mypy-torch.*,openvino.*,nncf.*]
follow_imports = skip
[mypy-tensorrt.*,tensorrt_bindings.*]
# The generated stubs shadow `bool` with TensorRT's DataType.BOOL and have other internal errors;
# they are still used to check edgemed's calls.
ignore_errors = True
[mypy-polygraphy.*,pynvml.*,onnxruntime.*,tensorrt_libs.*,onnxconverter_common.*]
ignore_missing_imports = True
"""
STUB_11 = REPO / "typings" / "tensorrt11"
NEGATIVE = {  # generation -> attributes that must be type errors against its stubs
    "10": ("NOT_A_REAL_FLAG",),
    "11": ("NOT_A_REAL_FLAG", "FP16"),  # 11.x removed the FP16 builder flag
}


def stub_dir_10() -> Path:
    root = Path(os.environ.get("EDGEMED_CACHE") or Path.home() / ".cache" / "edgemed")
    d = root / STUBS.replace("==", "-")
    if (d / "tensorrt" / "__init__.pyi").is_file():
        return d
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
            + [STUBS, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith(("tensorrt/", "tensorrt_bindings/")) and name.endswith(".pyi"):
                    z.extract(name, d)
    bindings = d / "tensorrt_bindings" / "tensorrt.pyi"
    text = bindings.read_text()
    # The published stubs do not parse: 4 plugin methods name a parameter `in` (a keyword), and
    # add_scale_nd has `channel_axis` without a default after defaulted parameters.
    text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)
    text = text.replace(
        "power: Weights = None, channel_axis: int)",
        "power: Weights = None, channel_axis: int = ...)",
    )
    ast.parse(text)  # fail loudly if a newer stubs release breaks differently
    bindings.write_text(text)
    return d


def mypy(paths: list[str], stubs: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MYPYPATH": str(stubs)}
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-incremental", *paths]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


def check(generation: str) -> int:
    """mypy on FILES against one generation's stubs, after its negative controls fail as they must."""
    if generation == "10":
        try:
            stubs, label = stub_dir_10(), STUBS
        except (subprocess.CalledProcessError, StopIteration) as exc:
            print(f"{STUBS}: could not download the stubs ({type(exc).__name__}); no PyPI here?")
            return 3
    else:
        stubs, label = STUB_11, f"TensorRT 11 stub ({STUB_11.relative_to(REPO)})"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.ini"
        config.write_text(CONFIG)
        for attr in NEGATIVE[generation]:
            negative = Path(tmp) / f"negative_{attr.lower()}.py"
            negative.write_text(f"import tensorrt as trt\n\nflag = trt.BuilderFlag.{attr}\n")
            control = mypy([str(negative)], stubs, config)
            if f'"{attr}"' not in control.stdout:
                print(f"{label}: negative control trt.BuilderFlag.{attr} passed: stubs not in use")
                print(control.stdout)
                return 2
        result = mypy(FILES, stubs, config)
    print(f"{label}: mypy on {len(FILES)} files")
    print(result.stdout.strip() or result.stderr.strip())
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generation", choices=("10", "11", "all"), default="all")
    args = ap.parse_args(argv)
    gens = ("10", "11") if args.generation == "all" else (args.generation,)
    return max(check(g) for g in gens)


if __name__ == "__main__":
    sys.exit(main())
