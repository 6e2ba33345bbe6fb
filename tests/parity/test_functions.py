"""Shared task maths against the original's unit-level references (``functions.npz/json``, 2D entries)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from centernet.data import geometry
from centernet.tasks import decoding, losses, targets
from centernet.tasks.ctdet import CtdetTask
from tests.helpers import assert_close


@pytest.fixture(scope="module")
def ref(reference_dir: Path) -> np.lib.npyio.NpzFile:
    return np.load(reference_dir / "functions.npz")


@pytest.fixture(scope="module")
def info(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "functions.json").read_text())


def cases(ref: np.lib.npyio.NpzFile, prefix: str) -> list[str]:
    keys = sorted((k for k in ref.files if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
    assert keys, f"no {prefix}* entries in functions.npz"
    return keys


def test_gaussian_radius(ref, info) -> None:
    min_overlap = info["gaussian_radius"]["min_overlap"]
    sizes = ref["gaussian_radius__hw"]
    radii = np.array([targets.gaussian_radius((h, w), min_overlap) for h, w in sizes])
    assert_close(radii, ref["gaussian_radius__radius"], "gaussian_radius", atol=1e-12, rtol=1e-12)
    integer = np.array([max(0, int(r)) for r in radii])
    np.testing.assert_array_equal(integer, ref["gaussian_radius__radius_int"])


def test_gaussian2d(ref) -> None:
    for key in cases(ref, "gaussian2D__r"):
        expected = ref[key]
        diameter = expected.shape[0]
        kernel = targets.gaussian2d((diameter, diameter), sigma=diameter / 6)
        assert kernel.dtype == np.float64
        assert_close(kernel, expected, key, atol=0, rtol=0)


def test_draw_gaussian(ref, info) -> None:
    spec = info["draw_umich_gaussian"]
    for i, case in enumerate(spec["cases"]):
        heatmap = np.zeros(spec["map_hw"], dtype=spec["map_dtype"])
        for cx, cy, radius in case:
            targets.draw_gaussian(heatmap, (cx, cy), int(radius))
        np.testing.assert_array_equal(heatmap, ref[f"umich__case{i}"], err_msg=f"draw_gaussian case {i}: {case}")


def _scale(case: dict) -> float | list | np.ndarray:
    """The window size as the generator passed it: a Python number, a list, or an array of ``s_kind``."""
    value, kind = case["s"], case["s_kind"]
    if kind in ("float", "int", "list"):
        return value
    return np.array(value, dtype=kind) if isinstance(value, list) else np.dtype(kind).type(value)


def test_affine_transform(ref, info) -> None:
    points = ref["affine__points"]
    for i, case in enumerate(info["get_affine_transform"]["cases"]):
        center = np.array(case["c"], dtype=np.float32)
        shift = np.array(case["shift"], dtype=np.float32)
        for inv in (0, 1):
            key = f"affine__case{i}__inv{inv}"
            matrix = geometry.get_affine_transform(center, _scale(case), case["rot"], case["out"], shift, inv=bool(inv))
            assert matrix.dtype == np.float64 and matrix.shape == (2, 3)
            assert_close(matrix, ref[key], key, atol=0, rtol=0)
            mapped = geometry.affine_transform(points, matrix).astype(np.float32)
            assert_close(mapped, ref[f"{key}__points"], f"{key}__points", atol=1e-6, rtol=1e-7)
            single = geometry.affine_transform(points[0], matrix)
            assert single.shape == (2,)
            np.testing.assert_array_equal(single.astype(np.float32), mapped[0])
        key = f"affine__case{i}__transform_preds"
        if key in ref.files:  # the original's transform_preds only exists without rotation/shift
            assert_close(geometry.transform_preds(points, center, _scale(case), case["out"]), ref[key], key, atol=1e-9, rtol=1e-9)


def test_peak_filter(ref) -> None:
    heat = torch.from_numpy(ref["nms__in"])
    assert_close(decoding.peak_filter(heat), ref["nms__out"], "_nms", atol=0, rtol=0)


def test_focal_loss(ref) -> None:
    pred = losses.clamped_sigmoid(torch.from_numpy(ref["focal__logits"]))
    gt = torch.from_numpy(ref["focal__gt"])
    assert_close(pred, ref["focal__pred_clamped"], "clamped sigmoid", atol=0, rtol=1e-6)
    assert_close(losses.focal_loss(pred, gt), ref["focal__loss_batch"], "focal batch", atol=0, rtol=1e-6)
    per_image = [losses.focal_loss(pred[i : i + 1], gt[i : i + 1]) for i in range(gt.shape[0])]
    assert_close(torch.stack(per_image), ref["focal__loss_per_image"], "focal per image", atol=0, rtol=1e-6)


def test_regression_losses(ref) -> None:
    t = {k: torch.from_numpy(ref[k]) for k in ref.files if k.startswith(("regl1__", "regwl1__"))}
    loss = losses.reg_l1_loss(t["regl1__output"], t["regl1__mask"], t["regl1__ind"], t["regl1__target"])
    assert_close(loss, ref["regl1__loss"], "RegL1Loss", atol=0, rtol=1e-6)
    empty = [t[k][2:3] for k in ("regl1__output", "regl1__mask", "regl1__ind", "regl1__target")]
    assert int(empty[1].sum()) == 0
    assert_close(losses.reg_l1_loss(*empty), ref["regl1__loss_image2_only"], "RegL1Loss no object", atol=1e-12)
    loss = losses.reg_weighted_l1_loss(t["regwl1__output"], t["regwl1__mask"], t["regl1__ind"], t["regwl1__target"])
    assert_close(loss, ref["regwl1__loss"], "RegWeightedL1Loss", atol=0, rtol=1e-6)


def test_gather_features_layout() -> None:
    fmap = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    ind = torch.tensor([[0, 7, 19], [5, 5, 11]])
    gathered = decoding.gather_features(fmap, ind)
    assert gathered.shape == (2, 3, 3)
    for b in range(2):
        for m in range(3):
            y, x = divmod(int(ind[b, m]), 5)
            assert torch.equal(gathered[b, m], fmap[b, :, y, x])


def seeded_outputs(spec: dict) -> dict[str, torch.Tensor]:
    """Raw outputs regenerated by the fixture's rule, verified against its checksums."""
    batch, (height, width) = spec["batch_size"], spec["output_shape_hw"]
    outputs = {}
    for head, channels in spec["heads"].items():
        generator = torch.Generator().manual_seed(spec["output_seeds"][head])
        x = torch.randn((batch, channels, height, width), generator=generator)
        if head.startswith("hm"):
            x = x - 4.0
        total, first, last = spec["output_checksums"][head]
        assert_close(x.double().sum(), total, f"{head} checksum sum", atol=0, rtol=1e-9)
        assert x.flatten()[0].item() == first and x.flatten()[-1].item() == last, f"{head} checksum ends"
        outputs[head] = x
    return outputs


