"""CenterNet: Objects as Points (Zhou, Wang, Krähenbühl, 2019)."""
from centernet.models import build_model, list_models

__all__ = ["build_model", "list_models"]
__version__ = "0.1.0"
