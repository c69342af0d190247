"""Type-check edgemed's TensorRT code against the real TensorRT Python API (stub files) with mypy.

TensorRT cannot be installed where edgemed is built (its PyPI packages are placeholders that
download from NVIDIA's own index), and `pip install tensorrt-stubs` fails for the same reason: the
stubs package requires `tensorrt==10.13.0.35`. So this script downloads the stubs wheel alone
(`pip download --no-deps`), unpacks its .pyi files into a cache directory (nothing is installed),
repairs the two syntax errors of the published stubs (4 parameters named `in`, a keyword, and a
parameter without a default after defaulted ones; the file does not parse otherwise), and points mypy at them with MYPYPATH. A negative control (an attribute TensorRT does
not have) must fail, proving the stubs are in use.

    python3 scripts/typecheck_tensorrt.py        # needs mypy (the dev extra) and PyPI access
"""

from __future__ import annotations

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
    "edgemed/backends/tensorrt.py",
    "edgemed/backends/trt_device.py",
    "edgemed/backends/trt_engine.py",
    "edgemed/backends/trt_qdq.py",
    "edgemed/engine_build.py",
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
[mypy-polygraphy.*,pynvml.*,onnxruntime.*,tensorrt_libs.*]
ignore_missing_imports = True
"""
NEGATIVE = "import tensorrt as trt\n\nflag = trt.BuilderFlag.NOT_A_REAL_FLAG\n"


def stub_dir() -> Path:
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


def main() -> int:
    stubs = stub_dir()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.ini"
        config.write_text(CONFIG)
        negative = Path(tmp) / "negative_control.py"
        negative.write_text(NEGATIVE)
        control = mypy([str(negative)], stubs, config)
        if "NOT_A_REAL_FLAG" not in control.stdout:
            print("negative control passed: the TensorRT stubs are not in use\n" + control.stdout)
            return 2
        result = mypy(FILES, stubs, config)
    print(f"{STUBS}: mypy on {len(FILES)} files")
    print(result.stdout.strip() or result.stderr.strip())
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
