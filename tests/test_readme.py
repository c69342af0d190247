"""The README runs as written: its bash and Python blocks, in order, in a scratch directory.

A block is skipped only when the line above its fence says so:
`<!-- readme-test: skip (why) -->`, `<!-- readme-test: needs brain_mri -->` (runs when the dataset
is found; the placeholder `/path/to/datasets` becomes its folder) or `<!-- readme-test: needs gpu -->`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgemed.data.locate import find_dataset, missing_reason
from tests.conftest import REPO

MARK = re.compile(r"<!--\s*readme-test:\s*(skip|needs)\s*(.*?)\s*-->")
PLACEHOLDER = "/path/to/datasets"


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    code: str
    mark: tuple[str, str] | None


def readme_blocks(text: str) -> list[Block]:
    """Every ```bash / ```python block with the readme-test mark on the line above it, if any."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        fence = re.fullmatch(r"```(bash|python)\s*", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = MARK.search(lines[i - 1]) if i else None
        mark = (above.group(1), above.group(2)) if above else None
        blocks.append(Block(i + 1, fence.group(1), "\n".join(lines[i + 1 : end]), mark))
        i = end + 1
    return blocks


BLOCKS = readme_blocks((REPO / "README.md").read_text())
STATE = {"failed": None}


def test_readme_has_the_sections_the_test_runs():
    runnable = [b for b in BLOCKS if b.mark is None]
    text = "\n".join(b.code for b in runnable)
    for needle in ("edgemed demo", "edgemed train", "edgemed bundle", "edgemed predict",
                   "edgemed compress", "edgemed study", "--target jetson-orin-nano"):  # fmt: skip
        assert needle in text, needle
    assert any(b.mark == ("needs", "gpu") for b in BLOCKS)
    assert any(b.mark == ("needs", "brain_mri") for b in BLOCKS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch 'repository root': the README's relative paths (calibration/, targets/) resolve."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("calibration", "targets", "scripts"):
        (work / name).symlink_to(REPO / name)
    return work


def _gpu_reason() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "needs an NVIDIA GPU (no nvidia-smi here)"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "needs TensorRT (not installed here)"
    return None


def _prepare(block: Block) -> str:
    if block.mark is None:
        return block.code
    kind, what = block.mark
    if kind == "skip":
        pytest.skip(f"README line {block.line}: {what}")
    if what == "gpu":
        reason = _gpu_reason()
        if reason:
            pytest.skip(f"README line {block.line}: {reason}")
        return block.code
    path = find_dataset(what)
    if path is None:
        pytest.skip(f"README line {block.line}: {missing_reason(what)}")
    return block.code.replace(PLACEHOLDER, str(path.parent))


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.lang}" for b in BLOCKS])
def test_readme_block_runs_as_written(block, workdir):
    if STATE["failed"]:
        pytest.skip(f"an earlier README block failed ({STATE['failed']})")
    code = _prepare(block)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)  # the `edgemed` under test, also for `python` blocks
    argv = ["bash", "-euo", "pipefail", "-c", code] if block.lang == "bash" else [sys.executable]
    res = subprocess.run(
        argv,
        input=code if block.lang == "python" else None,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if res.returncode != 0:
        STATE["failed"] = f"line {block.line}"
    assert res.returncode == 0, (
        f"README line {block.line}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
