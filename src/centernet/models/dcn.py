"""Modulated deformable convolution (DCNv2) on ``torchvision.ops.deform_conv2d``.

Parameter names match the original's compiled DCNv2 module (``weight``, ``bias``,
``conv_offset_mask.weight``, ``conv_offset_mask.bias``) so its checkpoints load unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class DeformConv(nn.Module):
    """3x3 modulated deformable convolution.

    ``conv_offset_mask`` predicts ``3 * k * k`` channels per deformable group, split into three equal
    chunks ``(o1, o2, m)``: ``cat(o1, o2)`` are the offsets (channel ``2k`` the row, ``2k + 1`` the
    column offset of tap ``k``, as DCNv2's CUDA kernel reads them) and ``sigmoid(m)`` the modulation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        deformable_groups: int = 1,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.conv_offset_mask = nn.Conv2d(
            in_channels,
            deformable_groups * 3 * kernel_size * kernel_size,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=torch.sigmoid(mask),
        )
