"""The contract every task module (2D boxes, pose, 3D) implements, and the per-image warp metadata.

Data flow in training: ``Task.training_sample`` runs the task's own augmentation pipeline
(``Task.augment``: which steps of ``data.augment.TrainAugmentation`` apply, and in which
order their random numbers are drawn), which warps the image and returns its ``ImageMeta``;
``Task.encode`` turns the image's annotations into fixed-size target arrays with that meta; the network's raw head maps
go to ``Task.loss`` in training, or to ``Task.decode`` then ``Task.post_process`` at inference.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from centernet.data.categories import numbered_categories
from centernet.data.geometry import ImageMeta
from centernet.data.results import Results
from centernet.evaluation.scoring import EvaluationReport, score_coco
from centernet.tasks.tta import MAX_PER_IMAGE, merge_ctdet

if TYPE_CHECKING:
    from centernet.data.records import DetectionDataset
    from centernet.tasks.decoding import ExportDecoder
    from centernet.data.augment import AugmentedImage, AugmentRandom, TrainAugmentation

HeadOutputs = dict[str, torch.Tensor]

# Per-image ground-truth rows ``encode`` returns for debugging, as the original's ``meta``; their
# length varies per image, so they are never batched.
DEBUG_ONLY_KEYS = frozenset({"gt_det"})


# Task name -> module defining it (each module holds one ``Task`` subclass with that ``name``).
TASK_MODULES = {"ctdet": "centernet.tasks.ctdet", "multi_pose": "centernet.tasks.multi_pose", "ddd": "centernet.tasks.ddd"}


def final_stack(outputs: HeadOutputs | list[HeadOutputs]) -> HeadOutputs:
    """The head maps used at inference: the last stack of a multi-stack network (Hourglass)."""
    return outputs[-1] if isinstance(outputs, list) else outputs


class Task(ABC):
    """One CenterNet task: its heads, target encoder, loss, decoder and post-processor.

    Subclasses set ``name`` and ``loss_weights`` (named loss -> weight, in the order the original
    sums them) and implement the abstract methods.

    Args:
        num_classes: number of object classes (channels of the centre heat map ``hm``).
    """

    name: ClassVar[str]
    # Whether the original tests this task at several scales (``--test_scales``) and with a flip.
    multi_scale: ClassVar[bool] = True
    flip_test: ClassVar[bool] = True
    # Whether inference needs each image's camera matrix (``meta.calib``).
    needs_calib: ClassVar[bool] = False
    # The file the original's ``run_eval`` writes: ``"coco"`` (results.json) or ``"kitti"`` (<frame>.txt).
    result_format: ClassVar[str] = "coco"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.loss_weights: dict[str, float] = {}
        self.disabled_heads: frozenset[str] = frozenset()  # optional heads switched off (the original's --not_*)

    @classmethod
    @abstractmethod
    def head_channels(cls, num_classes: int) -> dict[str, int]:
        """Head name -> output channels, in the original's options order (``hm`` first)."""

    @classmethod
    def default_categories(cls, num_classes: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Class names and category ids for a checkpoint that carries none (this default numbers them)."""
        return numbered_categories(num_classes)

    def require_annotations(self, dataset: DetectionDataset) -> None:
        """Refuses a data set without what this task trains and is scored on (before any step).

        Boxes and labels every data set has; tasks needing more (keypoints, 3D) override this.

        Raises:
            DataFormatError: naming the source and, where one is at fault, the first image.
        """

    @property
    def heads(self) -> dict[str, int]:
        """This task's heads for its ``num_classes``, without the ones switched off."""
        return {name: c for name, c in self.head_channels(self.num_classes).items() if name not in self.disabled_heads}

    @classmethod
    def options_for_heads(cls, heads: Mapping[str, int], num_classes: int) -> dict[str, Any]:
        """Constructor options that give a network with ``heads`` (optional heads, head widths).

        Lets a checkpoint rebuild its task from the heads it stores; this default has none.
        """
        return {}

    def augment(self, image: np.ndarray, augmentation: TrainAugmentation, rng: AugmentRandom) -> AugmentedImage:
        """This task's training augmentation of one image (the 2D pipeline; tasks override it).

        Draw order (the original's ctdet data set): the window's random crop or shift/scale,
        then the flip test, then the colour jitter's shuffle, three factors and lighting vector.

        Args:
            image: ``[H, W, 3]`` uint8 BGR source image.
            augmentation: the amplitudes and steps.
            rng: the random source every draw comes from.
        """
        height, width = image.shape[:2]
        center, window = augmentation.square_window(height, width)
        window = augmentation.jitter_window(center, window, height, width, rng)
        flipped = augmentation.draw_flip(rng)
        return augmentation.render(image, center, window, rng, flipped=flipped)

    def training_sample(
        self,
        image: np.ndarray,
        annotations: Mapping[str, np.ndarray],
        augmentation: TrainAugmentation,
        rng: AugmentRandom,
    ) -> dict[str, np.ndarray]:
        """One training sample: ``input [3, h, w]`` float32 plus the targets of ``encode``.

        Args:
            image: ``[H, W, 3]`` uint8 BGR source image.
            annotations: its annotations in source pixels, not mirrored (see ``encode``).
            augmentation: the experiment's augmentation settings.
            rng: the random source (``NumpyAugmentRandom`` in training, a replay in tests).
        """
        sample = self.augment(image, augmentation, rng)
        return {"input": sample.input, **self.encode(annotations, sample.meta)}

    @abstractmethod
    def encode(self, annotations: Mapping[str, np.ndarray], meta: ImageMeta) -> dict[str, np.ndarray]:
        """Training targets of one sample, fixed-size arrays keyed like the original's batch.

        Args:
            annotations: the source image's annotations in source pixels, NOT mirrored
                (``boxes [N, 4]`` xyxy, ``labels [N]`` 0-based, plus task-specific fields);
                the task mirrors them itself when ``meta.flipped``.
            meta: the warp that produced the network input.
        """

    @abstractmethod
    def stack_losses(self, output: HeadOutputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unweighted named losses of one stack's raw head maps against the batch targets."""

    def loss(
        self, outputs: HeadOutputs | list[HeadOutputs], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and named losses, each averaged over the stacks as the original.

        Args:
            outputs: raw head maps ``name -> [B, C, H, W]``, or a list with one dict per stack.
            batch: collated targets from ``encode`` (tensors with a leading batch dimension).

        Returns:
            ``(total, {"loss": total, "<name>_loss": value, ...})``.
        """
        stacks = outputs if isinstance(outputs, list) else [outputs]
        named: dict[str, torch.Tensor] = {}
        for output in stacks:
            for key, value in self.stack_losses(output, batch).items():
                named[key] = named.get(key, 0) + value / len(stacks)
        total = sum(self.loss_weights[key] * value for key, value in named.items())
        return total, {"loss": total, **named}

    @abstractmethod
    def decode(self, outputs: HeadOutputs | list[HeadOutputs], K: int = 100, flip: bool = False) -> torch.Tensor:
        """Detections ``[B, K, D]`` in output-map pixels from raw head maps (activation included).

        With ``flip`` the batch holds ``B`` images followed by their ``B`` mirrored copies
        (``[2B, C, H, W]``; the original's ``[image, mirror]`` pair when ``B = 1``) and the result
        has ``B`` rows of detections.
        """

    @abstractmethod
    def post_process(self, dets: torch.Tensor | np.ndarray, meta: ImageMeta) -> Any:
        """One image's decoded rows ``[K, D]`` mapped to source-image pixels (task-specific form)."""

    def detections(self, results: Any) -> dict[str, np.ndarray]:
        """``post_process`` results as flat arrays (the detector's per-image output).

        This default reads the original's per-class layout ``{class_id (1-based): [n, 5+]}`` with
        rows starting ``[x1, y1, x2, y2, score]``; tasks with other rows override it.

        Returns:
            ``boxes [N, 4]`` float32 source pixels, ``scores [N]`` float32, ``labels [N]`` int64
            0-based; rows in class order, then in decode order.
        """
        ids = sorted(results)
        rows = [np.asarray(results[c], dtype=np.float32) for c in ids]
        width = max((r.shape[1] for r in rows if r.ndim == 2), default=5)
        rows = [r.reshape(-1, width) for r in rows]  # empty classes may come as [] or [0, 5]
        stacked = np.concatenate(rows) if rows else np.zeros((0, width), np.float32)
        labels = np.concatenate([np.full(len(r), c - 1, dtype=np.int64) for c, r in zip(ids, rows)] + [np.zeros(0, np.int64)])
        return {"boxes": stacked[:, :4], "scores": stacked[:, 4], "labels": labels}

    # ------------------------------------------------------------------ test-time behaviour
    def merge_outputs(self, per_scale: Sequence[Any], nms: bool = False, max_per_image: int = MAX_PER_IMAGE) -> Any:
        """One image's final detections from its per-scale ``post_process`` results (source pixels).

        The original detector's ``merge_outputs``: this default is ctdet's (per class, soft-NMS with
        several scales or ``nms``, then the ``max_per_image`` cut keeping ties); tasks override it.
        """
        return merge_ctdet(per_scale, self.num_classes, max_per_image=max_per_image, nms=nms)

    def to_results(
        self,
        merged: Any,
        names: Sequence[str],
        image: np.ndarray | None = None,
        path: Path | None = None,
        calib: np.ndarray | None = None,
    ) -> Results:
        """``merge_outputs`` of one image as ``Results`` (best first); this default reads per-class 2D rows."""
        found = self.detections(merged)
        order = np.argsort(-found["scores"], kind="stable")
        return Results(found["boxes"][order], found["scores"][order], found["labels"][order], names, image, path)

    def coco_rows(self, result: Results, image_id: int, category_ids: Sequence[int]) -> list[dict]:
        """COCO results rows of one image as the original's ``convert_eval_format`` writes them."""
        return result.to_coco(image_id, category_ids)

    def score(self, data: DetectionDataset, predictions: Mapping[int, Results]) -> EvaluationReport:
        """This task's standard metric of ``predictions`` (record index -> results): COCO box AP (+ VOC mAP)."""
        return score_coco(self, data, predictions, keypoints=False)


    # ------------------------------------------------------------------ deployment
    def export_decoder(self, K: int = 100, flip: bool = False) -> ExportDecoder:
        """The module that decodes this task's raw head maps inside an exported graph (``tasks.decoding.ExportDecoder``)."""
        raise NotImplementedError(f"{self.name} defines no in-graph decoder")

    def from_export(self, outputs: Mapping[str, np.ndarray]) -> Any:
        """One image's outputs of ``export_decoder`` (``name -> [K, ...]``) in ``post_process``'s form.

        What ``Predictor.finish`` merges into ``Results``, as for the PyTorch path.
        """
        raise NotImplementedError(f"{self.name} defines no in-graph decoder")


def get_task(name: str, num_classes: int, **options: Any) -> Task:
    """Build the task called ``name`` (``"ctdet"``, ``"multi_pose"``, ``"ddd"``).

    Its module is imported on demand, so a task's dependencies load only when it is used.

    Args:
        name: task name.
        num_classes: classes of the centre heat map.
        options: keyword arguments of the task's constructor (loss weights, ``max_objects``...).
    """
    return task_class(name)(num_classes, **options)


def task_class(name: str) -> type[Task]:
    """The ``Task`` subclass called ``name`` (its module imported on demand)."""
    if name not in TASK_MODULES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_MODULES)}")
    module = importlib.import_module(TASK_MODULES[name])
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Task) and getattr(obj, "name", None) == name:
            return obj
    raise ValueError(f"{TASK_MODULES[name]} defines no Task subclass named {name!r}")


def task_for_heads(name: str, num_classes: int, heads: Mapping[str, int]) -> Task:
    """The task ``name`` configured to drive a network with exactly ``heads`` (from a checkpoint)."""
    cls = task_class(name)
    return cls(num_classes, **cls.options_for_heads(heads, num_classes))
