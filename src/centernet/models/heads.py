"""Prediction heads shared by every backbone: 3x3 conv (head_conv) + ReLU + 1x1 conv."""
from __future__ import annotations

from torch import nn

HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1: the original's prior for heat-map heads


def is_heatmap_head(name: str) -> bool:
    """Heat-map heads (``hm``, ``hm_hp``) get the focal-loss prior bias."""
    return name.startswith("hm")


def make_head(name: str, in_channels: int, out_channels: int, head_conv: int) -> nn.Module:
    """One head, initialised as the original: prior bias on heat maps, N(0, 0.001) weights elsewhere.

    With ``head_conv <= 0`` the head is a bare 1x1 conv (not wrapped in a ``Sequential``), as in the
    original, so its checkpoint keys are ``<name>.weight`` / ``<name>.bias``.
    """
    final = nn.Conv2d(head_conv if head_conv > 0 else in_channels, out_channels, kernel_size=1, bias=True)
    head: nn.Module = final
    if head_conv > 0:
        head = nn.Sequential(
            nn.Conv2d(in_channels, head_conv, kernel_size=3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            final,
        )
    if is_heatmap_head(name):
        nn.init.constant_(final.bias, HEATMAP_PRIOR_BIAS)
    else:
        for m in head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.constant_(m.bias, 0.0)
    return head


HEAD_INITS = ("original", "pytorch")


def reinit_regression_heads(model: nn.Module, heads: dict[str, int]) -> None:
    """Give every non-heat-map head PyTorch's default (Kaiming-uniform) convolution initialisation.

    The original draws a regression head's final convolution from N(0, 0.001). From an
    ImageNet-initialised backbone and 140 epochs that is harmless; from scratch and for a few
    hundred Adam steps it traps the two outputs of ``wh`` in one mode: early updates are the same
    for width and height (both start near 0 below positive targets), their weights become parallel
    and the width-minus-height error no longer reaches the layers below, so boxes learn their scale
    but not their aspect ratio. Random weights of ordinary size break that symmetry from the start.
    Heat-map heads keep the original's prior bias.
    """
    for name in heads:
        if is_heatmap_head(name):
            continue
        for module in getattr(model, name).modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
