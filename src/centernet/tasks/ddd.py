"""Monocular 3D detection on KITTI (the original's ``ddd`` task).

Each object is a peak on a per-class centre heat map (``hm``: Pedestrian, Car, Cyclist); at the
peak the network regresses the depth (``dep``, through ``1 / sigmoid(x) - 1``), the observation
angle as two overlapping bins (``rot``, 8 channels), the 3D size (``dim``: height, width, length in
metres), optionally the 2D box size (``wh``) and the sub-pixel centre offset (``reg``).
Decoding back-projects the centre at the predicted depth through the image's own camera matrix
(KITTI's 3x4 ``P2``) and recovers the yaw from the angle and the viewing ray.

Units: target arrays and decoded rows are in output-map pixels (input / 4); post-processed rows in
original image pixels and camera coordinates in metres; angles in radians.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from centernet.config import KITTI_MEAN, KITTI_STD
from centernet.data.categories import numbered_categories
from centernet.data.geometry import ImageMeta, affine_transform, get_affine_transform
from centernet.data.kitti import KITTI_CLASSES, KITTI_TYPE_RULES
from centernet.data.objects3d import Objects3D, require_calib
from centernet.data.records import DataFormatError, DetectionDataset
from centernet.data.results import Results
from centernet.evaluation.scoring import score_kitti
from centernet.tasks.base import HeadOutputs, Task, final_stack
from centernet.tasks.ddd_decoding import (
    DddExportDecoder,
    BIN_CENTRES,
    PEAK_THRESH,
    ddd_decode,
    ddd_post_process,
    depth_from_logits,
    keep_confident,
)
from centernet.tasks.losses import bin_rot_loss, clamped_sigmoid, focal_loss, l1_mean_loss
from centernet.tasks.registry import register_task
from centernet.tasks.targets import draw_gaussian, gaussian_radius

if TYPE_CHECKING:
    from centernet.data.augment import AugmentedImage, AugmentRandom, TrainAugmentation

CLASS_NAMES = KITTI_CLASSES
"""Trained classes, in heat-map channel order (result class ids are 1-based in this order)."""

# The target encoder's view of the one KITTI class table (``data.kitti.KITTI_TYPE_RULES``).
KITTI_TYPES = tuple(KITTI_TYPE_RULES)
"""Every KITTI object type; the original's converted COCO json numbers them 1..9 in this order."""

IGNORED_AS = {
    kitti_type: (target,) if target is not None else CLASS_NAMES
    for kitti_type, (target, ignore) in KITTI_TYPE_RULES.items()
    if ignore
}
"""Types that look like a trained class (or may hide any): their region is neither positive nor
background for the listed classes' channels (``DontCare``: every class)."""

SKIPPED_TYPES = tuple(t for t, (target, ignore) in KITTI_TYPE_RULES.items() if target is None and not ignore)
"""Types skipped altogether (``Tram``, ``Misc``)."""

HEADS = {"hm": len(CLASS_NAMES), "dep": 1, "rot": 8, "dim": 3, "wh": 2, "reg": 2}
"""Head name -> channels, in the original's options order (checkpoint compatible)."""

MAX_OBJECTS = 50
IGNORE_VALUE = 0.9999  # below 1, so the focal loss sees no positive, and (1 - 0.9999)^4 ~ 0 negative weight
# The original defaults, in the order it sums the terms.
LOSS_WEIGHTS = {"hm_loss": 1.0, "dep_loss": 1.0, "dim_loss": 1.0, "rot_loss": 1.0, "wh_loss": 0.1, "off_loss": 1.0}

# L1 terms of the loss: (loss name, head = target key, mask key).
_L1_TERMS = (
    ("dep_loss", "dep", "reg_mask"),
    ("dim_loss", "dim", "reg_mask"),
    ("wh_loss", "wh", "rot_mask"),
    ("off_loss", "reg", "rot_mask"),
)


# ----------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------


