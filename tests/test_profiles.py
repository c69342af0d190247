"""Target profiles (targets/*.toml): every shipped profile loads; bad targets are refused cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed.errors import InputError
from edgemed.profiles import RUNTIMES, Profile, known_profiles, load_profile, resolve_target
from tests.conftest import REPO, assert_user_error, run_cli, tree_snapshot

DEVICE_PROFILES = (
    "jetson-orin-nano",
    "jetson-agx-orin",
    "desktop-rtx",
    "x86-cpu",
    "x86-cpu-openvino",
    "arm64-cpu-tflite",
)


def test_all_shipped_profiles_load():
    names = known_profiles()
    assert len(names) >= 6
    assert set(RUNTIMES) | set(DEVICE_PROFILES) <= set(names)
    for name in names:
        p = resolve_target(name)
        assert isinstance(p, Profile) and p.runtime in RUNTIMES and p.sha256, name
        assert p.path == str((REPO / "targets" / f"{name}.toml").resolve())


def test_device_profiles_say_what_the_hardware_has():
    nano, agx = resolve_target("jetson-orin-nano"), resolve_target("jetson-agx-orin")
    assert nano.device == agx.device == "jetson" and nano.gpu_arch == agx.gpu_arch == "sm_87"
    assert nano.dla_core is None and agx.dla_core == 0  # Orin Nano has no DLA; AGX Orin has two
    assert "fp32" not in agx.precisions  # DLA runs FP16/INT8 only
    assert nano.jetpack and nano.workspace_mb and nano.timing_cache
    assert resolve_target("desktop-rtx").device == "gpu"
    assert resolve_target("x86-cpu").threads == 4


def test_tensorrt_profiles_name_their_generation():
    """Jetson: TensorRT 10.x from JetPack 6.1; desktop-rtx and the generic target: 10 or 11."""
    for name in ("jetson-orin-nano", "jetson-agx-orin"):
        p = resolve_target(name)
        assert (p.jetpack, p.tensorrt_major) == ("6.1", (10,)), name
    assert resolve_target("desktop-rtx").tensorrt_major == (10, 11)
    assert resolve_target("tensorrt").tensorrt_major == (10, 11)
    assert Profile(name="t", runtime="tensorrt", device="gpu").tensorrt_major == (10, 11)
    assert Profile(name="j", runtime="tensorrt", device="jetson").tensorrt_major == (10,)
    assert resolve_target("onnx").tensorrt_major == ()
    d = resolve_target("desktop-rtx").to_dict()  # as recorded in a manifest, and read back
    assert d["tensorrt_major"] == [10, 11] and Profile(**d).tensorrt_major == (10, 11)


def test_runtime_name_and_path_resolve(tmp_path):
    assert resolve_target("tensorrt").runtime == "tensorrt"
    f = tmp_path / "box.toml"
    f.write_text('runtime = "onnx"\nthreads = 2\n')
    p = resolve_target(str(f))
    assert (p.name, p.runtime, p.threads) == ("box", "onnx", 2)


def _profile(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    "text, needle",
    [
        ('runtime = "onnx"\ngpu_memory = 4\n', "unknown keys ['gpu_memory']"),
        ('runtime = "coreml"\n', "runtime must be one of"),
        ('runtime = "onnx"\ndla_core = 0\n', "dla_core applies only to the tensorrt runtime"),
        ('runtime = "tensorrt"\ndevice = "gpu"\ndla_core = 0\n', "needs device = 'jetson'"),
        ('runtime = "tensorrt"\ndevice = "cpu"\n', "needs device 'gpu' or 'jetson'"),
        ('runtime = "onnx"\nprecisions = ["int4"]\n', "precisions must be"),
        ('runtime = "tensorrt"\ndevice = "gpu"\nworkspace_mb = 0\n', "workspace_mb must be"),
        (
            'runtime = "onnx"\ntensorrt_major = [10]\n',
            "tensorrt_major applies only to the tensorrt runtime",
        ),
        ('runtime = "tensorrt"\ndevice = "gpu"\ntensorrt_major = [9]\n', "distinct values from"),
        ('runtime = "tensorrt"\ndevice = "gpu"\ntensorrt_major = 11\n', "must be a list"),
        (
            'runtime = "tensorrt"\ndevice = "jetson"\njetpack = "6.1"\ntensorrt_major = [11]\n',
            "TensorRT 11 does not support JetPack",
        ),
        ('runtime = "tensorrt"\ndevice = "jetson"\njetpack = "5.1"\n', "jetpack '5.1' is not"),
        ("runtime = [", "not valid TOML"),
    ],
)
def test_bad_profiles_are_refused(tmp_path, text, needle):
    with pytest.raises(InputError, match=None) as exc:
        load_profile(_profile(tmp_path, text))
    assert needle in str(exc.value)


def test_unknown_target_lists_the_known_ones(cxr_model, tmp_path):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", "jetson-xavier", "--out", tmp_path / "a"
    )
    assert_user_error(res, "unknown target 'jetson-xavier'", "jetson-orin-nano", "desktop-rtx")
    assert res.code == 2 and tree_snapshot(tmp_path) == before


def test_profile_with_unknown_key_is_refused_by_export(cxr_model, tmp_path):
    f = _profile(tmp_path, 'runtime = "tensorrt"\ndevice = "jetson"\nwork_space = 64\n')
    before = tree_snapshot(tmp_path)
    res = run_cli("export", "--model", cxr_model, "--target", f, "--out", tmp_path / "a")
    assert_user_error(res, "unknown keys ['work_space']", "workspace_mb")
    assert res.code == 2 and tree_snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "target, precision",
    [("jetson-agx-orin", "fp32"), ("x86-cpu", "fp16"), ("arm64-cpu-tflite", "fp16")],
)
def test_precision_the_profile_forbids_is_refused(cxr_model, tmp_path, target, precision):
    before = tree_snapshot(tmp_path)
    res = run_cli(
        "export", "--model", cxr_model, "--target", target, "--precision", precision,
        "--out", tmp_path / "a",
    )  # fmt: skip
    assert_user_error(res, f"target {target} does not allow precision '{precision}'", "it allows")
    assert res.code == 2 and tree_snapshot(tmp_path) == before
