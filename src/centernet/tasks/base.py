"""The contract every task module (2D boxes, pose, 3D) implements, and the per-image warp metadata.

Data flow in training: ``Task.training_sample`` runs the task's own augmentation pipeline
(``Task.augment``: which steps of ``data.augment.TrainAugmentation`` apply, and in which
order their random numbers are drawn), which warps the image and returns its ``ImageMeta``;
``Task.encode`` turns the image's annotations into fixed-size target arrays with that meta; the network's raw head maps
go to ``Task.loss`` in training, or to ``Task.decode`` then ``Task.post_process`` at inference.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from centernet.config import ConfigError, build_dataclass
from centernet.data.categories import numbered_categories
from centernet.data.geometry import ImageMeta
from centernet.data.results import Results
from centernet.evaluation.scoring import EvaluationReport, score_coco
from centernet.tasks.tta import MAX_PER_IMAGE, merge_ctdet

if TYPE_CHECKING:
    from centernet.data.records import DetectionDataset
    from centernet.tasks.decoding import ExportDecoder
    from centernet.data.augment import AugmentedImage, AugmentRandom, TrainAugmentation
    from centernet.data.records import DetectionDataset

HeadOutputs = dict[str, torch.Tensor]

# Per-image ground-truth rows ``encode`` returns for debugging, as the original's ``meta``; their
# length varies per image, so they are never batched.
DEBUG_ONLY_KEYS = frozenset({"gt_det"})


def final_stack(outputs: HeadOutputs | list[HeadOutputs]) -> HeadOutputs:
    """The head maps used at inference: the last stack of a multi-stack network (Hourglass)."""
    return outputs[-1] if isinstance(outputs, list) else outputs


@dataclass
class TaskOptions:
    """A task's own switches (a recipe's ``task_options``); this one, for tasks that have none, is empty."""


class Task(ABC):
    """One CenterNet task: its heads, target encoder, loss, decoder and post-processor.

    Subclasses set ``name`` and ``default_loss_weights`` (named loss -> weight, in the order the
    original sums them), implement the abstract methods and register with
    ``tasks.registry.register_task``; the class attributes below hold the rest of their knowledge.

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
    # Heads a network of this task may lack (switched off by an option); the others it always has.
    optional_heads: ClassVar[frozenset[str]] = frozenset()
    # Config fields an experiment naming this task gets where it leaves them out (section -> field ->
    # value), e.g. the data set's input size and normalisation; also a metadata-less checkpoint's input.
    config_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # The dataclass of this task's switches (``task_options`` of a recipe) and the constructor
    # argument that caps the objects encoded per image (``train.max_objects``).
    options_class: ClassVar[type] = TaskOptions
    object_cap_option: ClassVar[str] = "max_objects"

    # Named loss -> weight, in the order the original sums the terms (the paper's values).
    default_loss_weights: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        num_classes: int,
        loss_weights: Mapping[str, float] | None = None,
        switched_on: Mapping[str, bool] | None = None,
    ) -> None:
        """``loss_weights`` override ``default_loss_weights``; ``switched_on`` says, per optional
        head, whether the network has it (the original's ``--not_*`` switch it off)."""
        self.num_classes = num_classes
        self.loss_weights: dict[str, float] = {**self.default_loss_weights, **(loss_weights or {})}
        self.disabled_heads = frozenset(name for name, on in (switched_on or {}).items() if not on)

    @classmethod
    @abstractmethod
    def head_channels(cls, num_classes: int) -> dict[str, int]:
        """Head name -> output channels, in the original's options order (``hm`` first)."""

    @classmethod
    def from_config(
        cls,
        num_classes: int,
        options: Mapping[str, Any] | None = None,
        max_objects: int | None = None,
        loss_weights: Mapping[str, float] | None = None,
    ) -> Task:
        """The task an experiment describes: its ``task_options``, ``train.max_objects`` and
        ``train.loss_weights`` (each checked; the error names the field).

        Raises:
            ConfigError: an option the task does not have or of the wrong type, a loss it has not,
                or options that exclude each other.
        """
        try:
            chosen = build_dataclass(cls.options_class, dict(options or {}), "task_options")
        except ConfigError as err:
            raise ConfigError(f"{err} (the options of the {cls.name} task)") from None
        kwargs = cls.constructor_options(chosen)
        if max_objects is not None:
            kwargs[cls.object_cap_option] = max_objects
        try:
            task = cls(num_classes, **kwargs)
        except ValueError as err:
            raise ConfigError(f"task_options: {err}") from None
        unknown = sorted(set(loss_weights or {}) - set(task.loss_weights))
        if unknown:
            raise ConfigError(
                f"train.loss_weights: {cls.name} has no loss {', '.join(unknown)}; its losses: {', '.join(task.loss_weights)}"
            )
        task.loss_weights.update(loss_weights or {})
        return task

    @classmethod
    def constructor_options(cls, options: Any) -> dict[str, Any]:
        """Constructor arguments of an ``options_class`` instance (this default: its fields by name)."""
        return dataclasses.asdict(options)

    @classmethod
    def fits_heads(cls, heads: Mapping[str, int]) -> bool:
        """Whether a network with ``heads`` (names) is one of this task's: every head is the task's,
        and none but the optional ones is missing."""
        own = set(cls.head_channels(int(heads.get("hm", 1))))
        return set(heads) <= own and own - cls.optional_heads <= set(heads)

    @classmethod
    def original_input(cls) -> dict[str, Any]:
        """Input settings (``input_size``, ``mean``, ``std``) for a checkpoint without metadata."""
        data = cls.config_defaults.get("data", {})
        return {key: tuple(data[key]) for key in ("input_size", "mean", "std") if key in data}

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

