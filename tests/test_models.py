"""Zoo families: forward pass, parameter counts, MACs, factory specs."""

from __future__ import annotations

import pytest
import torch

from edgemed.errors import InputError
from edgemed.models import ZOO, ModelSpec, build_model
from edgemed.models.complexity import count_params, measure_complexity


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_family_forward_and_counts(name):
    kwargs = {"width": 0.5} if name != "resnet18" else {"width": 0.25}
    m = build_model(ModelSpec(name, kwargs), in_channels=1, num_outputs=1).eval()
    with torch.no_grad():
        y = m(torch.randn(3, 1, 28, 28))
    assert y.shape == (3, 1)
    c = measure_complexity(m, (1, 1, 28, 28))
    assert c.params == count_params(m) > 0 and c.macs > 0


def test_hand_computed_parameter_count():
    # stem 1->4 (36 + BN 8), 4->4 (144 + 8), 4->8 (288 + 16), 8->16 (1152 + 32), head 16->1 (17)
    m = build_model(ModelSpec("cnn", {"width": 0.25, "depth": 0.5}), 1, 1)
    assert count_params(m) == 44 + 152 + 304 + 1184 + 17


def test_resnet18_is_the_11m_baseline():
    m = build_model(ModelSpec("resnet18"), 3, 1)
    assert 11.0e6 < count_params(m) < 11.3e6


def test_conv_kinds_reduce_parameters_and_macs():
    def cost(name, **kw):
        m = build_model(ModelSpec(name, {"width": 2.0, **kw}), 1, 1)
        return measure_complexity(m, (1, 1, 28, 28))

    std = cost("cnn")
    for name in ("cnn-grouped", "cnn-dwsep", "cnn-lowrank"):
        c = cost(name)
        assert c.params < std.params and c.macs < std.macs, name
    assert cost("cnn", depth=2.0).params > std.params


def test_width_scales_parameters():
    small, big = (
        count_params(build_model(ModelSpec("cnn", {"width": w}), 1, 1)) for w in (0.5, 1.0)
    )
    assert 3 < big / small < 4.5


def test_factory_spec_and_errors():
    factory = "edgemed.models.zoo:CompactCNN"
    m = build_model(ModelSpec(factory, {"in_channels": 3, "num_outputs": 2}), 3, 2, factory)
    assert m(torch.zeros(1, 3, 28, 28)).shape == (1, 2)
    with pytest.raises(InputError, match="unknown model"):
        build_model(ModelSpec("vgg-huge"), 1, 1)
    with pytest.raises(InputError, match="cannot import"):
        build_model(ModelSpec("no_such_pkg.nets:Net"), 1, 1, "no_such_pkg.nets:Net")
    with pytest.raises(InputError, match="has no factory"):
        build_model(ModelSpec("edgemed.models.zoo:Nope"), 1, 1, "edgemed.models.zoo:Nope")
    with pytest.raises(InputError, match="not a zoo architecture"):
        build_model(ModelSpec(factory, {"in_channels": 3, "num_outputs": 2}), 3, 2)
    with pytest.raises(InputError, match="does not accept"):
        build_model(ModelSpec("cnn", {"colour": 1}), 1, 1)
