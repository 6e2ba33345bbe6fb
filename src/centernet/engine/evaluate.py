"""Validation: run a network over a data set and score it with the task's standard metric.

2D boxes: COCO AP (pycocotools; VOC mAP too for VOC data). Pose: COCO keypoint OKS AP. 3D: the
KITTI evaluator (AP11 and AP40, 2D / AOS / BEV / 3D). Each rank evaluates its share of the images;
the detections are gathered and rank 0 computes the metric.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from centernet.config import Config
from centernet.data.records import DetectionDataset, ImageRecord
from centernet.data.transforms import InputSpec, keep_res_pad
from centernet.engine.distributed import DistributedContext
from centernet.engine.predictor import Predictor
from centernet.engine.results import Results
from centernet.evaluation.coco import build_coco_ground_truth, evaluate_coco
from centernet.tasks.base import Task, final_stack


@dataclass
class EvaluationReport:
    """A task's metrics: ``stats`` by name, the headline ``primary`` value and a printable ``table``."""

    stats: dict[str, float]
    primary: float
    table: str
    detections: list[dict] = field(default_factory=list, repr=False)

    def stats_for_csv(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in self.stats.items()}


def score_coco(task: Task, data: DetectionDataset, predictions: Mapping[int, Results], keypoints: bool) -> EvaluationReport:
    """COCO box AP (plus VOC mAP on VOC data) or keypoint OKS AP, on the rows the task writes."""
    gt = build_coco_ground_truth(data.ground_truth(), data.class_names, data.category_ids, keypoints=keypoints)
    rows = coco_results(task, data, predictions)
    metrics = evaluate_coco(gt, rows, "keypoints" if keypoints else "bbox")
    title = "COCO keypoints (OKS)" if keypoints else "COCO boxes"
    stats, table = dict(metrics.stats), f"{title}, {len(data)} images\n{metrics.table}"
    if not keypoints and _is_voc(data):
        voc = _score_voc(data, predictions)
        stats["mAP_voc07"] = voc.mean_average_precision
        table += f"\n\nPascal VOC (IoU 0.5, VOC07 11-point)\n{voc.format_table()}"
    return EvaluationReport(stats, metrics.stats["AP"], table, rows)


def coco_results(task: Task, data: DetectionDataset, predictions: Mapping[int, Results]) -> list[dict]:
    """The COCO results list of ``predictions`` in record order, as the task writes it (the original's rows)."""
    rows: list[dict] = []
    for index, result in sorted(predictions.items()):
        rows += task.coco_rows(result, data.records[index].image_id, data.category_ids)
    return rows


