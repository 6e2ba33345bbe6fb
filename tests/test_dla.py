"""Behaviour of the DLA-34 networks (``dla_34``, ``dlav0_34``) and of ImageNet backbone loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from centernet.models import build_model
from centernet.models.checkpoint import CheckpointError
from centernet.models.dla import SIZE_DIVISOR, bilinear_upsampler, load_dla_backbone_weights
from centernet.models.dlav0 import DLAPlainNet

HEADS = {"hm": 3, "wh": 2, "reg": 2}
ARCHS = ["dla_34", "dlav0_34"]
# Trees of depth 2 (levels 3 and 4) hold a projection that the original builds but never applies;
# timm's dla34 weights leave it out.
UNUSED_PROJECTION_PREFIXES = ("level3.project.", "level4.project.")


@pytest.fixture(scope="module", params=ARCHS)
def model(request) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(request.param, HEADS, head_conv=16).eval()


def _fake_imagenet_state(model: torch.nn.Module, timm_layout: bool) -> dict[str, torch.Tensor]:
    """A DLA-34 ImageNet state dict with the backbone's keys, fresh random values and a 1000-way ``fc``."""
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, value in model.base.state_dict().items():
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            continue  # the 2018 original file predates num_batches_tracked; fc is added below
        if timm_layout and key.startswith(UNUSED_PROJECTION_PREFIXES):
            continue
        state[key] = torch.randn(value.shape, generator=generator)
    state["fc.weight"] = torch.randn(1000, 512, 1, 1, generator=generator)
    state["fc.bias"] = torch.randn(1000, generator=generator)
    return state


@pytest.mark.parametrize("timm_layout", [False, True], ids=["original_file", "timm"])
def test_backbone_weights_load_from_original_and_timm_layouts(model, timm_layout, tmp_path: Path) -> None:
    """Every file tensor lands in ``model.base``; fc only where the backbone has one; nothing else changes.

    The timm-style file is also wrapped in ``{"state_dict": ...}`` with ``module.`` prefixes.
    """
    state = _fake_imagenet_state(model, timm_layout)
    path = tmp_path / "dla34.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}} if timm_layout else state, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    load_dla_backbone_weights(model, path)

    after = model.state_dict()
    has_fc = "base.fc.weight" in after
    assert has_fc == isinstance(model, DLAPlainNet), "only dlav0_34 owns an ImageNet classifier"
    for key, value in state.items():
        if key.startswith("fc.") and not has_fc:
            continue
        torch.testing.assert_close(after[f"base.{key}"], value, rtol=0, atol=0, msg=key)
    for key, value in after.items():
        in_file = key.startswith("base.") and key.removeprefix("base.") in state
        if not in_file and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=f"{key} must be untouched")
    model.load_state_dict(before)


def test_backbone_weights_reject_incomplete_or_foreign_files(tmp_path: Path) -> None:
    model = build_model("dla_34", HEADS, head_conv=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _fake_imagenet_state(model, timm_layout=False)

    incomplete = dict(state)
    del incomplete["level2.root.conv.weight"]
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(CheckpointError, match="level2.root.conv.weight"):
        load_dla_backbone_weights(model, tmp_path / "incomplete.pth")

    foreign = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)})
    torch.save(foreign, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="layer1.0.conv1.weight"):
        load_dla_backbone_weights(model, tmp_path / "foreign.pth")

    reshaped = dict(state, **{"base_layer.0.weight": torch.zeros(16, 3, 3, 3)})
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(CheckpointError, match="base_layer.0.weight"):
        load_dla_backbone_weights(model, tmp_path / "reshaped.pth")

    unchanged = model.state_dict()
    torch.testing.assert_close(unchanged, before, rtol=0, atol=0, msg="a rejected file changed the model")


