"""CenterNet networks. Importing this package registers every architecture."""
from centernet.models.registry import build_model, default_head_conv, list_models, register_model

import centernet.models.dla  # noqa: F401  (registers "dla_34")
import centernet.models.dlav0  # noqa: F401  (registers "dlav0_34")
import centernet.models.hourglass  # noqa: F401  (registers "hourglass")
import centernet.models.resnet  # noqa: F401  (registers "res_N", "resdcn_N")
import centernet.models.timm_backbone  # noqa: F401  (registers "timm_<model>"; timm is imported on build)

__all__ = ["build_model", "default_head_conv", "list_models", "register_model"]
