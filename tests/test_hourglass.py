"""Behaviour of Hourglass-104: per-stack outputs at stride 4, intermediate supervision, init."""
from __future__ import annotations

import pytest
import torch

from centernet.models import build_model
from centernet.models.heads import HEATMAP_PRIOR_BIAS
from centernet.models.hourglass import HourglassNet

HEADS = {"hm": 3, "wh": 2, "reg": 2}


@pytest.fixture(scope="module")
def model() -> HourglassNet:
    torch.manual_seed(0)
    return build_model("hourglass", HEADS)


def test_registered_and_ignores_head_conv(model: HourglassNet) -> None:
    other = build_model("hourglass", HEADS, head_conv=64)
    assert {k: v.shape for k, v in other.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.size_divisor == 128


def test_heads_init_as_original(model: HourglassNet) -> None:
    for stack in range(2):
        assert torch.all(model.hm[stack][-1].bias == HEATMAP_PRIOR_BIAS)
        # Regression heads keep PyTorch's default (uniform) init: not the prior, not zero.
        assert not torch.all(model.wh[stack][-1].bias == HEATMAP_PRIOR_BIAS)
        assert model.wh[stack][-1].bias.abs().sum() > 0


def test_eval_returns_every_stack_at_stride_4(model: HourglassNet) -> None:
    model.eval()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) == 2
    for out in outputs:
        assert list(out) == list(HEADS)
        for name, channels in HEADS.items():
            assert out[name].shape == (1, channels, 32, 32)
            assert torch.isfinite(out[name]).all()
    # The two stacks have separate heads and features: their outputs differ.
    assert not torch.allclose(outputs[0]["hm"], outputs[1]["hm"])


def test_train_mode_backward_supervises_both_stacks(model: HourglassNet) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    outputs = model(x)
    assert len(outputs) == 2
    # A loss on the first stack alone must reach the stem and the first stack's heads only.
    outputs[0]["hm"].mean().backward(retain_graph=True)
    assert model.pre[0].conv.weight.grad.abs().sum() > 0
    assert model.hm[0][-1].weight.grad.abs().sum() > 0
    assert model.hm[1][-1].weight.grad is None
    loss = sum(out[name].float().pow(2).mean() for out in outputs for name in out)
    loss.backward()
    for stack in range(2):
        for name in HEADS:
            grad = getattr(model, name)[stack][-1].weight.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.isfinite(model.kps[0].up1[0].conv1.weight.grad).all()


def test_custom_depth_and_stack_count() -> None:
    torch.manual_seed(0)
    net = HourglassNet({"hm": 1, "hm_hp": 4, "hps": 8}, num_stacks=3, widths=(16, 24, 32), blocks=(1, 1, 2),
                       stem_channels=8, cnv_dim=16)
    assert net.size_divisor == 16
    assert torch.all(net.hm_hp[2][-1].bias == HEATMAP_PRIOR_BIAS)
    outputs = net.eval()(torch.randn(1, 3, 48, 32))
    assert len(outputs) == 3
    assert [out["hps"].shape for out in outputs] == [(1, 8, 12, 8)] * 3
    assert len(net.inters) == len(net.inters_) == len(net.cnvs_) == 2


def test_head_name_clash_is_rejected() -> None:
    with pytest.raises(ValueError, match="clashes"):
        HourglassNet({"pre": 2}, widths=(8, 8), blocks=(1, 1), stem_channels=8, cnv_dim=8)
