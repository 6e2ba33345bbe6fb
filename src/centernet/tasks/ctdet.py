"""2D object detection as centre points (the original's ``ctdet``): heads, targets, loss, decoder.

Heads: ``hm`` (one centre heat map per class), ``wh`` (box width and height in output pixels),
``reg`` (sub-pixel offset of the centre). A box is a peak of ``hm`` at integer ``(x, y)``,
centred at ``(x, y) + reg`` with size ``wh``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from centernet.data.categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES, VOC_CLASSES, numbered_categories
from centernet.data.geometry import ImageMeta, affine_transform, transform_preds
from centernet.tasks.base import HeadOutputs, Task, final_stack
from centernet.tasks.decoding import ExportDecoder, flip_lr, gather_features, peak_filter, to_image_pixels, topk
from centernet.tasks.losses import clamped_sigmoid, dense_l1_loss, focal_loss, reg_l1_loss, reg_weighted_l1_loss
from centernet.tasks.registry import register_task
from centernet.tasks.targets import draw_dense_reg, draw_gaussian, gaussian_radius

MAX_OBJECTS = 128
# The paper's weights: heat map 1, size 0.1, offset 1.
LOSS_WEIGHTS = {"hm_loss": 1.0, "wh_loss": 0.1, "off_loss": 1.0}


@dataclass
class CtdetOptions:
    """The 2D task's switches (a recipe's ``task_options``), the original's target-set options."""

    # The original's --dense_wh: the size loss covers each object's Gaussian, weighted by the heat
    # map, not its centre pixel alone.
    dense_wh: bool = False
    # With dense_wh: the original's exact float64 ruling test, bit-faithful to its targets (about half
    # of each Gaussian then keeps size 0); False rounds the kernel first (see targets.draw_dense_reg).
    dense_wh_original: bool = False
    # The original's --cat_spec_wh: one (w, h) head pair per class (head ``wh`` of 2 C channels),
    # trained at each object's own class and decoded from the detected class.
    cat_spec_wh: bool = False


def mirror_boxes(boxes: np.ndarray, image_width: int) -> np.ndarray:
    """Boxes ``[N, 4]`` xyxy of an image mirrored left-right (``x -> width - x - 1``, as the original)."""
    mirrored = boxes.copy()
    mirrored[:, [0, 2]] = image_width - boxes[:, [2, 0]] - 1
    return mirrored


def boxes_to_output(boxes: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Source-image boxes mapped onto the output map and clipped to it, as the original's dataset.

    Args:
        boxes: ``[N, 4]`` xyxy in source pixels, not mirrored (mirrored here when ``meta.flipped``).
        meta: the warp of the sample.

    Returns:
        ``[N, 4]`` float32 xyxy in output-map pixels; boxes cut away by the crop become degenerate
        (zero width or height).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if meta.flipped:
        boxes = mirror_boxes(boxes, meta.image_hw[1])
    trans = meta.output_transform()
    out = affine_transform(boxes.reshape(-1, 2), trans).astype(np.float32).reshape(-1, 4)
    out_h, out_w = meta.output_hw
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, out_w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, out_h - 1)
    return out


def box_radius(height: float, width: float) -> int:
    """Integer Gaussian radius of a box, from its size rounded up (ctdet / pose convention)."""
    return max(0, int(gaussian_radius((math.ceil(height), math.ceil(width)))))


