"""Bilinear initialisation of up-convolutions, shared by the ResNet and DLA necks."""
from __future__ import annotations

import math

import torch
from torch import nn


def fill_bilinear_up_weights(up: nn.ConvTranspose2d) -> None:
    """Bilinear-interpolation init of a transposed conv, exactly as the original's ``fill_up_weights``.

    The original writes the bilinear kernel into ``weight[c, 0]`` for every input channel ``c`` only
    (its helper was written for depthwise up-convolutions); on a dense up-conv the other entries keep
    PyTorch's default init. Kept as is, since released models were trained from this start. On a
    depthwise up-conv (weight ``[C, 1, k, k]``) it fills every entry, as the DLA necks need.
    """
    weight = up.weight.data
    size = weight.shape[2]
    factor = math.ceil(size / 2)
    centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    taps = torch.tensor([1 - abs(i / factor - centre) for i in range(size)], dtype=torch.float64)
    weight[:, 0] = torch.outer(taps, taps)  # products in float64, rounded once: the original's Python floats
