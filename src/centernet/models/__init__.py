"""Models: the networks, their checkpoints, and the ``CenterNet`` detector with its ``Predictor``.

Concern: turning images into head maps and back into detections. Backbones of the paper's section
5: ``dla`` (DLA-34 with deformable up-convolutions, ``dcn``), ``dlav0``, ``hourglass`` (Hourglass-104),
``resnet`` (ResNet with deformable up-convolutions) and ``timm_backbone``; ``heads`` builds the
3x3 conv + ReLU + 1x1 conv heads with the heat-map prior bias ``-2.19``; ``registry`` maps names to
builders. ``detector.CenterNet`` is the contract (images in; losses in train mode, detections in eval
mode) and ``predictor.Predictor`` the one inference path (warp, network, the task's decoding,
flip and multi-scale merging). ``checkpoint`` and ``pretrained`` read and write weights.
Importing this package registers every architecture.
"""
from centernet.models.registry import build_model, default_head_conv, list_models, register_model

import centernet.models.dla  # noqa: F401  (registers "dla_34")
import centernet.models.dlav0  # noqa: F401  (registers "dlav0_34")
import centernet.models.hourglass  # noqa: F401  (registers "hourglass")
import centernet.models.resnet  # noqa: F401  (registers "res_N", "resdcn_N")
import centernet.models.timm_backbone  # noqa: F401  (registers "timm_<model>"; timm is imported on build)

__all__ = ["build_model", "default_head_conv", "list_models", "register_model"]
