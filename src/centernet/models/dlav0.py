"""DLA-34 with the plain (non-deformable) DLAUp neck (the original's ``dlav0.py``): ``dlav0_34``.

The backbone and the DLAUp cascade are shared with :mod:`centernet.models.dla`; this neck's IDA stages
project with 1x1 conv-BN-ReLU and aggregate by concatenation + 3x3 conv-BN-ReLU.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from centernet.models.dla import FIRST_LEVEL, SIZE_DIVISOR, DLABackbone, DLAUp, bilinear_upsampler
from centernet.models.heads import make_head
from centernet.models.registry import register_model

__all__ = ["DLAPlainNet", "PlainIDAUp"]

IMAGENET_CLASSES = 1000  # dlav0's backbone always carries an (unused) ImageNet classifier


class PlainIDAUp(nn.Module):
    """Iterative deep aggregation by concatenation.

    Every input is projected to ``out_channels`` (1x1 conv-BN-ReLU, identity when the width already
    matches) and up-sampled to the finest resolution (identity for factor 1); then
    ``fused_i = node_i(cat(fused_{i-1}, layers[i]))`` with ``fused_0 = layers[0]``.

    Args:
        out_channels: channels of every fused map.
        in_channels: channels of the input maps, finest first.
        up_factors: resolution of the finest map over that of each input (``up_factors[0] == 1``).
    """

    def __init__(self, out_channels: int, in_channels: Sequence[int], up_factors: Sequence[int]) -> None:
        super().__init__()
        self.num_inputs = len(in_channels)
        for i, (channels, factor) in enumerate(zip(in_channels, up_factors)):
            proj = nn.Identity() if channels == out_channels else _conv_bn_relu(channels, out_channels, 1)
            up = nn.Identity() if factor == 1 else bilinear_upsampler(out_channels, int(factor))
            setattr(self, f"proj_{i}", proj)
            setattr(self, f"up_{i}", up)
        for i in range(1, self.num_inputs):
            setattr(self, f"node_{i}", _conv_bn_relu(2 * out_channels, out_channels, 3))
        _init_convs_fan_out(self)

    def forward(self, layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``layers[i]`` [B, in_channels[i], H / up_factors[i], W / up_factors[i]].

        Returns:
            ``fused_1 .. fused_{n-1}``, each [B, out_channels, H, W]; the last one has seen every input.
        """
        aligned = [getattr(self, f"up_{i}")(getattr(self, f"proj_{i}")(x)) for i, x in enumerate(layers)]
        fused = [aligned[0]]
        for i in range(1, self.num_inputs):
            fused.append(getattr(self, f"node_{i}")(torch.cat([fused[-1], aligned[i]], dim=1)))
        return fused[1:]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _init_convs_fan_out(module: nn.Module) -> None:
    """dlav0's initialisation: conv weights N(0, 2 / (k * k * out_channels)), BN weight 1 and bias 0.

    Transposed convolutions are not ``nn.Conv2d`` and keep their bilinear weights.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DLAPlainNet(nn.Module):
    """CenterNet DLAv0-34: DLA backbone, plain DLAUp neck, heads on a 64-channel stride-4 map
    (``heads`` and ``head_conv`` as ``dla.DLADeformableNet``)."""

    size_divisor = SIZE_DIVISOR

    def __init__(self, heads: Mapping[str, int], head_conv: int) -> None:
        super().__init__()
        self.base = DLABackbone(num_classes=IMAGENET_CLASSES)
        _init_convs_fan_out(self.base)
        channels = self.base.channels[FIRST_LEVEL:]
        self.dla_up = DLAUp(channels, [2**i for i in range(len(channels))], PlainIDAUp)
        self.heads = dict(heads)
        for name, out_channels in self.heads.items():
            setattr(self, name, make_head(name, channels[0], out_channels, head_conv))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` [B, 3, H, W] normalised image (H, W multiples of 32) -> head -> raw [B, C, H/4, W/4]."""
        features = self.dla_up(self.base(x)[FIRST_LEVEL:])[0]
        return {name: getattr(self, name)(features) for name in self.heads}


@register_model("dlav0_34", channels_last=True)
def dlav0_34(heads: Mapping[str, int], head_conv: int) -> DLAPlainNet:
    """DLA-34 with the plain up-sampling neck (``dlav0.py``), ImageNet weights not loaded."""
    return DLAPlainNet(heads, head_conv)
