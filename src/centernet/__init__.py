"""CenterNet: Objects as Points (Zhou, Wang, Krähenbühl, 2019).

Entry points: ``CenterNet`` (the detector, torchvision's contract), ``build_model`` (raw networks),
``load_original_checkpoint``, and ``train`` / ``evaluate`` / ``predict`` / ``export``.

Layers, each importing only from the ones before it: ``config`` -> ``data`` (readers, records,
geometry, pre-processing and augmentation, results) -> ``evaluation`` (scoring) -> ``tasks`` (what
is particular to 2D boxes, pose and 3D: targets, losses, decoding) -> ``models`` (networks, the
``CenterNet`` detector and its ``Predictor``) -> ``engine`` (training loop, validation, prediction
sources) -> ``export``, ``api``, ``cli``. Each sub-package's docstring says where the paper's
equations live.
"""
import importlib as _importlib

# The subpackage centernet.export is loaded before the API function takes its name: a package loaded
# later (by the first export) would rebind ``centernet.export`` to itself, and a second
# ``centernet.export(...)`` would fail with "'module' object is not callable".
_importlib.import_module("centernet.export")
from centernet.api import evaluate, export, predict, train
from centernet.config import Config, load_config
from centernet.models.detector import CenterNet
from centernet.models import build_model, list_models
from centernet.models.checkpoint import load_original_checkpoint

__all__ = [
    "CenterNet",
    "Config",
    "build_model",
    "evaluate",
    "export",
    "list_models",
    "load_config",
    "load_original_checkpoint",
    "predict",
    "train",
]
__version__ = "0.1.0"
