"""DLA-34 with the deformable DLAUp / IDAUp neck (the original's ``pose_dla_dcn.py``): ``dla_34``.

Also holds the pieces shared with the plain-neck variant in :mod:`centernet.models.dlav0`: the DLA-34
backbone (``BasicBlock`` / ``Root`` / ``Tree``), the bilinear up-sampling layer and the DLAUp cascade,
plus :func:`load_dla_backbone_weights` for ImageNet initialisation from a local file.

Module and attribute names follow the original wherever they appear in checkpoint keys
(``base.level3.tree1.root.conv.weight``, ``dla_up.ida_0.proj_1.actf.0.weight``, ``ida_up.up_2.weight``...),
so the original's released checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from centernet.models.checkpoint import CheckpointError, read_state_dict
from centernet.models.dcn import DeformConv
from centernet.models.heads import is_heatmap_head, make_head
from centernet.models.registry import register_model
from centernet.models.upsample import fill_bilinear_up_weights

__all__ = [
    "DLA34_CHANNELS",
    "DLA34_LEVELS",
    "DLABackbone",
    "DLADeformableNet",
    "DLAUp",
    "DeformableIDAUp",
    "bilinear_upsampler",
    "load_dla_backbone_weights",
]

DLA34_LEVELS = (1, 1, 1, 2, 2, 1)
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
# The heads read level 2 (stride 4); levels 2..4 are fused by the final IDAUp, as in the original's
# ``first_level = log2(down_ratio)`` with ``down_ratio = 4`` and ``last_level = 5``.
FIRST_LEVEL = 2
LAST_LEVEL = 5
# Level 5 has stride 32. Strided convolutions round up and the max-pooled shortcuts round down, so
# only inputs whose sides are multiples of 32 keep every shortcut aligned (the original's detectors
# pad to this multiple before the network).
SIZE_DIVISOR = 32


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (the first conv may be strided)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, Cin, H, W] -> [B, Cout, H/stride, W/stride]; ``shortcut`` defaults to ``x``."""
        if shortcut is None:
            shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Root(nn.Module):
    """Aggregation node: 1x1 conv + BN + ReLU over the channel concatenation of its children."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *children: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(children, dim=1))))


class Tree(nn.Module):
    """Hierarchical deep aggregation tree of ``levels`` levels of :class:`BasicBlock` pairs.

    Args:
        levels: depth of the tree; a level-1 tree is two blocks joined by a :class:`Root`.
        in_channels: channels of the input.
        out_channels: channels of every block and of the output.
        stride: down-sampling of the first block (the shortcut is max-pooled by the same factor).
        level_root: also feed the (down-sampled) tree input to the root.
        root_dim: input channels of the root; ``0`` means the two children, ``2 * out_channels``.
    """

    def __init__(
        self,
        levels: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        level_root: bool = False,
        root_dim: int = 0,
    ) -> None:
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * out_channels
        if level_root:
            root_dim += in_channels
        self.levels = levels
        self.level_root = level_root
        if levels == 1:
            self.tree1: nn.Module = BasicBlock(in_channels, out_channels, stride)
            self.tree2: nn.Module = BasicBlock(out_channels, out_channels, 1)
            self.root = Root(root_dim, out_channels)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, root_dim=root_dim + out_channels)
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else nn.Identity()
        # In a tree of depth > 1 the original also builds this projection but never uses its output
        # (the nested tree makes its own shortcut); it is kept so that checkpoints keep their keys.
        self.project = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, children: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` [B, Cin, H, W] -> [B, Cout, H/stride, W/stride].

        ``children`` are extra inputs for the deepest root, handed down from the enclosing tree.
        """
        children = [] if children is None else children
        bottom = self.downsample(x)
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            x1 = self.tree1(x, self.project(bottom))
            x2 = self.tree2(x1)
            return self.root(x2, x1, *children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children)


class DLABackbone(nn.Module):
    """DLA-34 feature extractor returning all six levels (strides 1, 2, 4, 8, 16, 32).

    Args:
        num_classes: if given, an ImageNet classifier ``fc`` (1x1 conv on the last level) is created.
            The detection networks never call it; ``dlav0_34`` owns one only because its checkpoints do.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        levels, channels = DLA34_LEVELS, DLA34_CHANNELS
        self.channels = channels
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, channels[0], kernel_size=7, stride=1, padding=3, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        self.level0 = _conv_level(channels[0], channels[0], levels[0], stride=1)
        self.level1 = _conv_level(channels[0], channels[1], levels[1], stride=2)
        self.level2 = Tree(levels[2], channels[1], channels[2], stride=2, level_root=False)
        self.level3 = Tree(levels[3], channels[2], channels[3], stride=2, level_root=True)
        self.level4 = Tree(levels[4], channels[3], channels[4], stride=2, level_root=True)
        self.level5 = Tree(levels[5], channels[4], channels[5], stride=2, level_root=True)
        if num_classes is not None:
            self.fc = nn.Conv2d(channels[-1], num_classes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` [B, 3, H, W] normalised image, H and W multiples of 32.

        Returns:
            Six maps; level ``i`` is ``[B, channels[i], H / 2**i, W / 2**i]`` (level 0 at stride 1).
        """
        height, width = x.shape[-2:]
        if height % SIZE_DIVISOR or width % SIZE_DIVISOR:
            raise ValueError(
                f"DLA input size {height}x{width} is not a multiple of {SIZE_DIVISOR}: "
                f"pad the image to a multiple of {SIZE_DIVISOR} first (as the original's detectors do)"
            )
        x = self.base_layer(x)
        levels = []
        for level in (self.level0, self.level1, self.level2, self.level3, self.level4, self.level5):
            x = level(x)
            levels.append(x)
        return levels


