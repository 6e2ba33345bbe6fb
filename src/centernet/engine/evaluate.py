"""Validation: run a network over a data set and score it with the task's standard metric.

2D boxes: COCO AP (pycocotools; VOC mAP too for VOC data). Pose: COCO keypoint OKS AP. 3D: the
KITTI evaluator (AP11 and AP40, 2D / AOS / BEV / 3D). Each rank evaluates its share of the images;
the detections are gathered and rank 0 computes the metric.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from centernet.config import Config, load_config, with_overrides
from centernet.data.kitti import write_kitti_results
from centernet.data.records import DetectionDataset, ImageRecord
from centernet.data.results import Results
from centernet.data.transforms import InputSpec, keep_res_pad
from centernet.data.visualize import draw_heatmap_overlay
from centernet.engine.dataset import load_split
from centernet.engine.distributed import DistributedContext
from centernet.evaluation.scoring import EvaluationReport, coco_results
from centernet.models.checkpoint import CheckpointError, load_checkpoint
from centernet.models.detector import CenterNet
from centernet.models.predictor import Predictor
from centernet.tasks.base import final_stack
from centernet.engine.outputs import ValOutputs, folder_overrides, write_image, write_text


def evaluate_network(
    detector: CenterNet,
    dataset,
    cfg: Config,
    ctx: DistributedContext | None = None,
    save_images_to: Path | None = None,
) -> EvaluationReport:
    """Validate ``detector`` on a ``TrainingDataset`` (its records); rank 0 scores, all ranks get the report.

    The validation pass of training: the detector's ``Predictor`` with the experiment's ``test.*``
    options (the network left on its device), each rank detecting its share of the images.
    """
    ctx = ctx or DistributedContext()
    data: DetectionDataset = dataset.data
    task = detector.task
    predictor = Predictor.for_detector(
        detector, cfg.test,
        # compile=False: the network changes every epoch, a compiled copy would serve one pass;
        # channels_last=False: the network keeps the memory format it trains in (train.channels_last).
        device=None, batch_size=max(1, cfg.train.batch_size // 2), compile=False, channels_last=False,
    )
    shard = predictor.detect_dataset(data, range(ctx.rank, len(data), ctx.world_size), progress="validate" if ctx.is_main else None)
    merged: dict[int, Results] = {}
    for part in ctx.gather(shard):
        merged.update(part)
    report = task.score(data, merged) if ctx.is_main else None
    if ctx.is_main and save_images_to is not None and cfg.train.save_images:
        draw_examples(predictor, data, save_images_to, cfg.train.save_images)
    return ctx.broadcast(report)


def draw_examples(predictor: Predictor, data: DetectionDataset, folder: Path, count: int) -> None:
    """Save the first ``count`` validation images with predictions and their centre-heat-map overlay."""
    indices = list(range(min(count, len(data))))
    predictions = predictor.detect_dataset(data, indices, keep_images=True)
    network, spec = predictor.network, predictor.spec
    device = predictor.device
    folder.mkdir(parents=True, exist_ok=True)
    for index in indices:
        result = predictions[index]
        image = result.image
        inp, meta = spec.inference_input(image)
        was_training = network.training
        with torch.no_grad():
            network.eval()
            heat = torch.sigmoid(final_stack(network(torch.from_numpy(inp)[None].to(device)))["hm"][0]).float().cpu().numpy()
        network.train(was_training)
        # Heat map back into image pixels through the inverse of the output warp.
        inverse = meta.output_transform(inv=True)
        peak = cv2.warpAffine(heat.max(0), inverse, (image.shape[1], image.shape[0]))
        drawn = result.plot(score_thresh=0.3)
        overlay = draw_heatmap_overlay(image, peak[None])
        write_image(folder / f"val_{index:03d}.jpg", np.concatenate([drawn, overlay], axis=1))


def experiment_for(detector, weights: str | Path, recipe: str | Path | Config | None = None, overrides: Sequence[str] = ()) -> Config:
    """The experiment a checkpoint is evaluated or run with: a recipe, or the checkpoint's own.

    ``recipe``: a ``Config``, a YAML path or a shipped recipe name. Without one, our checkpoint's
    stored experiment is used; an original ``.pth`` carries none, so the original's defaults for the
    task its heads say (input size, normalisation) are. ``overrides`` (``section.field=value``)
    apply last, so ``data.input_size``, ``data.keep_res`` and every ``test.*`` are honoured.
    """
    overrides = list(overrides)
    if isinstance(recipe, Config):
        cfg = with_overrides(recipe, overrides)
    elif recipe is not None:
        cfg = load_config(recipe, overrides)
    else:
        stored = None
        if isinstance(weights, (str, Path)):
            try:
                stored = load_checkpoint(weights).get("config")
            except CheckpointError:
                stored = None
        if stored is not None:
            cfg = with_overrides(Config.from_dict(stored, str(weights)), overrides)
        else:
            meta = detector.metadata()
            defaults = {
                "task": meta["task"],
                "model": {"arch": meta["arch"]},
                "data": {key: meta[key] for key in ("input_size", "keep_res", "mean", "std", "channel_order")},
                "test": {"K": meta["K"], "score_thresh": meta["score_thresh"], "flip": meta["flip_test"]},
            }
            cfg = with_overrides(Config.from_dict(defaults, str(weights)), overrides)
    if cfg.task != detector.task.name:
        raise ValueError(f"{weights}: a {detector.task.name} network (from its heads), but the experiment is {cfg.task}")
    return cfg


def detector_spec(detector, cfg: Config) -> InputSpec:
    """The experiment's input pre-processing (``data.*``), padded as the checkpoint's architecture needs."""
    return dataclasses.replace(InputSpec.from_config(cfg), pad=keep_res_pad(detector.arch))


def evaluate_checkpoint(
    weights: str | Path,
    recipe: str | Path | Config | None = None,
    overrides: Sequence[str] = (),
    split: str | None = None,
    save_json: str | Path | bool | None = None,
    save_kitti: str | Path | bool | None = None,
    batch_size: int = 8,
) -> EvaluationReport:
    """``centernet val``: evaluate a checkpoint (ours or an original ``.pth``) on a data set split.

    The experiment comes from ``experiment_for`` (a recipe, or the checkpoint's own); ``split``
    overrides its validation split. ``save_json`` writes the COCO results list the original's
    ``test.py`` writes (``results.json``); ``save_kitti`` a folder of KITTI ``<frame>.txt`` files.
    ``True`` for either puts it in a fresh run folder (``runs/val``, ``runs/val2``..., or
    ``project=`` / ``name=`` among the overrides) with an ``args.yaml`` of the command and options;
    a path given must be new (a file) or empty (a folder) unless ``on_existing_run=overwrite``
    (``engine.outputs.ValOutputs``, checked before the model loads).
    """
    chosen, overrides = folder_overrides(overrides)
    outputs = ValOutputs(save_json, save_kitti, chosen)
    detector = CenterNet.from_checkpoint(weights)
    cfg = experiment_for(detector, weights, recipe, overrides)
    named = [o.split("=", 1)[0].strip() for o in overrides]
    if "data.source" in named and "data.val_source" not in named:
        cfg.data.val_source = None  # the source named on the command line is the one scored
    data = load_split(cfg, "val", split)
    detector.task.require_annotations(data)
    if len(data.class_names) != detector.num_classes:
        raise ValueError(f"{weights}: trained for {detector.num_classes} classes, data set {cfg.data.source} has {len(data.class_names)}")
    predictor = Predictor.from_config(
        detector.network, detector.task, detector_spec(detector, cfg), data.class_names, data.category_ids, cfg.test,
        batch_size=batch_size,
    )
    if save_kitti not in (None, False) and detector.task.result_format != "kitti":
        raise ValueError(f"--save-kitti: a {detector.task.name} network gives no 3D results; use --save-json")
    predictions = predictor.detect_dataset(data, range(len(data)), progress="val")
    outputs.open({"weights": str(weights), "split": split, "batch_size": batch_size, "overrides": list(overrides),
                  "data": cfg.to_dict()["data"], "test": cfg.to_dict()["test"]})
    if outputs.save_kitti is not None:
        frames = {_frame_id(data.records[i]): predictions[i].kitti_objects() for i in sorted(predictions)}
        write_kitti_results(outputs.save_kitti, frames)
    if outputs.save_json is not None:
        write_text(outputs.save_json, json.dumps(coco_results(detector.task, data, predictions)))
    return detector.task.score(data, predictions)


def _frame_id(record: ImageRecord) -> int | str:
    """The KITTI result file of a record: its numeric image id, else its image's name."""
    return int(record.image_id) if str(record.image_id).isdigit() else Path(record.path).stem