def encode_alpha(alpha: float) -> tuple[list[int], list[float], list[float]]:
    """Two-bin encoding of an observation angle.

    Bin 1 (centre -pi/2) covers ``alpha < pi/6 or alpha > 5pi/6``, bin 2 (centre +pi/2) covers
    ``alpha > -pi/6 or alpha < -5pi/6``; the bins overlap, so an angle can be in both. Each bin
    regresses the angle relative to its centre.

    Returns:
        ``(bins, residuals, rot8)``: bin flags ``[2]``, residuals ``[2]`` (0 outside the bin) in
        radians, and the 8-vector ``[0, bin1, sin r1, cos r1, 0, bin2, sin r2, cos r2]`` (with
        ``sin, cos = 0, 1`` outside the bin) that the original stores in ``gt_det``.
    """
    in_bin = (alpha < np.pi / 6.0 or alpha > 5 * np.pi / 6.0, alpha > -np.pi / 6.0 or alpha < -5 * np.pi / 6.0)
    bins, residuals, rot8 = [0, 0], [0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    for b in range(2):
        if in_bin[b]:
            residual = alpha - BIN_CENTRES[b]
            bins[b], residuals[b] = 1, residual
            rot8[4 * b + 1], rot8[4 * b + 2], rot8[4 * b + 3] = 1.0, np.sin(residual), np.cos(residual)
    return bins, residuals, rot8


def encode_ddd(
    annotations: Mapping[str, np.ndarray],
    calib: np.ndarray | None,
    center: np.ndarray,
    scale: np.ndarray,
    output_size: tuple[int, int],
    max_objects: int = MAX_OBJECTS,
    augmented: bool = False,
) -> dict[str, np.ndarray]:
    """Training targets of one frame, exactly as the original ``DddDataset``.

    Rows follow the label order (row ``k`` is object ``k``; skipped or ignored objects leave zero
    rows); at most ``max_objects`` objects are read. The Gaussian radius uses the un-rounded box
    size and the Gaussian is drawn at the float centre (truncated to a pixel when drawing).

    Args:
        annotations: one frame's objects in label-file order: ``types [N]`` KITTI type names (see
            ``KITTI_TYPES``), ``boxes [N, 4]`` xyxy image pixels, ``alpha [N]`` radians, ``dims [N, 3]``
            (h, w, l) and ``location [N, 3]`` (bottom centre, its z is the depth) in metres. Plain
            floats (float64) as parsed: the original casts only the boxes to float32.
        calib: the frame's ``[3, 4]`` camera matrix; required, returned in the targets.
        center: ``(x, y)`` window centre in image pixels (the letterbox of ``get_affine_transform``).
        scale: window size ``(w, h)`` in image pixels.
        output_size: ``(width, height)`` of the output map.
        max_objects: number of target rows.
        augmented: the window was scaled / shifted (``--aug_ddd``): as the original, depth and
            3D size are then not trained on this frame (``reg_mask`` 0 in every row), since the
            warp changes the apparent size but not the depth; ``rot_mask`` keeps rotation, 2D
            size and offset.

    Returns:
        ``hm [C, Ho, Wo]``, ``dep [M, 1]`` metres, ``dim [M, 3]`` metres, ``ind [M]`` int64,
        ``rotbin [M, 2]`` int64, ``rotres [M, 2]`` radians, ``reg_mask``/``rot_mask [M]`` uint8,
        ``wh [M, 2]`` and ``reg [M, 2]`` output pixels, ``calib [3, 4]``, and ``gt_det [n, 18]``
        rows ``[x, y, 1, rot8, depth, h, w, l, box_w, box_h, cls0]`` of the trained objects.
    """
    calib = require_calib(calib)
    out_w, out_h = int(output_size[0]), int(output_size[1])
    trans = get_affine_transform(center, scale, 0, (out_w, out_h))
    num_classes = len(CLASS_NAMES)

    hm = np.zeros((num_classes, out_h, out_w), dtype=np.float32)
    wh = np.zeros((max_objects, 2), dtype=np.float32)
    reg = np.zeros((max_objects, 2), dtype=np.float32)
    dep = np.zeros((max_objects, 1), dtype=np.float32)
    rotbin = np.zeros((max_objects, 2), dtype=np.int64)
    rotres = np.zeros((max_objects, 2), dtype=np.float32)
    dim = np.zeros((max_objects, 3), dtype=np.float32)
    ind = np.zeros((max_objects,), dtype=np.int64)
    reg_mask = np.zeros((max_objects,), dtype=np.uint8)
    rot_mask = np.zeros((max_objects,), dtype=np.uint8)
    gt_det = []

    types = annotations["types"]
    for k in range(min(len(types), max_objects)):
        kitti_type = str(types[k])
        if kitti_type not in KITTI_TYPES:
            raise ValueError(f"unknown KITTI object type {kitti_type!r}")
        if kitti_type in SKIPPED_TYPES:
            continue
        bbox = np.asarray(annotations["boxes"][k]).astype(np.float32)
        bbox[:2] = affine_transform(bbox[:2], trans)
        bbox[2:] = affine_transform(bbox[2:], trans)
        bbox[[0, 2]] = np.clip(bbox[[0, 2]], 0, out_w - 1)
        bbox[[1, 3]] = np.clip(bbox[[1, 3]], 0, out_h - 1)
        h, w = bbox[3] - bbox[1], bbox[2] - bbox[0]
        if not (h > 0 and w > 0):
            continue
        radius = max(0, int(gaussian_radius((h, w))))
        ct = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2], dtype=np.float32)
        ct_int = ct.astype(np.int32)

        if kitti_type in IGNORED_AS:
            channels = [CLASS_NAMES.index(name) for name in IGNORED_AS[kitti_type]]
            for c in channels:
                draw_gaussian(hm[c], ct, radius)
            hm[channels, ct_int[1], ct_int[0]] = IGNORE_VALUE
            continue

        cls = CLASS_NAMES.index(kitti_type)
        draw_gaussian(hm[cls], ct, radius)
        wh[k] = w, h
        bins, residuals, rot8 = encode_alpha(float(annotations["alpha"][k]))
        depth = float(annotations["location"][k][2])
        dims = np.asarray(annotations["dims"][k], dtype=np.float64)
        gt_det.append([ct[0], ct[1], 1.0, *rot8, depth, *dims.tolist(), w, h, cls])
        rotbin[k] = bins
        rotres[k] = residuals
        dep[k] = depth
        dim[k] = dims
        ind[k] = ct_int[1] * out_w + ct_int[0]
        reg[k] = ct - ct_int
        reg_mask[k] = 0 if augmented else 1
        rot_mask[k] = 1

    return {
        "hm": hm,
        "dep": dep,
        "dim": dim,
        "ind": ind,
        "rotbin": rotbin,
        "rotres": rotres,
        "reg_mask": reg_mask,
        "rot_mask": rot_mask,
        "wh": wh,
        "reg": reg,
        "calib": calib,
        "gt_det": np.array(gt_det, dtype=np.float32).reshape(-1, 18),
    }


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Task
# ----------------------------------------------------------------------------------------------


