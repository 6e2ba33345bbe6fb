"""CenterNet networks. Importing this package registers every architecture."""
from centernet.models.registry import build_model, default_head_conv, list_models, register_model

__all__ = ["build_model", "default_head_conv", "list_models", "register_model"]
