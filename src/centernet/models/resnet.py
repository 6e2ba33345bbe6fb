"""ResNet CenterNet networks: ``res_{18,34,50,101}`` and ``resdcn_{18,34,50,101}``.

Both reproduce the original's networks key for key so its checkpoints load with ``strict=True``:

* ``res_N`` (the original's ``msra_resnet.py``, "simple baselines" pose network): ResNet-N, then three
  stride-2 transposed 4x4 convolutions to 256 channels, each followed by BN + ReLU.
* ``resdcn_N`` (``resnet_dcn.py``): ResNet-N, then three up stages to 256, 128 and 64 channels, each a
  3x3 deformable conv + BN + ReLU followed by a transposed 4x4 conv + BN + ReLU.

Either way the heads see a stride-4 feature map. ImageNet weights are loaded explicitly with
:func:`load_backbone_weights` from a local torchvision ResNet file; building a model never touches
the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from centernet.models.checkpoint import read_state_dict
from centernet.models.dcn import DeformConv
from centernet.models.heads import is_heatmap_head, make_head
from centernet.models.registry import register_model
from centernet.models.upsample import fill_bilinear_up_weights

__all__ = ["RESNET_LAYOUTS", "ResNetCenterNet", "fill_bilinear_up_weights", "load_backbone_weights"]

# Depth -> (residual block, blocks per stage), as torchvision and the original define them.
RESNET_LAYOUTS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}
_BACKBONE_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
_UP_KERNEL = 4  # stride-2 transposed conv with padding 1: exactly doubles the map size
_PLAIN_UP_CHANNELS = (256, 256, 256)
_DEFORMABLE_UP_CHANNELS = (256, 128, 64)


def _make_stage(
    block: type[BasicBlock | Bottleneck], in_channels: int, planes: int, num_blocks: int, stride: int
) -> nn.Sequential:
    """One ResNet stage; the first block projects the shortcut when the shape changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    blocks = [block(in_channels, planes, stride, downsample)]
    blocks += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def _make_up_layers(in_channels: int, deformable: bool) -> tuple[nn.Sequential, int]:
    """The original's ``deconv_layers``: three x2 up stages; returns them and their output channels.

    Layer indices inside the ``Sequential`` match the original's, which fixes the checkpoint keys.
    """
    layers: list[nn.Module] = []
    for channels in _DEFORMABLE_UP_CHANNELS if deformable else _PLAIN_UP_CHANNELS:
        if deformable:
            layers += [DeformConv(in_channels, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            in_channels = channels
        up = nn.ConvTranspose2d(in_channels, channels, _UP_KERNEL, stride=2, padding=1, bias=False)
        if deformable:
            fill_bilinear_up_weights(up)
        else:
            nn.init.normal_(up.weight, std=0.001)
        layers += [up, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        in_channels = channels
    return nn.Sequential(*layers), in_channels


class ResNetCenterNet(nn.Module):
    """ResNet backbone + up-sampling neck + one head per output, returning raw maps at stride 4.

    Args:
        block: residual block type (``BasicBlock`` for depth 18/34, ``Bottleneck`` for 50/101).
        blocks_per_stage: number of blocks in ``layer1`` .. ``layer4``.
        heads: head name -> output channels, e.g. ``{"hm": 80, "wh": 2, "reg": 2}``.
        head_conv: channels of each head's 3x3 conv; ``<= 0`` makes every head a single 1x1 conv.
        deformable: ``True`` for the original's ``resnet_dcn`` neck (DCN + up-conv per stage, heads on
            64 channels, bilinear up-conv init), ``False`` for ``msra_resnet`` (up-convs only, heads on
            256 channels, N(0, 0.001) up-conv init). ``msra_resnet`` also registers its heads in sorted
            name order, which orders the checkpoint keys.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks_per_stage: Sequence[int],
        heads: dict[str, int],
        head_conv: int,
        deformable: bool,
    ) -> None:
        super().__init__()
        self.heads = dict(heads)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for index, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
            stride = 1 if index == 1 else 2
            self.add_module(f"layer{index}", _make_stage(block, channels, planes, num_blocks, stride))
            channels = planes * block.expansion
        self.deconv_layers, head_in_channels = _make_up_layers(channels, deformable)
        for name in self.heads if deformable else sorted(self.heads):
            head = make_head(name, head_in_channels, self.heads[name], head_conv)
            if not deformable and head_conv > 0 and not is_heatmap_head(name):
                # msra_resnet re-initialises only the final conv of a regression head.
                head[0].reset_parameters()
            self.add_module(name, head)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network.

        Args:
            x: normalised images ``[B, 3, H, W]``; ``H`` and ``W`` multiples of 32.

        Returns:
            Head name -> raw (pre-sigmoid) map ``[B, C_head, H / 4, W / 4]``, in ``heads`` order.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.deconv_layers(x)
        return {name: getattr(self, name)(x) for name in self.heads}


def _register(depth: int, deformable: bool) -> None:
    block, blocks_per_stage = RESNET_LAYOUTS[depth]

    def build(heads: dict[str, int], head_conv: int) -> ResNetCenterNet:
        return ResNetCenterNet(block, blocks_per_stage, heads, head_conv, deformable=deformable)

    register_model(f"{'resdcn' if deformable else 'res'}_{depth}")(build)


for _depth in RESNET_LAYOUTS:
    _register(_depth, deformable=False)
    _register(_depth, deformable=True)


def load_backbone_weights(model: ResNetCenterNet, path: str | PathLike[str]) -> list[str]:
    """Load ImageNet weights from a local torchvision ResNet state dict (e.g. ``resnet18-f37072fd.pth``).

    The classifier (``fc.*``) is dropped; every other entry must match a backbone tensor of ``model``
    in name and shape, and every backbone tensor must be provided (files from before PyTorch 0.4.1
    lack ``num_batches_tracked``, which then stays 0). Neck and heads keep their initialisation.

    Args:
        model: a ``res_N`` / ``resdcn_N`` network of the file's depth.
        path: the local weight file; nothing is downloaded.

    Returns:
        The names of the loaded tensors.

    Raises:
        ValueError: the file does not fit the model's backbone (names the file and the keys).
    """
    weights = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    own = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in _BACKBONE_MODULES}
    unexpected = sorted(k for k in weights if k not in own)
    missing = sorted(k for k in own if k not in weights and not k.endswith("num_batches_tracked"))
    mismatched = sorted(k for k in weights if k in own and weights[k].shape != own[k].shape)
    if unexpected or missing or mismatched:
        raise ValueError(
            f"{path}: not a ResNet backbone for this model; "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), missing {missing[:5]} ({len(missing)}), "
            f"shape mismatch {mismatched[:5]} ({len(mismatched)})"
        )
    model.load_state_dict(weights, strict=False)
    return sorted(weights)
