"""The training recipe: augmentation, class weights, warm-up + cosine schedule, `--init` transfer
learning and `--freeze-epochs`, on the real chest X-ray subset and brain MRI set."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CXR, assert_user_error, run_cli


def _model(channels: int = 1, outputs: int = 1, width: float = 0.25):
    from edgemed.models import ModelSpec, build_model

    return build_model(ModelSpec("cnn", {"width": width}), channels, outputs)


# --- augmentation ---------------------------------------------------------------------------


def test_augmentation_is_per_image_identical_over_channels_and_off_at_none():
    import torch

    from edgemed.pipeline.augment import augment_batch, augment_settings

    grey = torch.rand(8, 1, 20, 20)
    rgb = grey.repeat(1, 3, 1, 1)
    zeros, ones = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    for level in ("light", "strong"):
        s = augment_settings(level, hflip=True)
        a = augment_batch(grey, s, zeros[:, :1], ones[:, :1], torch.Generator().manual_seed(3))
        b = augment_batch(rgb, s, zeros, ones, torch.Generator().manual_seed(3))
        assert torch.allclose(b[:, 0], b[:, 2]) and torch.allclose(a[:, 0], b[:, 1], atol=1e-6)
        assert not torch.allclose(a, grey)  # it changed the images...
        assert a.shape == grey.shape and float(a.min()) >= 0 and float(a.max()) <= 1
        # ...with a different draw per image: image 0 and 1 (both the same input) differ
        same = torch.rand(1, 1, 20, 20).repeat(2, 1, 1, 1)
        c = augment_batch(same, s, zeros[:, :1], ones[:, :1], torch.Generator().manual_seed(0))
        assert not torch.allclose(c[0], c[1])
    none = augment_settings("none")
    assert augment_batch(grey, none, 0.0, 1.0, torch.Generator()) is grey


def test_hflip_is_off_by_default():
    from edgemed.pipeline.augment import augment_settings
    from edgemed.pipeline.training import TrainConfig

    assert TrainConfig(data="x").augment.hflip is False
    assert augment_settings("strong").hflip is False


@pytest.mark.parametrize(
    "args, flag",
    [
        (("--rotate", "-5"), "--rotate"),
        (("--scale", "0"), "--scale"),
        (("--scale", "-1"), "--scale"),
        (("--translate", "0.8"), "--translate"),
        (("--intensity", "nan"), "--intensity"),
        (("--warmup-epochs", "-1"), "--warmup-epochs"),
        (("--weight-decay", "2"), "--weight-decay"),
        (("--freeze-epochs", "2"), "--init"),  # freezing a random backbone makes no sense
    ],
)
def test_out_of_range_recipe_settings_are_refused_naming_the_flag(tmp_path, args, flag):
    out = tmp_path / "m"
    assert_user_error(run_cli("train", "--data", CXR, "--out", out, *args), flag)
    assert not out.exists()


# --- imbalance and schedule -----------------------------------------------------------------


def test_class_weights_from_the_training_split():
    from edgemed.pipeline.loss import class_weights

    assert class_weights("binary", np.array([[0], [0], [0], [1]]), 1, "auto") == (3.0,)
    multi = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])
    # the second label has no positive: nothing to balance, weight 1
    assert class_weights("multilabel", multi, 3, "auto") == (3.0, 1.0, 0.3333)
    assert class_weights("multiclass", np.array([0, 0, 0, 1]), 3, "auto") == (0.4444, 1.3333, 1.0)
    assert class_weights("binary", np.array([0, 1]), 1, "none") is None


def test_warmup_then_cosine_decay():
    from edgemed.pipeline.loop import warmup_cosine

    lrs = [warmup_cosine(i, 10, 100) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] < 0.001 and warmup_cosine(55, 10, 100) == pytest.approx(0.5)


def test_class_weights_are_capped_both_ways_and_the_card_records_both():
    from edgemed.errors import InputError
    from edgemed.pipeline.loss import WEIGHT_CAP, class_weights, raw_class_weights

    y = np.zeros((181, 3))
    y[:1, 0] = 1  # 1 positive in 181: pos_weight 180 (NIH 1000 has such labels)
    y[:90, 1] = 1
    y[:171, 2] = 1  # mostly positive: 10 / 171
    assert raw_class_weights("multilabel", y, 3, "auto") == (180.0, 1.0111, 0.0585)
    assert class_weights("multilabel", y, 3, "auto") == (WEIGHT_CAP, 1.0111, 1 / WEIGHT_CAP)
    assert class_weights("multilabel", y, 3, "auto", cap=None)[0] == 180.0
    assert class_weights("multilabel", y, 3, "auto", cap=1.0) == (1.0, 1.0, 1.0)
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--class-weight-cap"):
            class_weights("multilabel", y, 3, "auto", cap=bad)


def test_the_card_records_every_recipe_default(cxr_model):
    import json

    from edgemed.pipeline.loss import WEIGHT_CAP

    card = json.loads((cxr_model / "card.json").read_text())
    rec = card["training"]["recipe"]
    assert rec["class_weights"]["cap"] == WEIGHT_CAP
    assert rec["class_weights"]["values"] == [1.0] == rec["class_weights"]["uncapped"]  # balanced
    assert (
        rec["early_stopping"]["patience"] == 4 and rec["early_stopping"]["counted_from_epoch"] == 3
    )
    for key in (
        "epochs",
        "lr",
        "batch_size",
        "warmup_epochs",
        "weight_decay",
        "augment",
        "schedule",
    ):
        assert rec[key] is not None, key
    from edgemed.pipeline.training import TrainConfig

    assert TrainConfig(data="x").patience is None  # the default: the schedule runs to its end


def _small(ds, n: int):
    """`ds` with only the first n training images (a fast loop test)."""
    from dataclasses import replace

    t = ds.split("train")
    small = replace(t, images=t.images[:n], labels=t.labels[:n], ids=t.ids[:n], hashes=t.hashes[:n])
    return replace(ds, splits={**ds.splits, "train": small})


def test_early_stopping_counts_only_past_the_middle_of_the_cosine_decay():
    from edgemed.data import load_dataset
    from edgemed.pipeline.loop import Recipe, fit, patience_start
    from edgemed.pipeline.loss import task_loss
    from edgemed.pipeline.training import contract_for

    assert patience_start(15, 1.0) == 8 and patience_start(10, 1.0) == 6
    assert patience_start(4, 1.0, freeze_epochs=3) == 4  # never during head-only epochs
    ds = _small(load_dataset(str(CXR), None, 1, 0, False), 128)
    contract, loss = contract_for(ds), task_loss("binary")
    flat = lambda m: 0.5  # noqa: E731 -- a plateau from the first epoch on
    runs = {}
    for patience in (1, None):
        r = Recipe(epochs=6, lr=1e-3, batch_size=64, patience=patience)
        out = fit(_model(), ds, contract, r, lambda z, y, _x: loss(z, y), flat)
        runs[patience] = [h["epoch"] for h in out.history]
    # patience 1 from epoch 1 would stop at 2; stale epochs count from epoch 4 (LR below half)
    assert runs[1] == [1, 2, 3, 4] and runs[None] == [1, 2, 3, 4, 5, 6]


# --- --init ---------------------------------------------------------------------------------


def test_init_report_adapts_first_conv_and_reinitialises_another_head(tmp_path):
    import torch

    from edgemed.pipeline.init_weights import apply_init, head_names, read_init_weights

    src = _model(channels=3, outputs=14)
    path = tmp_path / "imagenet-like.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    state, sha = read_init_weights(path)
    target = _model(channels=1, outputs=1)
    report = apply_init(target, state, sha, path)
    first = next(k for k, v in target.state_dict().items() if v.ndim == 4)
    assert report.adapted == (first,)
    assert set(report.reinitialised) == head_names(target) and report.reinitialised
    assert len(report.loaded) == len(target.state_dict()) - 1 - len(report.reinitialised)
    folded = src.state_dict()[first].sum(dim=1, keepdim=True)
    assert torch.equal(target.state_dict()[first], folded)  # a grey image: same response


def test_init_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    from edgemed.pipeline.init_weights import apply_init, read_init_weights

    src = _model()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    report = apply_init(_model(), *read_init_weights(path), path)
    assert len(report.loaded) == len(src.state_dict()) and not report.ignored


def _bad_init_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    import torch

    files = {}
    nan = _model().state_dict()
    next(v for v in nan.values() if v.is_floating_point()).view(-1)[0] = math.nan
    files["nan"] = (tmp / "nan.pt", "NaN")
    torch.save(nan, files["nan"][0])
    files["module"] = (tmp / "module.pt", "weights-only")
    torch.save(_model(), files["module"][0])  # a pickled module, not a state dict
    files["other"] = (tmp / "other.pt", "no tensor matches")
    torch.save({"encoder.layer.0.weight": torch.zeros(3, 3)}, files["other"][0])
    files["width"] = (tmp / "width.pt", "no tensor matches")
    torch.save(_model(width=0.25).state_dict(), files["width"][0])  # `cnn` at width 1: other shapes
    files["junk"] = (tmp / "junk.pt", "corrupt")
    files["junk"][0].write_bytes(b"not a checkpoint at all")
    return files


def test_bad_init_files_are_refused_with_one_line_and_nothing_written(tmp_path):
    for name, (path, needle) in _bad_init_files(tmp_path).items():
        out = tmp_path / f"out-{name}"
        res = run_cli("train", "--data", CXR, "--epochs", "1", "--init", path, "--out", out)
        assert_user_error(res, "--init", needle)
        assert not out.exists(), name


def test_init_over_the_size_limit_is_refused(tmp_path):
    import torch

    from edgemed.errors import InputError
    from edgemed.pipeline.init_weights import read_init_weights

    path = tmp_path / "w.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(InputError, match="over the 0 MB limit"):
        read_init_weights(path, limit=1000)


def test_freeze_epochs_train_only_the_head():
    from edgemed.data import load_dataset
    from edgemed.pipeline.init_weights import head_names
    from edgemed.pipeline.loop import Recipe, fit
    from edgemed.pipeline.loss import task_loss
    from edgemed.pipeline.training import contract_for

    ds = load_dataset(str(CXR), None, 1, 0, False)
    contract, module = contract_for(ds), _model()
    before = {k: v.clone() for k, v in module.named_parameters()}
    head, loss = head_names(module), task_loss("binary")
    r = Recipe(epochs=1, lr=1e-2, freeze_epochs=1)
    out = fit(module, ds, contract, r, lambda z, y, _x: loss(z, y), lambda m: 0.5, head=head)
    module.load_state_dict(out.best_state)
    for name, p in module.named_parameters():
        assert p.requires_grad  # unfrozen again afterwards
        assert torch_equal(p, before[name]) == (name not in head), name


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.detach(), b.detach()))


def test_transfer_chest_xray_to_brain_mri(cxr_model, brain_dir, tmp_path):
    """Pretrain on the chest X-ray subset (session model), fine-tune on brain MRI: every tensor
    loads (same family, same head size), the card records the init and its hash, the first epoch
    starts from the pretrained backbone (head-only), and the result is a working classifier."""
    import json

    out = tmp_path / "brain-ft"
    res = run_cli(
        "train",
        "--data", brain_dir,
        "--model-arg", "width=0.5",
        "--image-size", "48",
        "--epochs", "3",
        "--batch-size", "32",
        "--freeze-epochs", "1",
        "--init", cxr_model / "model.pt",
        "--out", out,
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "0 adapted" in res.out and "0 re-initialised" in res.out
    card = json.loads((out / "card.json").read_text())
    init = card["training"]["recipe"]["init"]
    assert init["loaded"] > 10 and init["ignored_count"] == 0
    assert card["provenance"]["inputs"]["init"] == init["sha256"]
    assert card["config"]["freeze_epochs"] == 1 and card["config"]["augment"]["level"] == "light"
    assert card["test"]["auc"] > 0.6


# --- MedMNIST layout ------------------------------------------------------------------------


def test_a_medmnist_layout_rgb_multiclass_npz_trains_in_colour(tmp_path):
    """The format only (synthetic pixels in the MedMNIST v2 npz layout: RGB 28x28x3, labels
    (N, 1), 4 classes as in BloodMNIST-like sets); accuracy claims come from real data only."""
    import json

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 96), ("val", 48), ("test", 48)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        images[np.arange(n), :, :, labels % 3] = 0  # a colour cue per class (keep colour)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(n, 1)
    path = tmp_path / "colourmnist.npz"
    np.savez(path, **arrays)
    out = tmp_path / "m"
    res = run_cli(
        "train", "--data", path, "--model-arg", "width=0.25", "--epochs", "2", "--out", out
    )
    assert res.code == 0, res.err
    card = json.loads((out / "card.json").read_text())
    assert card["contract"]["channels"] == 3 and card["contract"]["task"] == "multiclass"
    assert len(card["test"]["per_label"]) == 4 and card["config"]["channels"] == 3
    assert len(card["training"]["recipe"]["class_weights"]["values"]) == 4
