"""Hourglass-104: CornerNet's stacked hourglass with CenterNet heads on every stack.

Two hourglasses run one after the other at stride 4; each stack ends in its own set of heads, so
training can supervise both (intermediate supervision) while inference reads the last stack.
Attribute names (``pre``, ``kps``, ``cnvs``, ``inters``, ``inters_``, ``cnvs_``, ``up1``, ``low1``
... and one ``nn.ModuleList`` per head) are the original's, so its checkpoints load unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from centernet.models.heads import HEATMAP_PRIOR_BIAS, is_heatmap_head
from centernet.models.registry import register_model

STEM_STRIDE = 4  # the 7x7 stem conv and the first residual block both halve the input


class ConvBnRelu(nn.Module):
    """``k x k`` convolution (same padding), optional BatchNorm, ReLU (the original's ``convolution``).

    Without BatchNorm the convolution carries a bias, as in the original's head convolutions.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, with_bn: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=not with_bn
        )
        self.bn = nn.BatchNorm2d(out_channels) if with_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def conv1x1_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """Bias-free 1x1 projection followed by BatchNorm (residual shortcuts and the stack merge)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class Residual(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, then ReLU (the original's ``residual``).

    The shortcut is a strided 1x1 conv + BN when the stride or the width changes, else identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self.bn1(self.conv1(x)), inplace=True)
        branch = self.bn2(self.conv2(branch))
        return F.relu(branch + self.skip(x), inplace=True)


def residual_chain(widths: Sequence[int], stride: int = 1) -> nn.Sequential:
    """Residual blocks ``widths[i] -> widths[i + 1]``; only the first block uses ``stride``."""
    return nn.Sequential(
        *(
            Residual(in_channels, out_channels, stride if index == 0 else 1)
            for index, (in_channels, out_channels) in enumerate(zip(widths[:-1], widths[1:]))
        )
    )


class Hourglass(nn.Module):
    """One hourglass, built recursively level by level (the original's ``kp_module``).

    Each level keeps a full-resolution branch (``up1``) and a branch that halves the resolution with
    a strided residual block (``low1``), recurses into the next level (``low2``; plain residual
    blocks at the bottleneck), comes back to this level's width (``low3``, the last block changes
    the width) and is upsampled x2 (nearest) before the two branches are summed. There is no
    max-pooling: the downsampling is the stride-2 block, as in the original's Hourglass-104.

    Args:
        widths: channels per level, outermost first; ``len(widths) - 1`` levels of downsampling.
        blocks: residual blocks per level, same length as ``widths``; the last entry is the
            bottleneck's block count.
    """

    def __init__(self, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        if len(widths) != len(blocks) or len(widths) < 2:
            raise ValueError(f"widths {list(widths)} and blocks {list(blocks)} need the same length >= 2")
        width, inner_width, count = widths[0], widths[1], blocks[0]
        self.up1 = residual_chain([width] * (count + 1))
        self.low1 = residual_chain([width] + [inner_width] * count, stride=2)
        if len(widths) > 2:
            self.low2: nn.Module = Hourglass(widths[1:], blocks[1:])
        else:
            self.low2 = residual_chain([inner_width] * (blocks[1] + 1))
        self.low3 = residual_chain([inner_width] * count + [width])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, widths[0], H, W] -> [B, widths[0], H, W]``; H and W must be divisible by 2**levels."""
        low = self.low3(self.low2(self.low1(x)))
        return self.up1(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class HourglassNet(nn.Module):
    """Stacked hourglass network with CenterNet heads on every stack (the original's ``exkp``).

    Every head is ``ConvBnRelu(3x3, cnv_dim -> widths[0], no BN) + 1x1 conv``; heat-map heads
    (``hm*``) start with the focal-loss prior bias, other layers keep PyTorch's default
    initialisation, as in the original.

    Args:
        heads: head name -> output channels, e.g. ``{"hm": 80, "wh": 2, "reg": 2}``, in the order
            the output dicts list them.
        num_stacks: number of hourglasses; each one yields a full set of head outputs.
        widths: channels per hourglass level, outermost first.
        blocks: residual blocks per hourglass level (last entry: the bottleneck).
        stem_channels: width of the 7x7 stride-2 stem convolution.
        cnv_dim: width of the 3x3 conv after each hourglass, which feeds the heads.
    """

    def __init__(
        self,
        heads: Mapping[str, int],
        num_stacks: int = 2,
        widths: Sequence[int] = (256, 256, 384, 384, 384, 512),
        blocks: Sequence[int] = (2, 2, 2, 2, 2, 4),
        stem_channels: int = 128,
        cnv_dim: int = 256,
    ) -> None:
        super().__init__()
        width = widths[0]
        self.num_stacks = num_stacks
        self.head_names = tuple(heads)
        # Inputs must be divisible by this so that every upsampled branch matches its skip branch.
        self.size_divisor = STEM_STRIDE * 2 ** (len(widths) - 1)

        self.pre = nn.Sequential(
            ConvBnRelu(3, stem_channels, 7, stride=2), Residual(stem_channels, width, stride=2)
        )
        self.kps = nn.ModuleList(Hourglass(widths, blocks) for _ in range(num_stacks))
        self.cnvs = nn.ModuleList(ConvBnRelu(width, cnv_dim, 3) for _ in range(num_stacks))
        # Between two stacks: the previous stack's input and its features are merged (1x1 + BN each,
        # summed, ReLU) and refined by one residual block to form the next stack's input.
        self.inters = nn.ModuleList(Residual(width, width) for _ in range(num_stacks - 1))
        self.inters_ = nn.ModuleList(conv1x1_bn(width, width) for _ in range(num_stacks - 1))
        self.cnvs_ = nn.ModuleList(conv1x1_bn(cnv_dim, width) for _ in range(num_stacks - 1))

        for name, channels in heads.items():
            if hasattr(self, name):
                raise ValueError(f"head name {name!r} clashes with an attribute of HourglassNet")
            per_stack = nn.ModuleList(
                nn.Sequential(ConvBnRelu(cnv_dim, width, 3, with_bn=False), nn.Conv2d(width, channels, 1))
                for _ in range(num_stacks)
            )
            if is_heatmap_head(name):
                for head in per_stack:
                    nn.init.constant_(head[-1].bias, HEATMAP_PRIOR_BIAS)
            setattr(self, name, per_stack)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Run every stack, in training and in evaluation alike.

        Args:
            x: normalised images ``[B, 3, H, W]``; H and W divisible by ``size_divisor`` (128 for
                Hourglass-104; the original pads test images accordingly).

        Returns:
            One dict per stack, first stack first: head name -> raw (pre-sigmoid) map
            ``[B, C, H / 4, W / 4]``. The detector decodes the last one.
        """
        inter = self.pre(x)
        outputs = []
        for stack in range(self.num_stacks):
            features = self.cnvs[stack](self.kps[stack](inter))
            outputs.append({name: getattr(self, name)[stack](features) for name in self.head_names})
            if stack < self.num_stacks - 1:
                inter = F.relu(self.inters_[stack](inter) + self.cnvs_[stack](features), inplace=True)
                inter = self.inters[stack](inter)
        return outputs


@register_model("hourglass")
def hourglass(heads: dict[str, int], head_conv: int) -> HourglassNet:
    """Hourglass-104 (two stacks, 191 M parameters with the COCO ctdet heads).

    ``head_conv`` is ignored, as in the original: the heads' 3x3 conv is always 256 channels wide.
    """
    del head_conv
    return HourglassNet(heads, num_stacks=2)
