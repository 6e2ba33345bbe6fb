"""The Python API, mirroring the command line: ``train``, ``evaluate``, ``predict``, ``export``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from centernet.config import Config, load_config, with_overrides


def _config(recipe: str | Path | Config | None, overrides: Sequence[str]) -> Config:
    if isinstance(recipe, Config):
        return with_overrides(recipe, list(overrides))
    return load_config(recipe, list(overrides))


def train(recipe: str | Path | Config | None = None, *overrides: str, resume: bool = False, hooks: Sequence = ()) -> dict:
    """Train a recipe (path, shipped name or ``Config``) with ``section.field=value`` overrides.

    Example: ``centernet.train("ctdet_res18_voc_70e", "data.source=my_voc", "train.epochs=10")``.
    ``hooks``: ``centernet.engine.trainer.TrainerHook`` objects (step, epoch-end, validation-end).
    Returns the last validation metrics and the run folder.
    """
    from centernet.engine.trainer import train as run

    return run(_config(recipe, overrides), resume=resume, hooks=hooks)


def evaluate(weights: str | Path, recipe: str | Path | Config | None = None, *overrides: str, split: str | None = None):
    """Evaluate a checkpoint; returns an ``EvaluationReport`` (``stats``, ``primary``, ``table``)."""
    from centernet.engine.evaluate import evaluate_checkpoint

    cfg = _config(recipe, overrides) if (recipe is not None or overrides) else None
    return evaluate_checkpoint(weights, cfg, split=split)


def predict(weights, source: str | Path, batch_size: int = 8, calib=None, flip: bool | None = None, scales=None) -> list:
    """``Results`` for every image or video frame of ``source`` (image, folder, glob or video)."""
    from centernet.engine.predict import predict as run

    return list(run(weights, source, batch_size=batch_size, calib=calib, flip=flip, scales=scales))


def export(weights, output: str | Path | None = None, **options) -> Path:
    """Export to ONNX with decoding in the graph (see ``centernet.export.onnx.export_onnx``)."""
    from centernet.export.onnx import export_onnx

    return export_onnx(weights, output, **options)