def test_ctdet_task_loss(ref, info, reference_dir: Path) -> None:
    spec = info["task_losses"]["ctdet"]
    targets_info = json.loads((reference_dir / "targets" / "ctdet_coco_val.json").read_text())
    targets = np.load(reference_dir / "targets" / "ctdet_coco_val.npz")
    prefix = {image["img_id"]: image["key_prefix"] for image in targets_info["images"]}
    batch = {
        key: torch.from_numpy(np.stack([targets[prefix[i] + key] for i in spec["batch_images"]]))
        for key in ("hm", "wh", "reg", "ind", "reg_mask")
    }
    weights = spec["weights"]
    task = CtdetTask(
        spec["heads"]["hm"],
        loss_weights={"hm_loss": weights["hm_weight"], "wh_loss": weights["wh_weight"], "off_loss": weights["off_weight"]},
    )
    assert task.heads == spec["heads"]
    outputs = seeded_outputs(spec)
    total, stats = task.loss(outputs, batch)
    assert set(stats) == set(spec["stats"])
    for name, expected in spec["stats"].items():
        assert_close(stats[name], expected, name, atol=0, rtol=1e-5)
    assert_close(total, spec["loss"], "loss", atol=0, rtol=1e-5)

    stacked_total, _ = task.loss([outputs, outputs], batch)  # Hourglass: averaged over stacks
    assert_close(stacked_total, spec["loss"], "2-stack loss", atol=0, rtol=1e-5)