def decode_boxes(
    heat: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, K: int = 100
) -> torch.Tensor:
    """Top-K centre peaks turned into boxes (the original's ``ctdet_decode``).

    Args:
        heat: ``[B, C, H, W]`` centre scores in [0, 1] (after sigmoid / flip merge).
        wh: ``[B, 2, H, W]`` box sizes in output pixels, or ``[B, 2C, H, W]`` one ``(w, h)`` pair
            per class (``--cat_spec_wh``: each peak reads the pair of its own class).
        reg: ``[B, 2, H, W]`` sub-pixel centre offsets.
        K: detections per image.

    Returns:
        ``[B, K, 6]`` rows ``[x1, y1, x2, y2, score, class]`` in output-map pixels, class 0-based,
        sorted by decreasing score.
    """
    scores, inds, classes, ys, xs = topk(peak_filter(heat), K)
    offset = gather_features(reg, inds)
    size = gather_features(wh, inds)
    if size.shape[2] != 2:
        per_class = size.reshape(size.shape[0], size.shape[1], -1, 2)
        size = per_class.gather(2, classes.view(*classes.shape, 1, 1).expand(*classes.shape, 1, 2)).squeeze(2)
    cx = xs + offset[..., 0]
    cy = ys + offset[..., 1]
    half_w = size[..., 0] / 2
    half_h = size[..., 1] / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)
    return torch.cat([boxes, scores.unsqueeze(2), classes.unsqueeze(2).float()], dim=2)


