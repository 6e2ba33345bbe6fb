"""``CenterNet``: the network, its input pipeline and its task behind torchvision's detection contract.

``model(images)`` in eval mode returns one dict per image (``boxes`` xyxy in that image's pixels,
``scores``, ``labels``); ``model(images, targets)`` in train mode returns the named losses. Images
are ``[3, H, W]`` float RGB tensors in 0..1 of any sizes; the model letterboxes (or pads) and
normalises them itself, and maps detections back to each image's pixels.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from centernet.config import COCO_MEAN_BGR, COCO_STD_BGR
from centernet.data.geometry import ImageMeta
from centernet.data.transforms import InputSpec, keep_res_pad, warp_to_input
from centernet.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_original_checkpoint,
    save_checkpoint,
)
from centernet.models.checkpoint_fields import check_checkpoint_fields, is_project_checkpoint
from centernet.models.predictor import Predictor
from centernet.models.registry import build_model, default_head_conv
from centernet.tasks.base import DEBUG_ONLY_KEYS, HeadOutputs, Task
from centernet.tasks.registry import get_task, task_class, task_for_heads, task_name_for_heads

WarpBackend = Literal["cv2", "torch"]


def outputs_to_float(outputs: HeadOutputs | list[HeadOutputs]) -> HeadOutputs | list[HeadOutputs]:
    """Head maps (a dict, or a list of them per stack) cast to float32 (from an autocast forward)."""
    if isinstance(outputs, list):
        return [outputs_to_float(o) for o in outputs]
    return {k: v.float() for k, v in outputs.items()}


def _check_images(images: Sequence[torch.Tensor]) -> None:
    """Refuse, naming the image, what no letterbox can use: not ``[3, H, W]``, no pixels, NaN or infinity."""
    for index, image in enumerate(images):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image {index}: expected a [3, H, W] tensor, got shape {list(image.shape)}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"image {index}: it has no pixels ({image.shape[1]}x{image.shape[2]})")
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"image {index}: it holds NaN or infinite values (expected floats in 0..1)")


def _to_uint8_bgr(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` RGB float 0..1 -> ``[H, W, 3]`` uint8 BGR (exact for images that came from 8 bits)."""
    pixels = (image.detach().float() * 255).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(pixels.flip(0).permute(1, 2, 0).cpu().numpy())


def _as_tensors(result) -> dict[str, torch.Tensor]:
    """A ``Results`` as the detector's per-image dict of tensors (best first)."""
    out = {"boxes": result.boxes, "scores": result.scores, "labels": result.labels}
    if result.keypoints is not None:
        out["keypoints"] = result.keypoints
    if result.boxes_3d is not None:
        b3 = result.boxes_3d
        out.update(alpha=b3.alpha, dims=b3.dims, locations=b3.locations, rotation_y=b3.rotation_y)
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in out.items()}