def write_kitti_results(data: DetectionDataset, predictions: Mapping[int, Results], folder: str | Path) -> Path:
    """One ``<frame>.txt`` per record (also when empty) with its KITTI result lines (the original's ``save_results``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, result in sorted(predictions.items()):
        image_id = data.records[index].image_id
        stem = f"{int(image_id):06d}" if str(image_id).isdigit() else Path(data.records[index].path).stem
        (folder / f"{stem}.txt").write_text(result.to_kitti())
    return folder


def _is_voc(data: DetectionDataset) -> bool:
    from centernet.data.voc import find_voc_folders

    source = Path(data.source) if data.source else None
    return source is not None and source.is_dir() and find_voc_folders(source) is not None


def _score_voc(data: DetectionDataset, predictions: Mapping[int, Results]):
    from centernet.evaluation.voc import evaluate_voc

    ground_truth, detections = [], []
    for index, record in enumerate(data.records):
        trained = record.labels >= 0
        ground_truth.append({"boxes": record.boxes[trained], "labels": record.labels[trained], "difficult": record.difficult[trained]})
        result = predictions[index]
        detections.append({"boxes": result.boxes, "labels": result.labels, "scores": result.scores})
    return evaluate_voc(ground_truth, detections, data.class_names)


def score_kitti(data: DetectionDataset, predictions: Mapping[int, Results]) -> EvaluationReport:
    from centernet.data.kitti import Objects3D
    from centernet.evaluation.kitti import EVALUATED_CLASSES, METRICS, evaluate_kitti_objects

    ground_truth, detections = [], []
    for index, record in enumerate(data.records):
        ground_truth.append(_kitti_ground_truth(record))
        result = predictions.get(index)
        if result is None or result.boxes_3d is None or len(result) == 0:
            detections.append(Objects3D.empty())
            continue
        detections.append(
            dataclasses.replace(
                result.boxes_3d,
                types=[data.class_names[int(label)] for label in result.labels],
                boxes=result.boxes,
                scores=np.round(result.scores, 2),  # the original writes 2 decimals
            )
        )
    kitti = evaluate_kitti_objects(ground_truth, detections)
    stats = kitti.as_dict()
    # A class with ground truth but no detection left (all below peak_thresh) scores 0, not nothing.
    labelled = {t.lower() for record in data.records if record.objects_3d is not None for t in record.objects_3d.types}
    for class_name in sorted(labelled & set(EVALUATED_CLASSES)):
        for metric in METRICS:
            for kind in ("ap11", "ap40"):
                stats.setdefault(f"{class_name}/{metric}/moderate/{kind}", 0.0)
    primary = stats.get("car/3d/moderate/ap11", 0.0) / 100.0
    wanted = {k: v for k, v in stats.items() if k.endswith("moderate/ap11") or k.endswith("moderate/ap40")}
    return EvaluationReport(wanted, primary, kitti.format_table())


def _kitti_ground_truth(record: ImageRecord):
    if record.objects_3d is None:
        raise ValueError(f"{record.path}: 3D evaluation needs KITTI labels with 3D fields")
    return dataclasses.replace(record.objects_3d, boxes=record.boxes)


def evaluate_network(
    network: torch.nn.Module,
    task: Task,
    dataset,
    cfg: Config,
    ctx: DistributedContext | None = None,
    save_images_to: Path | None = None,
) -> EvaluationReport:
    """Validate ``network`` on a ``TrainingDataset`` (its records); rank 0 scores, all ranks get the report.

    The validation pass of training: the experiment's ``Predictor`` (``test.*`` options, the network
    left on its device), each rank detecting its share of the images.
    """
    ctx = ctx or DistributedContext()
    data: DetectionDataset = dataset.data
    predictor = Predictor.from_config(
        network, task, InputSpec.from_config(cfg), data.class_names, data.category_ids, cfg.test,
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
    from centernet.engine.visualize import draw_heatmap_overlay
    from centernet.tasks.common import get_affine_transform

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
        inverse = get_affine_transform(meta.center, meta.scale, 0, meta.output_hw[::-1], inv=True)
        peak = cv2.warpAffine(heat.max(0), inverse, (image.shape[1], image.shape[0]))
        drawn = result.plot(score_thresh=0.3)
        overlay = draw_heatmap_overlay(image, peak[None])
        cv2.imwrite(str(folder / f"val_{index:03d}.jpg"), np.concatenate([drawn, overlay], axis=1))


def experiment_for(detector, weights: str | Path, recipe: str | Path | Config | None = None, overrides: Sequence[str] = ()) -> Config:
    """The experiment a checkpoint is evaluated or run with: a recipe, or the checkpoint's own.

    ``recipe``: a ``Config``, a YAML path or a shipped recipe name. Without one, our checkpoint's
    stored experiment is used; an original ``.pth`` carries none, so the original's defaults for the
    task its heads say (input size, normalisation) are. ``overrides`` (``section.field=value``)
    apply last, so ``data.input_size``, ``data.keep_res`` and every ``test.*`` are honoured.
    """
    from centernet.config import load_config, with_overrides
    from centernet.models.checkpoint import CheckpointError, load_checkpoint

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
            defaults = {
                "task": detector.task.name,
                "model": {"arch": detector.arch},
                "data": {
                    "input_size": list(detector.input_size),
                    "keep_res": detector.spec.input_hw is None,
                    "mean": list(detector.spec.mean),
                    "std": list(detector.spec.std),
                    "channel_order": detector.spec.channel_order,
                },
                "test": {"K": detector.K, "score_thresh": detector.score_thresh, "flip": detector.flip_test},
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
    save_json: str | Path | None = None,
    save_kitti: str | Path | None = None,
    batch_size: int = 8,
) -> EvaluationReport:
    """``centernet val``: evaluate a checkpoint (ours or an original ``.pth``) on a data set split.

    The experiment comes from ``experiment_for`` (a recipe, or the checkpoint's own); ``split``
    overrides its validation split. ``save_json`` writes the COCO results list the original's
    ``test.py`` writes (``results.json``); ``save_kitti`` a folder of KITTI ``<frame>.txt`` files.
    """
    from centernet.data.check import require_task_annotations
    from centernet.detector import CenterNet
    from centernet.engine.dataset import load_split

    detector = CenterNet.from_checkpoint(weights)
    cfg = experiment_for(detector, weights, recipe, overrides)
    named = [o.split("=", 1)[0].strip() for o in overrides]
    if "data.source" in named and "data.val_source" not in named:
        cfg.data.val_source = None  # the source named on the command line is the one scored
    data = load_split(cfg, "val", split)
    require_task_annotations(data, detector.task.name)
    if len(data.class_names) != detector.num_classes:
        raise ValueError(f"{weights}: trained for {detector.num_classes} classes, data set {cfg.data.source} has {len(data.class_names)}")
    predictor = Predictor.from_config(
        detector.network, detector.task, detector_spec(detector, cfg), data.class_names, data.category_ids, cfg.test,
        batch_size=batch_size,
    )
    predictions = predictor.detect_dataset(data, range(len(data)), progress="val")
    if save_kitti is not None:
        if detector.task.result_format != "kitti":
            raise ValueError(f"--save-kitti: a {detector.task.name} network gives no 3D results; use --save-json")
        write_kitti_results(data, predictions, save_kitti)
    if save_json is not None:
        Path(save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(save_json).write_text(json.dumps(coco_results(detector.task, data, predictions)))
    return detector.task.score(data, predictions)