def test_projections_of_deep_trees_do_not_affect_the_output(model) -> None:
    """Why timm's weights may omit them: perturbing them leaves every head unchanged."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        for name, param in model.base.named_parameters():
            if name.startswith(UNUSED_PROJECTION_PREFIXES):
                param.add_(1.0)
        actual = model(x)
    model.load_state_dict(saved)
    for head in HEADS:
        torch.testing.assert_close(actual[head], expected[head], rtol=0, atol=0)


@pytest.mark.parametrize("height, width", [(32, 64), (96, 32)])
def test_non_square_multiples_of_32_give_stride_4_maps_in_head_order(model, height: int, width: int) -> None:
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    assert list(out) == list(HEADS)
    for head, channels in HEADS.items():
        assert out[head].shape == (2, channels, height // 4, width // 4)
        assert torch.isfinite(out[head]).all()


@pytest.mark.parametrize("height, width", [(64, 80), (48, 64), (63, 64)])
def test_sizes_not_multiple_of_32_are_rejected_with_a_clear_error(model, height: int, width: int) -> None:
    assert model.size_divisor == SIZE_DIVISOR == 32
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, height, width))


def test_batch_elements_are_independent(model) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batched = model(x)
        single = model(x[1:])
    for head in HEADS:
        torch.testing.assert_close(batched[head][1:], single[head], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "factor, tent",
    [(2, [0.25, 0.75, 0.75, 0.25]), (4, [0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125])],
)
def test_bilinear_upsampler_weights_and_size(factor: int, tent: list[float]) -> None:
    profile = torch.tensor(tent)
    up = bilinear_upsampler(3, factor)
    assert up.groups == 3 and up.bias is None
    for channel in range(3):
        torch.testing.assert_close(up.weight[channel, 0], torch.outer(profile, profile), rtol=0, atol=0)
    x = torch.ones(1, 3, 5, 7)
    with torch.no_grad():
        y = up(x)
    assert y.shape == (1, 3, 5 * factor, 7 * factor)
    # A constant map stays constant away from the zero-padded border.
    interior = y[..., factor:-factor, factor:-factor]
    torch.testing.assert_close(interior, torch.ones_like(interior))


def test_dla_34_initialisation_follows_pose_dla_dcn() -> None:
    torch.manual_seed(0)
    net = build_model("dla_34", {"hm": 5, "hm_hp": 17, "wh": 2}, head_conv=32)
    assert net.hm[0].weight.shape == (32, 64, 3, 3)
    torch.testing.assert_close(net.hm[-1].bias, torch.full((5,), -2.19))
    torch.testing.assert_close(net.hm_hp[-1].bias, torch.full((17,), -2.19))
    # pose_dla_dcn zeroes regression-head biases but keeps PyTorch's default weights (not N(0, 0.001)).
    assert torch.count_nonzero(net.wh[0].bias) == 0 and torch.count_nonzero(net.wh[-1].bias) == 0
    assert float(net.wh[-1].weight.detach().std()) > 0.01
    # Deformable convs start as plain convs: zero offsets, modulation sigmoid(0) = 0.5.
    for name, param in net.named_parameters():
        if "conv_offset_mask" in name:
            assert torch.count_nonzero(param) == 0, name
    assert not hasattr(net.base, "fc")
    torch.testing.assert_close(net.ida_up.up_2.weight, bilinear_upsampler(64, 4).weight)


def test_dlav0_34_initialisation_follows_dlav0() -> None:
    torch.manual_seed(0)
    net = build_model("dlav0_34", {"hm": 5, "wh": 2}, head_conv=32)
    torch.testing.assert_close(net.hm[-1].bias, torch.full((5,), -2.19))
    assert abs(float(net.wh[-1].weight.detach().std()) - 0.001) < 2e-4
    assert torch.count_nonzero(net.wh[-1].bias) == 0
    # Backbone and neck convs are N(0, 2 / (k * k * out_channels)).
    root = net.base.level5.root.conv.weight  # 512 x 1280 x 1 x 1
    assert abs(float(root.detach().std()) - (2 / 512) ** 0.5) < 0.002
    node = net.dla_up.ida_2.node_1[0].weight  # 64 x 128 x 3 x 3
    assert abs(float(node.detach().std()) - (2 / (9 * 64)) ** 0.5) < 0.003
    assert net.base.fc.weight.shape == (1000, 512, 1, 1)
    torch.testing.assert_close(net.dla_up.ida_0.up_1.weight, bilinear_upsampler(256, 2).weight)


def test_default_head_conv_is_256() -> None:
    for arch in ARCHS:
        net = build_model(arch, {"hm": 1})
        assert net.hm[0].weight.shape == (256, 64, 3, 3), arch


@pytest.mark.parametrize("arch", ARCHS)
def test_training_step_reaches_every_used_parameter(arch: str) -> None:
    torch.manual_seed(0)
    net = build_model(arch, HEADS, head_conv=8).train()
    out = net(torch.randn(2, 3, 32, 32))
    sum(o.square().mean() for o in out.values()).backward()
    unused = {name for name, p in net.named_parameters() if p.grad is None}
    never_used = tuple(f"base.{prefix}" for prefix in UNUSED_PROJECTION_PREFIXES) + ("base.fc.",)
    expected_unused = {name for name, _ in net.named_parameters() if name.startswith(never_used)}
    assert unused == expected_unused
    assert expected_unused, "the original's unused projections must exist for checkpoint compatibility"