def _conv_level(in_channels: int, out_channels: int, convs: int, stride: int) -> nn.Sequential:
    """``convs`` 3x3 conv-BN-ReLU layers; only the first one is strided."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(in_channels, out_channels, 3, stride=stride if i == 0 else 1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Depthwise transposed conv up-sampling by ``factor``, initialised to bilinear interpolation.

    Kernel ``2 * factor``, stride ``factor``, padding ``factor // 2``: an exact ``factor``-times
    enlargement. Each channel gets the same separable tent kernel (the original's ``fill_up_weights``);
    the weights stay trainable.
    """
    kernel = 2 * factor
    up = nn.ConvTranspose2d(
        channels, channels, kernel, stride=factor, padding=factor // 2, groups=channels, bias=False
    )
    fill_bilinear_up_weights(up)
    return up


class DeformConvBNReLU(nn.Module):
    """3x3 modulated deformable conv + BN + ReLU (the original's ``DeformConv``; keys ``conv``, ``actf``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.conv = DeformConv(in_channels, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actf(self.conv(x))


class DeformableIDAUp(nn.Module):
    """Iterative deep aggregation with deformable convs: folds coarser maps one by one into the finest.

    For ``i >= 1``: ``fused_i = node_i(up_i(proj_i(layers[i])) + fused_{i-1})`` with ``fused_0 = layers[0]``.

    Args:
        out_channels: channels of every fused map.
        in_channels: channels of the input maps, finest first.
        up_factors: resolution of ``layers[0]`` over that of ``layers[i]`` (``up_factors[0]`` is unused).
    """

    def __init__(self, out_channels: int, in_channels: Sequence[int], up_factors: Sequence[int]) -> None:
        super().__init__()
        self.num_inputs = len(in_channels)
        for i in range(1, self.num_inputs):
            setattr(self, f"proj_{i}", DeformConvBNReLU(in_channels[i], out_channels))
            setattr(self, f"up_{i}", bilinear_upsampler(out_channels, int(up_factors[i])))
            setattr(self, f"node_{i}", DeformConvBNReLU(out_channels, out_channels))

    def forward(self, layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``layers[i]`` [B, in_channels[i], H / up_factors[i], W / up_factors[i]].

        Returns:
            ``fused_1 .. fused_{n-1}``, each [B, out_channels, H, W]; the last one has seen every input.
        """
        fused = [layers[0]]
        for i in range(1, self.num_inputs):
            upsampled = getattr(self, f"up_{i}")(getattr(self, f"proj_{i}")(layers[i]))
            fused.append(getattr(self, f"node_{i}")(upsampled + fused[-1]))
        return fused[1:]


IDAUpFactory = Callable[[int, Sequence[int], Sequence[int]], nn.Module]


