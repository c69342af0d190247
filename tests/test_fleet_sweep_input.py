"""`fleet status` against a dead head ends in a stated time with one line; `sweep` refuses a bad
plan before it creates --out (non-integer epochs are refused, never rounded)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import CXR, assert_user_error, run_cli
from tests.serve_support import free_port


def test_fleet_status_against_a_dead_address_is_one_line_within_the_timeout():
    from edgemed.cli.fleet import CONNECT_TIMEOUT_S

    t0 = time.monotonic()
    res = run_cli("fleet", "status", "--address", f"127.0.0.1:{free_port()}")
    assert time.monotonic() - t0 < CONNECT_TIMEOUT_S + 5
    assert_user_error(res, "no ray head answers", "within")
    assert_user_error(run_cli("fleet", "status", "--address", "nohost"), "HOST:PORT")


PLAN = 'data = "{data}"\ntargets = ["onnx"]\nprecisions = ["fp32"]\n{extra}\n'


@pytest.mark.parametrize(
    ("extra", "data", "needle"),
    [
        ("epochs = 2.5", CXR, "whole number"),
        ('epochs = "3"', CXR, "whole number"),
        ("epochs = 0", CXR, ">= 1"),
        ("patience = true", CXR, "whole number"),
        ("bench_seconds = 0", CXR, "bench_seconds"),
        ("", "/nonexistent/data.npz", "does not exist"),
    ],
)
def test_sweep_refuses_a_bad_plan_before_creating_out(tmp_path, extra, data, needle):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(data=data, extra=extra))
    out = tmp_path / "out"
    assert_user_error(run_cli("sweep", plan, "--out", out), needle)
    assert not out.exists()
