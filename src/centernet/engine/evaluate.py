"""Validation: run a network over a data set and score it with the task's standard metric.

2D boxes: COCO AP (pycocotools; VOC mAP too for VOC data). Pose: COCO keypoint OKS AP. 3D: the
KITTI evaluator (AP11 and AP40, 2D / AOS / BEV / 3D). Each rank evaluates its share of the images;
the detections are gathered and rank 0 computes the metric.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from centernet.config import Config
from centernet.data.records import DetectionDataset, ImageRecord
from centernet.data.transforms import InputSpec
from centernet.engine.distributed import DistributedContext
from centernet.engine.results import Results, results_from_task_output
from centernet.evaluation.coco import build_coco_ground_truth, evaluate_coco
from centernet.tasks.base import ImageMeta, Task, final_stack


@dataclass
class EvaluationReport:
    """A task's metrics: ``stats`` by name, the headline ``primary`` value and a printable ``table``."""

    stats: dict[str, float]
    primary: float
    table: str
    detections: list[dict] = field(default_factory=list, repr=False)

    def stats_for_csv(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in self.stats.items()}


@torch.no_grad()
def predict_records(
    network: torch.nn.Module,
    task: Task,
    data: DetectionDataset,
    spec: InputSpec,
    indices: Sequence[int],
    K: int = 100,
    flip: bool = False,
    batch_size: int = 8,
    num_workers: int = 0,
    device: torch.device | None = None,
    keep_images: bool = False,
) -> dict[int, Results]:
    """Detections of the records ``indices`` in original image pixels, keyed by record index."""
    device = device or next(network.parameters()).device
    was_training = network.training
    network.eval()
    loader = DataLoader(
        Subset(_InferenceInputs(data, spec), list(indices)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate_inference,
    )
    out: dict[int, Results] = {}
    for inputs, metas, idxs, images in loader:
        calibs = [data.records[i].calib for i in idxs]
        processed = detect_batch(network, task, inputs.to(device), metas, K=K, flip=flip, calibs=calibs)
        for index, image, calib, item in zip(idxs, images, calibs, processed):
            out[index] = results_from_task_output(
                task.name, item, data.class_names, image=image if keep_images else None, path=data.records[index].path, calib=calib
            )
    network.train(was_training)
    return out


class _InferenceInputs(torch.utils.data.Dataset):
    def __init__(self, data: DetectionDataset, spec: InputSpec) -> None:
        self.data, self.spec = data, spec

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image = self.data.load_image(index)
        inp, meta = self.spec.inference_input(image)
        return inp, meta, index, image


def _collate_inference(items):
    inputs, metas, idxs, images = zip(*items)
    shapes = {x.shape for x in inputs}
    if len(shapes) > 1:  # keep-res images of different sizes: pad to a common canvas
        h = max(s[1] for s in shapes)
        w = max(s[2] for s in shapes)
        inputs = [np.pad(x, ((0, 0), (0, h - x.shape[1]), (0, w - x.shape[2]))) for x in inputs]
    return torch.from_numpy(np.stack(inputs)), list(metas), list(idxs), list(images)


@torch.no_grad()
def detect_batch(
    network: torch.nn.Module,
    task: Task,
    inputs: torch.Tensor,
    metas: Sequence[ImageMeta],
    K: int = 100,
    flip: bool = False,
    calibs: Sequence[np.ndarray | None] | None = None,
) -> list:
    """Network, decoding and post-processing of one normalised batch ``[B, 3, H, W]``.

    Returns each image's ``task.post_process`` output in source-image pixels; ``calibs`` give 3D
    tasks each image's camera matrix.
    """
    if flip:
        inputs = torch.cat([inputs, inputs.flip(3)])
    dets = task.decode(final_stack(network(inputs)), K=K, flip=flip)
    processed = []
    for row, meta in enumerate(metas):
        calib = calibs[row] if calibs is not None else None
        if calib is not None:
            meta = dataclasses.replace(meta, calib=np.asarray(calib, dtype=np.float32))
        processed.append(task.post_process(dets[row], meta))
    return processed


def score(task_name: str, data: DetectionDataset, predictions: dict[int, Results]) -> EvaluationReport:
    """The task's standard metric of ``predictions`` (record index -> results) against ``data``."""
    if task_name == "ddd":
        return _score_kitti(data, predictions)
    keypoints = task_name == "multi_pose"
    gt = build_coco_ground_truth(data.ground_truth(), data.class_names, data.category_ids, keypoints=keypoints)
    rows: list[dict] = []
    for index, result in sorted(predictions.items()):
        rows += result.to_coco(data.records[index].image_id, data.category_ids)
    metrics = evaluate_coco(gt, rows, "keypoints" if keypoints else "bbox")
    title = "COCO keypoints (OKS)" if keypoints else "COCO boxes"
    stats, table = dict(metrics.stats), f"{title}, {len(data)} images\n{metrics.table}"
    if not keypoints and _is_voc(data):
        voc = _score_voc(data, predictions)
        stats["mAP_voc07"] = voc.mean_average_precision
        table += f"\n\nPascal VOC (IoU 0.5, VOC07 11-point)\n{voc.format_table()}"
    return EvaluationReport(stats, metrics.stats["AP"], table, rows)


def _is_voc(data: DetectionDataset) -> bool:
    from centernet.data.voc import find_voc_folders

    source = Path(data.source) if data.source else None
    return source is not None and source.is_dir() and find_voc_folders(source) is not None


def _score_voc(data: DetectionDataset, predictions: dict[int, Results]):
    from centernet.evaluation.voc import evaluate_voc

    ground_truth, detections = [], []
    for index, record in enumerate(data.records):
        trained = record.labels >= 0
        ground_truth.append({"boxes": record.boxes[trained], "labels": record.labels[trained], "difficult": record.difficult[trained]})
        result = predictions[index]
        detections.append({"boxes": result.boxes, "labels": result.labels, "scores": result.scores})
    return evaluate_voc(ground_truth, detections, data.class_names)


def _score_kitti(data: DetectionDataset, predictions: dict[int, Results]) -> EvaluationReport:
    from centernet.data.kitti import Objects3D
    from centernet.evaluation.kitti import evaluate_kitti_objects

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
    """Validate ``network`` on a ``TrainingDataset`` (its records); rank 0 scores, all ranks get the report."""
    ctx = ctx or DistributedContext()
    data: DetectionDataset = dataset.data
    spec = InputSpec.from_config(cfg)
    indices = list(range(ctx.rank, len(data), ctx.world_size))
    shard = predict_records(
        network, task, data, spec, indices, K=cfg.test.K, flip=cfg.test.flip, batch_size=max(1, cfg.train.batch_size // 2)
    )
    merged: dict[int, Results] = {}
    for part in ctx.gather(shard):
        merged.update(part)
    report = score(task.name, data, merged) if ctx.is_main else None
    if ctx.is_main and save_images_to is not None and cfg.train.save_images:
        draw_examples(network, task, data, spec, save_images_to, cfg.train.save_images)
    return ctx.broadcast(report)


def draw_examples(network, task: Task, data: DetectionDataset, spec: InputSpec, folder: Path, count: int) -> None:
    """Save the first ``count`` validation images with predictions and their centre-heat-map overlay."""
    indices = list(range(min(count, len(data))))
    predictions = predict_records(network, task, data, spec, indices, keep_images=True)
    device = next(network.parameters()).device
    folder.mkdir(parents=True, exist_ok=True)
    for index in indices:
        result = predictions[index]
        image = result.image
        inp, meta = spec.inference_input(image)
        with torch.no_grad():
            network.eval()
            heat = torch.sigmoid(final_stack(network(torch.from_numpy(inp)[None].to(device)))["hm"][0]).cpu().numpy()
        from centernet.engine.visualize import draw_heatmap_overlay
        from centernet.tasks.common import get_affine_transform

        # Heat map back into image pixels through the inverse of the output warp.
        inverse = get_affine_transform(meta.center, meta.scale, 0, meta.output_hw[::-1], inv=True)
        peak = cv2.warpAffine(heat.max(0), inverse, (image.shape[1], image.shape[0]))
        drawn = result.plot(score_thresh=0.3)
        overlay = draw_heatmap_overlay(image, peak[None])
        cv2.imwrite(str(folder / f"val_{index:03d}.jpg"), np.concatenate([drawn, overlay], axis=1))


def evaluate_checkpoint(
    weights: str | Path,
    cfg: Config | None = None,
    split: str | None = None,
    save_json: str | Path | None = None,
    batch_size: int = 8,
) -> EvaluationReport:
    """``centernet val``: evaluate a checkpoint (ours or an original ``.pth``) on a data set split.

    Without ``cfg`` the experiment stored in our checkpoint is used (an original ``.pth`` carries
    none: give a recipe). ``split`` overrides the recipe's validation split.
    """
    from centernet.data.check import require_task_annotations
    from centernet.detector import CenterNet
    from centernet.engine.dataset import load_split
    from centernet.models.checkpoint import load_checkpoint

    detector = CenterNet.from_checkpoint(weights)
    if cfg is None:
        stored = load_checkpoint(weights).get("config") if str(weights).endswith(".pt") else None
        if stored is None:
            raise ValueError(f"{weights}: holds no experiment config; name a recipe, e.g. `centernet val configs/ctdet_res18_coco_140e.yaml --weights ...`")
        cfg = Config.from_dict(stored, str(weights))
    if split is not None:
        cfg.data.val_split = split
    data = load_split(cfg, "val")
    if detector.task.name != cfg.task:
        raise ValueError(f"{weights}: a {detector.task.name} model, but the experiment is {cfg.task} (task=...); evaluate it on {detector.task.name} data")
    require_task_annotations(data, detector.task.name)
    if len(data.class_names) != detector.num_classes:
        raise ValueError(f"{weights}: trained for {detector.num_classes} classes, data set {cfg.data.source} has {len(data.class_names)}")
    predictions = predict_records(
        detector.network, detector.task, data, detector.spec, range(len(data)), K=cfg.test.K, flip=cfg.test.flip, batch_size=batch_size
    )
    report = score(detector.task.name, data, predictions)
    if save_json is not None:
        Path(save_json).write_text(json.dumps(report.detections))
    return report