class CtdetExportDecoder(ExportDecoder):
    """ctdet in a graph: ``trans [B, 2, 3]`` -> ``boxes [B, K, 4]`` xyxy image pixels, ``scores [B, K]``, ``labels [B, K]`` int64 0-based."""

    outputs = ("boxes", "scores", "labels")

    def to_outputs(self, dets: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, k = dets.shape[:2]
        boxes = to_image_pixels(dets[..., :4].reshape(batch, 2 * k, 2), trans).reshape(batch, k, 4)
        return boxes, dets[..., 4], dets[..., 5].to(torch.int64)


@register_task
class CtdetTask(Task):
    """Centre-point 2D detection.

    Args:
        num_classes: object classes.
        max_objects: targets kept per image (the first ``max_objects`` annotations).
        loss_weights: overrides of ``LOSS_WEIGHTS`` (keys ``hm_loss``, ``wh_loss``, ``off_loss``).
        dense_wh: the original's ``--dense_wh``: regress the size at every pixel of an object's
            Gaussian, weighted by the heat map, instead of at its centre alone.
        dense_wh_original: with ``dense_wh``, the original's exact ruling test (float64 kernel
            against the float32 heat map), which leaves about half of each Gaussian at size 0;
            the default rounds the kernel first (see ``draw_dense_reg``).
        cat_spec_wh: the original's ``--cat_spec_wh``: the ``wh`` head holds one ``(w, h)`` pair
            per class (``2 C`` channels); an object trains, and a detection reads, its class's pair.
    """

    name = "ctdet"
    default_loss_weights = LOSS_WEIGHTS
    options_class = CtdetOptions

    def __init__(
        self,
        num_classes: int,
        max_objects: int = MAX_OBJECTS,
        loss_weights: Mapping[str, float] | None = None,
        dense_wh: bool = False,
        cat_spec_wh: bool = False,
        dense_wh_original: bool = False,
    ) -> None:
        if dense_wh and cat_spec_wh:
            raise ValueError("dense_wh and cat_spec_wh exclude each other (the dense size map has one (w, h) pair)")
        super().__init__(num_classes, loss_weights)
        self.max_objects = max_objects
        self.dense_wh = dense_wh
        self.cat_spec_wh = cat_spec_wh
        self.dense_wh_original = dense_wh_original

    @classmethod
    def default_categories(cls, num_classes: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """COCO's 80 classes (sparse ids) or Pascal VOC's 20 by their count, else numbered ones."""
        if num_classes == len(COCO_CLASS_NAMES):
            return COCO_CLASS_NAMES, COCO_CATEGORY_IDS
        if num_classes == len(VOC_CLASSES):
            return VOC_CLASSES, tuple(range(1, num_classes + 1))
        return numbered_categories(num_classes)

    @classmethod
    def head_channels(cls, num_classes: int) -> dict[str, int]:
        return {"hm": num_classes, "wh": 2, "reg": 2}

    @property
    def heads(self) -> dict[str, int]:
        heads = super().heads
        if self.cat_spec_wh:
            heads["wh"] = 2 * self.num_classes
        return heads

    @classmethod
    def options_for_heads(cls, heads: Mapping[str, int], num_classes: int) -> dict[str, bool]:
        return {"cat_spec_wh": num_classes > 1 and heads.get("wh") == 2 * num_classes}

    def encode(self, annotations: Mapping[str, np.ndarray], meta: ImageMeta) -> dict[str, np.ndarray]:
        """Targets of one sample, exactly as the original ctdet dataset.

        Args:
            annotations: ``boxes [N, 4]`` xyxy source pixels (not mirrored), ``labels [N]`` 0-based.
            meta: the sample's warp.

        Returns:
            ``hm [C, Ho, Wo]`` float32 centre heat maps; ``wh [M, 2]`` float32 box (w, h) in
            output pixels; ``reg [M, 2]`` float32 centre minus integer centre; ``ind [M]`` int64
            ``y * Wo + x``; ``reg_mask [M]`` uint8 (1 for a real object). ``M = max_objects``;
            rows follow the annotation order, boxes degenerate after clipping keep a zero row.
            ``gt_det [n, 6]`` float32 rows ``[x1, y1, x2, y2, 1, cls0]`` (output pixels) of the
            valid objects, as the original's debugging ``meta`` (not batched).
            With ``dense_wh``, ``dense_wh [2, Ho, Wo]`` (each object's size over the part of
            its Gaussian it rules) and ``dense_wh_mask [2, Ho, Wo]`` (the class-maximum heat map)
            replace ``wh``; with ``cat_spec_wh``, ``cat_spec_wh [M, 2C]`` float32 (the size in
            columns ``2c, 2c + 1`` of the object's class ``c``) and ``cat_spec_mask [M, 2C]`` uint8
            replace it.
        """
        out_h, out_w = meta.output_hw
        m = self.max_objects
        hm = np.zeros((self.num_classes, out_h, out_w), dtype=np.float32)
        wh = np.zeros((m, 2), dtype=np.float32)
        reg = np.zeros((m, 2), dtype=np.float32)
        ind = np.zeros((m,), dtype=np.int64)
        reg_mask = np.zeros((m,), dtype=np.uint8)
        dense_wh = np.zeros((2, out_h, out_w), dtype=np.float32) if self.dense_wh else None

        labels = np.asarray(annotations["labels"], dtype=np.int64).reshape(-1)[:m]
        boxes = boxes_to_output(np.asarray(annotations["boxes"]).reshape(-1, 4)[:m], meta)
        heights = boxes[:, 3] - boxes[:, 1]
        widths = boxes[:, 2] - boxes[:, 0]
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        centers_int = centers.astype(np.int32)
        for k in np.flatnonzero((heights > 0) & (widths > 0)):
            radius = box_radius(heights[k], widths[k])
            draw_gaussian(hm[labels[k]], centers_int[k], radius)
            wh[k] = widths[k], heights[k]
            if dense_wh is not None:
                draw_dense_reg(dense_wh, hm, centers_int[k], wh[k], radius, float64_test=self.dense_wh_original)
            ind[k] = centers_int[k, 1] * out_w + centers_int[k, 0]
            reg[k] = centers[k] - centers_int[k]
            reg_mask[k] = 1
        valid = reg_mask.astype(bool)[: len(boxes)]
        half = np.stack([widths, heights], axis=1)[valid] / 2
        gt_det = np.concatenate(
            [centers[valid] - half, centers[valid] + half, np.ones((len(half), 1), np.float32), labels[valid, None]], axis=1
        ).astype(np.float32)
        targets = {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "reg_mask": reg_mask, "gt_det": gt_det}
        if dense_wh is not None:
            del targets["wh"]
            targets["dense_wh"] = dense_wh
            targets["dense_wh_mask"] = np.repeat(hm.max(axis=0, keepdims=True), 2, axis=0)
        elif self.cat_spec_wh:
            del targets["wh"]
            rows = np.flatnonzero(reg_mask)
            cat_spec_wh = np.zeros((m, 2 * self.num_classes), dtype=np.float32)
            cat_spec_mask = np.zeros((m, 2 * self.num_classes), dtype=np.uint8)
            for column in (0, 1):
                cat_spec_wh[rows, 2 * labels[rows] + column] = wh[rows, column]
                cat_spec_mask[rows, 2 * labels[rows] + column] = 1
            targets["cat_spec_wh"] = cat_spec_wh
            targets["cat_spec_mask"] = cat_spec_mask
        return targets

    def stack_losses(self, output: HeadOutputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.dense_wh:
            wh_loss = dense_l1_loss(output["wh"], batch["dense_wh"], batch["dense_wh_mask"])
        elif self.cat_spec_wh:
            wh_loss = reg_weighted_l1_loss(output["wh"], batch["cat_spec_mask"], batch["ind"], batch["cat_spec_wh"])
        else:
            wh_loss = reg_l1_loss(output["wh"], batch["reg_mask"], batch["ind"], batch["wh"])
        return {
            "hm_loss": focal_loss(clamped_sigmoid(output["hm"]), batch["hm"]),
            "wh_loss": wh_loss,
            "off_loss": reg_l1_loss(output["reg"], batch["reg_mask"], batch["ind"], batch["reg"]),
        }

    def decode(self, outputs: HeadOutputs | list[HeadOutputs], K: int = 100, flip: bool = False) -> torch.Tensor:
        """``[B, K, 6]`` rows ``[x1, y1, x2, y2, score, class0]`` in output pixels.

        With ``flip`` the centre scores and sizes are the average of the image's and its
        mirror's (un-mirrored); the offset comes from the un-mirrored image alone, as the original.
        """
        output = final_stack(outputs)
        heat = output["hm"].sigmoid()
        wh = output["wh"]
        reg = output["reg"]
        if flip:
            n = heat.shape[0] // 2
            heat = (heat[:n] + flip_lr(heat[n:])) / 2
            wh = (wh[:n] + flip_lr(wh[n:])) / 2
            reg = reg[:n]
        return decode_boxes(heat, wh, reg, K)

    def post_process(self, dets: torch.Tensor | np.ndarray, meta: ImageMeta) -> dict[int, np.ndarray]:
        """One image's detections in source-image pixels, grouped by 1-based class (original form).

        Args:
            dets: ``[K, 6]`` (or ``[1, K, 6]``) rows from ``decode``.
            meta: the warp of the image's network input.

        Returns:
            ``{class_id: [n, 5] float32 rows [x1, y1, x2, y2, score]}`` for ``class_id`` in
            ``1..num_classes`` (empty arrays included), rows in decode order.
        """
        if isinstance(dets, torch.Tensor):
            dets = dets.detach().cpu().numpy()
        dets = np.array(dets, dtype=np.float32).reshape(-1, 6)
        out_wh = meta.output_hw[::-1]
        dets[:, 0:2] = transform_preds(dets[:, 0:2], meta.center, meta.scale, out_wh)
        dets[:, 2:4] = transform_preds(dets[:, 2:4], meta.center, meta.scale, out_wh)
        classes = dets[:, 5]
        return {c + 1: dets[classes == c, :5] for c in range(self.num_classes)}


    def export_decoder(self, K: int = 100, flip: bool = False) -> CtdetExportDecoder:
        return CtdetExportDecoder(self, K, flip)

    def from_export(self, outputs: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        """``{class_id: [n, 5]}`` rows of one image's graph outputs, as ``post_process``."""
        rows = np.concatenate([np.asarray(outputs["boxes"], np.float32), np.asarray(outputs["scores"], np.float32)[:, None]], axis=1)
        labels = np.asarray(outputs["labels"])
        return {c + 1: rows[labels == c] for c in range(self.num_classes)}
