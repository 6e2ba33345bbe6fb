"""The Python API, mirroring the command line: ``train``, ``evaluate``, ``predict``, ``export``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from centernet.config import Config, load_config, with_overrides
from centernet.engine.evaluate import evaluate_checkpoint
from centernet.engine.predict import predict
from centernet.engine.run_folder import resume_config
from centernet.engine.trainer import train as run
from centernet.export.onnx import export_onnx

__all__ = ["evaluate", "export", "predict", "train"]


def _config(recipe: str | Path | Config | None, overrides: Sequence[str]) -> Config:
    if isinstance(recipe, Config):
        return with_overrides(recipe, list(overrides))
    return load_config(recipe, list(overrides))


def train(
    recipe: str | Path | Config | None = None, *overrides: str, resume: bool | str | Path = False, hooks: Sequence = ()
) -> dict:
    """Train a recipe (path, shipped name or ``Config``) with ``section.field=value`` overrides.

    Example: ``centernet.train("ctdet_res18_voc_70e", "data.source=my_voc", "train.epochs=10")``.
    ``resume``: ``True`` continues the run folder the experiment names; a run folder
    (``"runs/exp"``) continues that run from its own ``config.yaml`` (no recipe then; the
    overrides may change only ``config.RESUME_SAFE_FIELDS``, such as ``train.epochs``).
    ``hooks``: ``centernet.engine.hooks.TrainerHook`` objects (step, epoch-end, validation-end).
    Returns the last validation metrics and the run folder.
    """
    if isinstance(resume, (str, Path)):
        if recipe is not None:
            raise ValueError(f"resume={resume}: the run folder's config.yaml is the experiment; give no recipe")
        return run(resume_config(resume, list(overrides)), resume=True, hooks=hooks)
    return run(_config(recipe, overrides), resume=resume, hooks=hooks)


def evaluate(
    weights: str | Path,
    recipe: str | Path | Config | None = None,
    *overrides: str,
    split: str | None = None,
    save_json: str | Path | bool | None = None,
    save_kitti: str | Path | bool | None = None,
    batch_size: int = 8,
):
    """Evaluate a checkpoint, as ``centernet val``; returns an ``EvaluationReport`` (``stats``, ``primary``, ``table``).

    ``overrides`` set ``data.*`` (``"data.source=..."``, ``"data.keep_res=true"``) and ``test.*``
    (``"test.flip=true"``, ``"test.scales=[0.5,1,1.5]"``, ``"test.device=cuda"``); ``save_json`` /
    ``save_kitti`` write the original's result files (to a new path; ``True``: into a fresh
    ``runs/val``, ``runs/val2``... with an ``args.yaml``).
    """
    return evaluate_checkpoint(weights, recipe, overrides, split=split, save_json=save_json, save_kitti=save_kitti, batch_size=batch_size)


def export(weights, output: str | Path | None = None, **options) -> Path:
    """Export any task to ONNX with its decoding in the graph (see ``centernet.export.onnx.export_onnx``).

    ``int8=True, calibration_images="folder/"`` quantises the network statically to INT8; ``flip``
    puts the flip test in the graph (default: the checkpoint's ``test.flip``). Run the graph with
    ``centernet.export.OnnxDetector(path).predict(images)`` (3D: ``calib=[P2, ...]``).
    """
    return export_onnx(weights, output, **options)