class DLAUp(nn.Module):
    """Cascade of IDA-up stages, deepest first, that brings every level up to the finest one.

    Stage ``ida_k`` fuses the last ``k + 2`` maps at the resolution (and width) of the first of them;
    the maps already fused by the previous stage enter at that stage's resolution. This is the
    original's ``DLAUp``; ``make_ida(out_channels, in_channels, up_factors)`` builds one stage, which
    maps a list of ``n`` maps to its ``n - 1`` fused maps.

    Args:
        channels: channels of the input levels, finest first.
        scales: stride of each input level relative to the first (1, 2, 4...).
        make_ida: stage constructor, :class:`DeformableIDAUp` for ``dla_34``.
    """

    def __init__(self, channels: Sequence[int], scales: Sequence[int], make_ida: IDAUpFactory) -> None:
        super().__init__()
        self.num_stages = len(channels) - 1
        in_channels = list(channels)
        scales = list(scales)
        for k in range(self.num_stages):
            first = len(channels) - k - 2
            up_factors = [s // scales[first] for s in scales[first:]]
            setattr(self, f"ida_{k}", make_ida(channels[first], in_channels[first:], up_factors))
            # The maps this stage fuses replace its coarser inputs, at the resolution and width of its finest.
            scales[first + 1 :] = [scales[first]] * (len(scales) - first - 1)
            in_channels[first + 1 :] = [channels[first]] * (len(channels) - first - 1)

    def forward(self, layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``layers[i]`` [B, channels[i], H / scales[i], W / scales[i]].

        Returns:
            One map per input level, finest first: entry ``i < n - 1`` is the last map fused by the stage
            whose finest input is level ``i`` ([B, channels[i], H / scales[i], W / scales[i]]); the last
            entry is the untouched deepest level.
        """
        layers = list(layers)
        outputs = [layers[-1]]
        for k in range(self.num_stages):
            first = len(layers) - k - 2
            layers[first + 1 :] = getattr(self, f"ida_{k}")(layers[first:])
            outputs.insert(0, layers[-1])
        return outputs


class DLADeformableNet(nn.Module):
    """CenterNet DLA-34: DLA backbone, deformable DLAUp + IDAUp neck, heads on a 64-channel stride-4 map.

    Args:
        heads: head name -> output channels, in the order the outputs are returned.
        head_conv: channels of each head's 3x3 conv (``<= 0``: a single 1x1 conv).
    """

    size_divisor = SIZE_DIVISOR

    def __init__(self, heads: Mapping[str, int], head_conv: int) -> None:
        super().__init__()
        self.base = DLABackbone()
        channels = self.base.channels[FIRST_LEVEL:]
        self.dla_up = DLAUp(channels, [2**i for i in range(len(channels))], DeformableIDAUp)
        num_fused = LAST_LEVEL - FIRST_LEVEL
        self.ida_up = DeformableIDAUp(channels[0], channels[:num_fused], [2**i for i in range(num_fused)])
        self.heads = dict(heads)
        for name, out_channels in self.heads.items():
            setattr(self, name, _make_dcn_head(name, channels[0], out_channels, head_conv))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` [B, 3, H, W] normalised image (H, W multiples of 32) -> head -> raw [B, C, H/4, W/4]."""
        levels = self.dla_up(self.base(x)[FIRST_LEVEL:])
        features = self.ida_up(levels[: LAST_LEVEL - FIRST_LEVEL])[-1]
        return {name: getattr(self, name)(features) for name in self.heads}


def _make_dcn_head(name: str, in_channels: int, out_channels: int, head_conv: int) -> nn.Module:
    """A head initialised as ``pose_dla_dcn.py`` does it.

    Unlike the other networks, it only zeroes the biases of the non-heat-map heads and leaves their
    weights at PyTorch's default initialisation instead of N(0, 0.001).
    """
    head = make_head(name, in_channels, out_channels, head_conv)
    if not is_heatmap_head(name):
        for module in head.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
                nn.init.zeros_(module.bias)
    return head


@register_model("dla_34", channels_last=True)
def dla_34(heads: Mapping[str, int], head_conv: int) -> DLADeformableNet:
    """DLA-34 with the deformable up-sampling neck (``pose_dla_dcn.py``), ImageNet weights not loaded."""
    return DLADeformableNet(heads, head_conv)


def load_dla_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Initialise ``model.base`` from a local ImageNet DLA-34 state dict; never downloads.

    Accepts the original's ``dla34-ba72cf86.pth`` and timm's ``dla34`` state dict (optionally wrapped
    in ``{"state_dict": ...}`` or prefixed ``module.``). Both use the backbone's own key names; timm's
    omits the projections that the original builds but never uses in trees of depth > 1, which then
    keep their initialisation. The ImageNet classifier ``fc.*`` is dropped unless the backbone owns one
    (``dlav0_34``, whose original loads it too).

    Args:
        model: a DLA network (``dla_34`` or ``dlav0_34``) with a :class:`DLABackbone` as ``model.base``.
        path: the ``.pth`` file.

    Raises:
        CheckpointError: when the file is no checkpoint, lacks a backbone parameter that the network
            uses, holds keys the backbone does not know or tensors of other shapes; ``model`` is then
            left unchanged.
    """
    base: DLABackbone = model.base
    own = base.state_dict()
    state = read_state_dict(path)
    state = {key: value for key, value in state.items() if not key.startswith("fc.") or key in own}
    optional = _unused_projection_keys(base) | {key for key in own if key.endswith("num_batches_tracked")}
    missing = sorted(own.keys() - state.keys() - optional)
    unexpected = sorted(state.keys() - own.keys())
    reshaped = sorted(key for key in state.keys() & own.keys() if state[key].shape != own[key].shape)
    if missing or unexpected or reshaped:
        raise CheckpointError(
            f"{os.fspath(path)}: not a DLA-34 backbone state dict; "
            f"missing {missing}, unexpected {unexpected}, shapes differ for {reshaped}"
        )
    base.load_state_dict(state, strict=False)


def _unused_projection_keys(base: DLABackbone) -> set[str]:
    """State-dict keys of the projections that trees of depth > 1 build but never apply."""
    keys = set()
    for name, module in base.named_modules():
        if isinstance(module, Tree) and module.levels > 1:
            keys.update(f"{name}.project.{key}" for key in module.project.state_dict())
    return keys
