from __future__ import annotations

import numpy as np
import pytest

from edgemed.contract import Contract
from edgemed.errors import InputError


def _c(**kw):
    base = dict(
        input_size=(28, 28),
        channels=1,
        class_names=("normal", "pneumonia"),
        mean=(0.5,),
        std=(0.25,),
    )
    return Contract(**{**base, **kw})


def test_round_trip_json():
    c = _c(threshold=0.37)
    assert Contract.from_json(c.to_json()) == c
    d = c.to_dict()
    for key in (
        "input_size",
        "channels",
        "layout",
        "scale",
        "mean",
        "std",
        "class_names",
        "task",
        "threshold",
    ):
        assert key in d


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(channels=2), "channels"),
        (dict(task="segmentation"), "task"),
        (dict(mean=(0.1, 0.2)), "mean"),
        (dict(threshold=1.5), "threshold"),
        (dict(layout="CHW"), "layout"),
        (dict(class_names=("a",)), "class_names"),
    ],
)
def test_invalid_contract_is_refused(kw, needle):
    with pytest.raises(InputError, match=needle):
        _c(**kw)


def test_unknown_keys_refused():
    d = _c().to_dict() | {"colour": "blue"}
    with pytest.raises(InputError, match="unknown keys"):
        Contract.from_dict(d)


def test_normalize_and_layouts():
    img = np.full((2, 28, 28, 1), 255, np.uint8)
    x = _c().normalize(img)
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32
    assert np.allclose(x, (1.0 - 0.5) / 0.25)
    assert _c(layout="NHWC").normalize(img).shape == (2, 28, 28, 1)
    with pytest.raises(InputError, match="shape"):
        _c().normalize(np.zeros((1, 32, 32, 1), np.uint8))


def test_probabilities_and_decisions():
    c = _c(threshold=0.6)
    logits = np.array([[0.0], [1.0], [-3.0]])
    assert np.allclose(c.scores(logits), 1 / (1 + np.exp(-logits[:, 0])))
    assert c.decisions(logits).tolist() == [False, True, False]
    mc = Contract(
        input_size=(8, 8),
        channels=1,
        class_names=("a", "b", "c"),
        task="multiclass",
        mean=(0,),
        std=(1,),
    )
    p = mc.probabilities(np.array([[1.0, 2.0, 3.0]]))
    assert np.isclose(p.sum(), 1) and mc.decisions(np.array([[1.0, 2.0, 3.0]])).tolist() == [2]
