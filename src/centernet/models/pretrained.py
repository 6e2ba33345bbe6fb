"""Starting weights for training, from local files only (nothing is ever downloaded).

Two kinds, as the original's ``--arch`` ImageNet initialisation and its ``--load_model``:

* :func:`load_pretrained_backbone`: ImageNet weights for the backbone (torchvision ResNet files for
  ``res_*`` / ``resdcn_*``, DLA-34 files for ``dla_34`` / ``dlav0_34``); neck and heads keep their
  initialisation.
* :func:`load_matching_weights`: a whole trained network (a ``best.pt`` / ``last.pt`` of ours or an
  original ``.pth``) to fine-tune from. Tensors of the same name and shape are loaded; heads that
  differ (another class count, a head this task lacks) keep their initialisation, as the original's
  ``load_model`` skips them; the file's unused ImageNet classifier (``base.fc``) is dropped.
  Backbone and neck must match: a file of another architecture is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from torch import nn

from centernet.models.checkpoint import IMAGENET_CLASSIFIER, CheckpointError, _top_level, read_state_dict
from centernet.models.dla import load_dla_backbone_weights
from centernet.models.registry import architecture_family
from centernet.models.resnet import load_backbone_weights

__all__ = ["LoadReport", "load_matching_weights", "load_pretrained_backbone"]


def load_pretrained_backbone(model: nn.Module, arch: str, path: str | os.PathLike[str]) -> None:
    """Initialise ``model``'s backbone from the local ImageNet file ``path`` (``model.pretrained``).

    Raises:
        ValueError / CheckpointError: the file does not fit the backbone (names the file), or
            ``arch`` has no ImageNet backbone (Hourglass-104: the original starts from ExtremeNet's
            whole network, which ``model.weights`` loads).
    """
    family = architecture_family(arch)
    if family in ("res", "resdcn"):
        load_backbone_weights(model, path)
    elif family in ("dla", "dlav0"):
        load_dla_backbone_weights(model, path)
    else:
        raise ValueError(
            f"model.pretrained: {arch} has no ImageNet backbone to load ({os.fspath(path)}); "
            "to start from a trained network (ExtremeNet or CenterNet weights) use model.weights"
        )


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