@register_task
class DddTask(Task):
    """Monocular 3D detection on KITTI: heads, targets, loss, decoder and KITTI post-processing.

    Args:
        num_classes: must be ``len(CLASS_NAMES)`` (3); the KITTI type roles are defined for them.
        regress_box_size: keep the ``wh`` head (the original's default ``reg_bbox``).
        regress_offset: keep the ``reg`` head (the original's default ``reg_offset``).
        loss_weights: overrides of ``LOSS_WEIGHTS`` (keys ``hm_loss``, ``dep_loss``, ...).
        max_objects: target rows per image.
    """

    name = "ddd"
    default_loss_weights = LOSS_WEIGHTS
    optional_heads = frozenset({"wh", "reg"})
    config_defaults = {
        "data": {"input_size": [384, 1280], "mean": list(KITTI_MEAN), "std": list(KITTI_STD)},
        "augment": {"random_crop": False, "flip": 0.0, "color": False, "aug_ddd": 0.5},
    }
    multi_scale = False  # the original has neither multi-scale nor flip testing for 3D
    flip_test = False
    needs_calib = True
    result_format = "kitti"

    def __init__(
        self,
        num_classes: int = len(CLASS_NAMES),
        regress_box_size: bool = True,
        regress_offset: bool = True,
        loss_weights: Mapping[str, float] | None = None,
        max_objects: int = MAX_OBJECTS,
        peak_thresh: float = PEAK_THRESH,
    ) -> None:
        if num_classes != len(CLASS_NAMES):
            raise ValueError(f"ddd trains the KITTI classes {CLASS_NAMES}; got num_classes={num_classes}")
        super().__init__(num_classes, loss_weights, {"wh": regress_box_size, "reg": regress_offset})
        self.regress_box_size = regress_box_size
        self.regress_offset = regress_offset
        self.max_objects = max_objects
        self.peak_thresh = peak_thresh

    @classmethod
    def default_categories(cls, num_classes: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """KITTI's three trained classes, else numbered ones."""
        if num_classes == len(CLASS_NAMES):
            return CLASS_NAMES, tuple(range(1, num_classes + 1))
        return numbered_categories(num_classes)

    def require_annotations(self, dataset: DetectionDataset) -> None:
        """A camera calibration and 3D annotations for every image (KITTI data)."""
        lacking = next((r for r in dataset.records if r.calib is None or r.objects_3d is None), None)
        if lacking is not None:
            raise DataFormatError(
                f"{dataset.source}: image {lacking.path} has no camera calibration or 3D annotations; "
                "the ddd task needs KITTI data"
            )

    @classmethod
    def head_channels(cls, num_classes: int) -> dict[str, int]:
        return {**HEADS, "hm": num_classes}

    @classmethod
    def options_for_heads(cls, heads: Mapping[str, int], num_classes: int) -> dict[str, bool]:
        return {"regress_box_size": "wh" in heads, "regress_offset": "reg" in heads}

    def augment(self, image: np.ndarray, augmentation: TrainAugmentation, rng: AugmentRandom) -> AugmentedImage:
        """The original KITTI data set's augmentation: with probability ``aug_ddd`` a zoom and a
        shift by the image's width and height (``jitter_frame``); never a flip, a rotation or a
        colour jitter (a mirrored frame would need a mirrored camera), whatever the settings say.
        """
        height, width = image.shape[:2]
        center, window = augmentation.frame_window(height, width)
        augmented, window = augmentation.jitter_frame(center, window, height, width, rng)
        return augmentation.render(image, center, window, rng, color=False, augmented=augmented)

    def encode(self, annotations: Mapping[str, np.ndarray], meta: ImageMeta) -> dict[str, np.ndarray]:
        """Targets of one frame (see ``encode_ddd``; ``meta.augmented`` switches ``reg_mask`` off).

        The annotations' KITTI ``types`` decide each object's role (trained class, ignore region
        or skipped); ``labels`` are not read. The camera matrix is ``meta.calib``, else the
        annotations' own ``calib``; one of them is required.
        """
        if meta.flipped or meta.rot:
            raise ValueError("ddd targets are defined without mirroring or rotation (as the original)")
        calib = meta.calib if meta.calib is not None else annotations.get("calib")
        targets = encode_ddd(
            annotations, calib, meta.center, meta.scale, meta.output_hw[::-1], self.max_objects, augmented=meta.augmented
        )
        if not self.regress_box_size:
            del targets["wh"]
        if not self.regress_offset:
            del targets["reg"]
        return targets

    def stack_losses(self, output: HeadOutputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The original ``DddLoss`` terms, unweighted.

        Focal loss on ``hm``; mean L1 (``l1_mean_loss``) on depth (after ``depth_from_logits``) and
        size where ``reg_mask`` is set, and on ``wh`` and ``reg`` where ``rot_mask`` is set (they
        differ only under the original's scale/shift augmentation); ``bin_rot_loss`` on ``rot``.
        Terms whose head is off or whose weight is 0 are 0.
        """
        weights = self.loss_weights
        ind = batch["ind"]
        losses = {"hm_loss": focal_loss(clamped_sigmoid(output["hm"]), batch["hm"])}
        for loss_name, head, mask in _L1_TERMS:
            if head not in output or weights[loss_name] <= 0:
                losses[loss_name] = output["hm"].new_zeros(())
                continue
            prediction = depth_from_logits(output[head]) if head == "dep" else output[head]
            losses[loss_name] = l1_mean_loss(prediction, batch[mask], ind, batch[head])
        losses["rot_loss"] = output["hm"].new_zeros(())
        if weights["rot_loss"] > 0:
            losses["rot_loss"] = bin_rot_loss(output["rot"], batch["rot_mask"], ind, batch["rotbin"], batch["rotres"])
        return {name: losses[name] for name in LOSS_WEIGHTS}

    def decode(self, outputs: HeadOutputs | list[HeadOutputs], K: int = 100, flip: bool = False) -> torch.Tensor:
        """``ddd_decode`` rows ``[B, K, 18]`` from raw head maps (sigmoid and depth transform applied).

        The original has no flip test for 3D (a mirrored image would need a mirrored camera).
        """
        if flip:
            raise ValueError("ddd has no flip test (the original defines none)")
        output = final_stack(outputs)
        return ddd_decode(
            output["hm"].sigmoid(),
            output["rot"],
            depth_from_logits(output["dep"]),
            output["dim"],
            wh=output.get("wh"),
            reg=output.get("reg"),
            K=K,
        )

    def post_process(self, dets: torch.Tensor | np.ndarray, meta: ImageMeta) -> dict[int, np.ndarray]:
        """``{cls1: [n, 13]}`` KITTI rows of one image (see ``ddd_post_process``); needs ``meta.calib``."""
        if isinstance(dets, torch.Tensor):
            dets = dets.detach().cpu().numpy()
        return ddd_post_process(dets, meta.center, meta.scale, meta.calib, meta.output_hw[::-1], self.num_classes)

    def detections(self, results: Mapping[int, np.ndarray]) -> dict[str, np.ndarray]:
        """``post_process`` results as flat per-detection arrays, in class order then decode order.

        Returns:
            ``boxes [N, 4]`` float32 image pixels, ``scores [N]``, ``labels [N]`` int64 0-based,
            ``alpha [N]`` and ``rotation_y [N]`` radians, ``dims [N, 3]`` (h, w, l) and
            ``locations [N, 3]`` (bottom centre, camera coordinates) metres.
        """
        classes = sorted(results)
        rows = np.concatenate(
            [np.asarray(results[c], np.float32).reshape(-1, 13) for c in classes] + [np.zeros((0, 13), np.float32)]
        )
        labels = np.concatenate([np.full(len(results[c]), c - 1, np.int64) for c in classes] + [np.zeros(0, np.int64)])
        return {
            "boxes": rows[:, 1:5],
            "scores": rows[:, 12],
            "labels": labels,
            "alpha": rows[:, 0],
            "dims": rows[:, 5:8],
            "locations": rows[:, 8:11],
            "rotation_y": rows[:, 11],
        }

    # ------------------------------------------------------------------ test-time behaviour
    def merge_outputs(self, per_scale: Sequence[Mapping[int, np.ndarray]], nms: bool = False, max_per_image: int = 100):
        """The original ``DddDetector.merge_outputs``: one scale, rows scoring above ``peak_thresh``."""
        if len(per_scale) != 1:
            raise ValueError("ddd is tested at one scale only (the original defines no multi-scale 3D test)")
        return keep_confident(per_scale[0], self.peak_thresh)

    def to_results(self, merged, names, image=None, path=None, calib=None):
        """3D ``Results`` (2D boxes, scores and ``boxes_3d``) of one frame, best first."""
        if calib is None:
            raise ValueError(f"{path or 'image'}: 3D results need the camera calibration")
        found = self.detections(merged)
        o = np.argsort(-found["scores"], kind="stable")
        boxes_3d = Objects3D(found["dims"][o], found["locations"][o], found["rotation_y"][o], found["alpha"][o],
                           np.asarray(calib, np.float32).reshape(3, 4))
        return Results(found["boxes"][o], found["scores"][o], found["labels"][o], names, image, path, boxes_3d=boxes_3d)

    def score(self, data, predictions):
        """KITTI AP11 / AP40 (2D, AOS, BEV, 3D) of the frames, scores at the 2 decimals the original writes."""
        return score_kitti(data, predictions)

    def export_decoder(self, K: int = 100, flip: bool = False) -> DddExportDecoder:
        if flip:
            raise ValueError("ddd has no flip test (the original defines none)")
        return DddExportDecoder(self, K)

    def from_export(self, outputs: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        """``{cls1: [n, 13]}`` KITTI rows of one image's graph outputs, as ``post_process``."""
        columns = [outputs["alpha"][:, None], outputs["boxes"], outputs["dims"], outputs["locations"],
                   outputs["rotation_y"][:, None], outputs["scores"][:, None]]
        rows = np.concatenate([np.asarray(c, np.float32) for c in columns], axis=1)
        labels = np.asarray(outputs["labels"])
        return {c + 1: rows[labels == c] for c in range(self.num_classes)}