class CenterNet(nn.Module):
    """A CenterNet detector (2D boxes by default) with its pre- and post-processing.

    Args:
        arch: registered network (``res_18``, ``dla_34``, ``hourglass``...).
        num_classes: object classes; taken from ``class_names`` when omitted.
        class_names: name of each 0-based label (default: the original's data set of that size,
            COCO's 80, VOC's 20, KITTI's 3, or ``class<i>``).
        category_ids: data-set category id of each label, for COCO results (default: COCO's
            sparse ids for 80 classes, ``1..C`` otherwise).
        task: task name (``"ctdet"``, ``"multi_pose"``, ``"ddd"``) or a ``Task``.
        input_size: network input ``(height, width)`` for fix-res letterboxing.
        keep_res: feed images at their own resolution, padded to a multiple of 32 (128 for
            Hourglass) instead of letterboxing to ``input_size``.
        mean, std: normalisation of 0..1 pixels in ``channel_order``.
        channel_order: channel order the network was trained with (``"bgr"``, the original's).
        K: detections decoded per image.
        score_thresh: detections below this score are dropped (0 keeps all ``K``, as the
            original's COCO evaluation).
        flip_test: average the network's outputs on each image and its mirror.
        head_conv: width of the heads' 3x3 convs (``None``: the architecture's default).
        warp: ``"cv2"`` cuts each image out with ``cv2.warpAffine`` on 8-bit pixels on the CPU,
            bit-exact with the original; ``"torch"`` warps the whole batch with ``grid_sample`` on
            the model's device (float pixels, differences of about one grey level).
    """

    def __init__(
        self,
        arch: str = "res_18",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        category_ids: Sequence[int] | None = None,
        task: str | Task = "ctdet",
        input_size: tuple[int, int] = (512, 512),
        keep_res: bool = False,
        mean: Sequence[float] = COCO_MEAN_BGR,
        std: Sequence[float] = COCO_STD_BGR,
        channel_order: str = "bgr",
        K: int = 100,
        score_thresh: float = 0.0,
        flip_test: bool = False,
        head_conv: int | None = None,
        warp: WarpBackend = "cv2",
    ) -> None:
        super().__init__()
        if num_classes is None:
            if isinstance(task, Task):
                num_classes = task.num_classes
            elif class_names is not None:
                num_classes = len(class_names)
            else:
                raise ValueError("give num_classes or class_names")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        if warp not in ("cv2", "torch"):
            raise ValueError(f"warp must be 'cv2' or 'torch', not {warp!r}")
        self.arch = arch
        self.task = task if isinstance(task, Task) else get_task(task, num_classes)
        default_names, default_ids = self.task.default_categories(num_classes)
        self.class_names = list(class_names) if class_names is not None else list(default_names)
        self.category_ids = list(category_ids) if category_ids is not None else list(default_ids)
        if len(self.category_ids) != num_classes:
            raise ValueError(f"{len(self.category_ids)} category ids for {num_classes} classes")
        self.network = build_model(arch, self.task.heads, head_conv)
        self.head_conv = default_head_conv(arch) if head_conv is None else head_conv
        self.spec = InputSpec(
            input_hw=None if keep_res else (int(input_size[0]), int(input_size[1])),
            pad=keep_res_pad(arch),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            channel_order=channel_order,
        )
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.K = K
        self.score_thresh = score_thresh
        self.flip_test = flip_test
        self.warp = warp

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    # ------------------------------------------------------------------ pre-processing
    def preprocess(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[ImageMeta]]:
        """Letterbox (or pad) and normalise a list of images into one batch.

        Args:
            images: ``[3, H, W]`` float RGB tensors in 0..1, sizes may differ.

        Returns:
            ``([B, 3, h, w] float32 on the model's device, per-image metas)``.
        """
        _check_images(images)
        metas = self.spec.batch_metas([(int(im.shape[-2]), int(im.shape[-1])) for im in images])
        device = next(self.network.parameters()).device
        if self.warp == "cv2":
            inputs = [self._warp_cv2(image, meta) for image, meta in zip(images, metas)]
            return torch.from_numpy(np.stack(inputs)).to(device), metas
        return self._warp_torch([im.to(device) for im in images], metas), metas

    def _warp_cv2(self, image: torch.Tensor, meta: ImageMeta) -> np.ndarray:
        """The original's pre-processing of one image: 8-bit warp, float64 normalisation."""
        return self.spec.normalize_uint8(warp_to_input(_to_uint8_bgr(image), meta))

    def _warp_torch(self, images: list[torch.Tensor], metas: list[ImageMeta]) -> torch.Tensor:
        """All images warped at once with ``grid_sample`` (bilinear, zeros outside, pixel centres)."""
        device = images[0].device
        max_h = max(im.shape[-2] for im in images)
        max_w = max(im.shape[-1] for im in images)
        sources = torch.zeros(len(images), 3, max_h, max_w, device=device)
        for i, im in enumerate(images):
            sources[i, :, : im.shape[-2], : im.shape[-1]] = im.float()
        if self.spec.channel_order == "bgr":
            sources = sources.flip(1)
        inp_h, inp_w = metas[0].input_hw
        # Input pixel (x, y) reads source pixel inverse @ (x, y, 1); float32 throughout for any device.
        inverse = torch.from_numpy(np.stack([meta.input_transform(inv=True) for meta in metas])).float().to(device)
        ys, xs = torch.meshgrid(
            torch.arange(inp_h, device=device, dtype=torch.float32),
            torch.arange(inp_w, device=device, dtype=torch.float32),
            indexing="ij",
        )
        pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
        source_xy = pixels @ inverse.transpose(1, 2)  # [B, h * w, 2] source pixels
        # grid_sample's -1..1 spans pixel edges (align_corners=False): pixel centre x sits at (2x + 1) / W - 1.
        size = source_xy.new_tensor([max_w, max_h])
        grid = ((2 * source_xy + 1) / size - 1).reshape(len(metas), inp_h, inp_w, 2)
        warped = F.grid_sample(sources, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mean = warped.new_tensor(self.spec.mean).view(1, 3, 1, 1)
        std = warped.new_tensor(self.spec.std).view(1, 3, 1, 1)
        return (warped - mean) / std

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]] | Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses in training, detections in evaluation.

        Args:
            images: ``[3, H, W]`` float RGB tensors in 0..1. In training also a prepared batch:
                network inputs ``[B, 3, h, w]`` (warped and normalised, e.g. by the task's training
                augmentation) with ``targets`` their encoded targets (see ``batch_losses``).
            targets: training only, one dict per image: ``boxes [N, 4]`` xyxy image pixels,
                ``labels [N]`` 0-based (plus task-specific fields); or, with a prepared batch, the
                task's collated targets.

        Returns:
            Training: the task's losses, each already multiplied by its weight (``hm_loss``,
            ``wh_loss``, ``off_loss`` for ctdet), so that their sum is the training loss.
            Evaluation: per image ``boxes [N, 4]`` float32 xyxy in that image's pixels,
            ``scores [N]``, ``labels [N]`` int64 0-based, by decreasing score.
            An empty list gives ``[]`` in evaluation and a ``ValueError`` in training. Any image
            size is letterboxed, one smaller than the stride included. An image that is not
            ``[3, H, W]``, has no pixels, or holds NaN / infinite values is a ``ValueError``
            naming its index.
        """
        if self.training:
            if targets is None:
                raise ValueError("CenterNet in training mode needs targets (call model.eval() for detections)")
            if isinstance(images, torch.Tensor):
                return self.batch_losses(images, targets)
            return self.compute_losses(images, targets)
        return self.detect(images)

    def compute_losses(
        self, images: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Weighted named losses of a batch; targets are encoded with each image's own warp."""
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        if not images:
            raise ValueError("no images: the losses need at least one image")
        inputs, metas = self.preprocess(images)
        encoded = [
            self.task.encode({k: v.detach().cpu().numpy() for k, v in target.items()}, meta)
            for target, meta in zip(targets, metas)
        ]
        batch = {key: torch.from_numpy(np.stack([e[key] for e in encoded])).to(inputs.device) for key in encoded[0] if key not in DEBUG_ONLY_KEYS}
        return self.batch_losses(inputs, batch)

    def batch_losses(self, inputs: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted named losses of prepared network inputs ``[B, 3, h, w]`` and their encoded targets.

        The network runs under the caller's autocast, if any; the loss is computed in float32
        outside it (the head maps cast up), as the original trains with mixed precision.
        """
        outputs = self.network(inputs)
        with torch.autocast(inputs.device.type, enabled=False):
            _, stats = self.task.loss(outputs_to_float(outputs), batch)
        return {name: self.task.loss_weights[name] * value for name, value in stats.items() if name != "loss"}

    @torch.no_grad()
    def detect(
        self, images: Sequence[torch.Tensor], calibs: Sequence[np.ndarray] | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections of a list of images (see ``forward``).

        Args:
            images: ``[3, H, W]`` float RGB tensors in 0..1.
            calibs: per-image ``[3, 4]`` camera projections, required by the 3D task (``ddd``).
        """
        _check_images(images)
        predictor = Predictor.for_detector(self, eval_mode=False)  # the module's mode is the caller's choice
        if self.warp == "cv2":
            found = predictor.detect([_to_uint8_bgr(image) for image in images], calibs, keep_images=False)
        else:  # the batch warped on the device, then the same decoding, merge and threshold
            if self.task.needs_calib and calibs is None:
                raise ValueError(f"{self.task.name} detection needs each image's camera calibration (calibs=...)")
            inputs, metas = self.preprocess(images)
            if calibs is not None:
                metas = [dataclasses.replace(meta, calib=np.asarray(calib, np.float32).reshape(3, 4)) for meta, calib in zip(metas, calibs)]
            processed = predictor.run_inputs(inputs, metas)
            found = [predictor.finish([p], calib=meta.calib) for p, meta in zip(processed, metas)]
        return [_as_tensors(result) for result in found]

    # ------------------------------------------------------------------ checkpoints
    def metadata(self) -> dict[str, Any]:
        """Everything needed to rebuild this detector, beside the weights."""
        return {
            "format": "centernet",
            "arch": self.arch,
            "task": self.task.name,
            "heads": self.task.heads,
            "head_conv": self.head_conv,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "category_ids": self.category_ids,
            "input_size": list(self.input_size),
            "keep_res": self.spec.input_hw is None,
            "mean": list(self.spec.mean),
            "std": list(self.spec.std),
            "channel_order": self.spec.channel_order,
            "K": self.K,
            "score_thresh": self.score_thresh,
            "flip_test": self.flip_test,
        }

    def save(self, path: str | PathLike[str]) -> None:
        """Write the weights with their metadata (``centernet.models.checkpoint`` format)."""
        save_checkpoint(path, {**self.metadata(), "state_dict": self.network.state_dict()})

    @classmethod
    def from_checkpoint(cls, path: str | PathLike[str], **overrides: Any) -> CenterNet:
        """Load a detector saved by ``save`` or the trainer, or an original CenterNet ``.pth``.

        An original checkpoint carries no metadata: the architecture, heads and class count are
        inferred from its keys, the task from its heads, and the input settings are the
        original's defaults for that task (override them with keyword arguments, e.g.
        ``class_names=...``, ``input_size=(384, 1280)``, ``mean=...``).
        """
        try:
            payload = load_checkpoint(path)
        except CheckpointError:
            payload = None
        if payload is not None and is_project_checkpoint(payload):
            # One line naming the field, before any network is built.
            check_checkpoint_fields(payload, path, lambda task, n, heads: task_for_heads(task, n, heads).heads)
            names = payload.get("class_names")
            num_classes = payload.get("num_classes") or (len(names) if names else payload["heads"]["hm"])
            options = {
                "arch": payload["arch"],
                "num_classes": num_classes,
                "class_names": names,
                "category_ids": payload.get("category_ids"),
                "task": task_for_heads(payload.get("task", "ctdet"), num_classes, payload["heads"]),
                "input_size": tuple(payload.get("input_size", (512, 512))),
                "keep_res": payload.get("keep_res", False),
                "mean": payload.get("mean", COCO_MEAN_BGR),
                "std": payload.get("std", COCO_STD_BGR),
                "channel_order": payload.get("channel_order", "bgr"),
                "head_conv": payload.get("head_conv"),
                **{key: payload[key] for key in ("K", "score_thresh", "flip_test") if key in payload},
            }
            state_dict = payload["state_dict"]
        else:
            network, info = load_original_checkpoint(path)
            try:
                task_name = task_name_for_heads(info.heads)
            except ValueError as err:
                raise CheckpointError(f"{path}: {err}") from None
            options = {
                "arch": info.arch,
                "num_classes": info.num_classes,
                "task": task_for_heads(task_name, info.num_classes, info.heads),
                "head_conv": info.head_conv,
                **task_class(task_name).original_input(),
            }
            state_dict = network.state_dict()
        detector = cls(**{**options, **overrides})
        detector.network.load_state_dict(state_dict, strict=True)
        return detector

