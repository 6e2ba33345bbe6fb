"""Behaviour of the KITTI evaluator: file handling, in-memory API, hand-computed cases, geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely

from centernet.data.objects3d import Objects3D
from centernet.data.kitti import format_kitti_lines, read_kitti_file, write_kitti_results
from centernet.evaluation.kitti import evaluate_kitti, evaluate_kitti_objects
from centernet.evaluation.kitti_overlaps import rotated_rectangle_intersection

GT_LINE = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"
DET_LINE = "Car 0.0 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59 0.93"


def _cars(boxes, locations, scores=None, types=None, alpha=None) -> Objects3D:
    """Cars of fixed size (h, w, l) = (1.5, 1.6, 3.9) m, facing along x (ry = 0)."""
    n = len(boxes)
    return Objects3D(
        types=types or ["Car"] * n,
        boxes=boxes,
        alpha=np.zeros(n) if alpha is None else alpha,
        dims=np.tile([1.5, 1.6, 3.9], (n, 1)),
        locations=locations,
        rotation_y=np.zeros(n),
        scores=scores,
    )


def _random_frames(rng: np.random.Generator, num_frames: int) -> tuple[list[Objects3D], list[Objects3D]]:
    """Ground truth and noisy detections, every number already at 2 decimals (as written)."""
    names = ["Car", "Pedestrian", "Cyclist", "Van", "DontCare"]
    ground_truth, detections = [], []
    for _ in range(num_frames):
        n = int(rng.integers(1, 8))
        x1, y1 = rng.uniform(0, 1100, n), rng.uniform(100, 250, n)
        boxes = np.stack([x1, y1, x1 + rng.uniform(20, 140, n), y1 + rng.uniform(15, 120, n)], axis=1)
        loc = np.stack([rng.uniform(-10, 10, n), rng.uniform(1.5, 1.8, n), rng.uniform(5, 50, n)], axis=1)
        dims = np.stack([rng.uniform(1.4, 1.8, n), rng.uniform(0.5, 1.8, n), rng.uniform(0.8, 4.5, n)], axis=1)
        gt = Objects3D(
            types=list(rng.choice(names, n)),
            boxes=boxes.round(2),
            alpha=rng.uniform(-3, 3, n).round(2),
            dims=dims.round(2),
            locations=loc.round(2),
            rotation_y=rng.uniform(-3, 3, n).round(2),
            truncation=rng.choice([0.0, 0.2, 0.4, 0.6], n),
            occlusion=rng.integers(0, 4, n),
        )
        keep = np.flatnonzero(rng.random(n) < 0.85)
        keep = np.concatenate([keep, rng.choice(n, 2)])  # duplicates
        m = len(keep)
        det = Objects3D(
            types=[gt.types[i] if gt.types[i] != "DontCare" else "Car" for i in keep],
            boxes=(gt.boxes[keep] + rng.normal(0, 4, (m, 4))).round(2),
            alpha=(gt.alpha[keep] + rng.normal(0, 0.3, m)).round(2),
            dims=(gt.dims[keep] * rng.uniform(0.9, 1.1, (m, 3))).round(2),
            locations=(gt.locations[keep] + rng.normal(0, 0.3, (m, 3))).round(2),
            rotation_y=(gt.rotation_y[keep] + rng.normal(0, 0.2, m)).round(2),
            scores=rng.uniform(0, 1, m).round(2),
        )
        ground_truth.append(gt)
        detections.append(det)
    return ground_truth, detections


def _write_labels(folder: Path, frames: dict[int, Objects3D]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for frame_id, objects in frames.items():
        lines = format_kitti_lines(objects, detections=False)
        (folder / f"{frame_id:06d}.txt").write_text("".join(line + "\n" for line in lines))
    return folder


@pytest.mark.parametrize("detections, line", [(False, GT_LINE), (True, DET_LINE)])
def test_wrong_column_count_names_file_and_line(tmp_path: Path, detections: bool, line: str) -> None:
    path = tmp_path / "000007.txt"
    path.write_text(f"{line}\n\n{line} 1.0\n")
    with pytest.raises(ValueError, match=r"000007\.txt \[line 3\]: (16|17) columns, expected (15|16)"):
        read_kitti_file(path, detections=detections)


def test_non_numeric_field_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "000001.txt"
    path.write_text(GT_LINE.replace("46.70", "far") + "\n")
    with pytest.raises(ValueError, match=r"000001\.txt \[line 1\]: .*'far'"):
        read_kitti_file(path, detections=False)


def test_read_parses_columns(tmp_path: Path) -> None:
    path = tmp_path / "000000.txt"
    path.write_text(DET_LINE + "\n")
    objects = read_kitti_file(path, detections=True)
    assert objects.types == ("Car",)
    np.testing.assert_array_equal(objects.boxes, [[587.01, 173.33, 614.12, 200.12]])
    np.testing.assert_array_equal(objects.dims, [[1.65, 1.67, 3.64]])
    np.testing.assert_array_equal(objects.locations, [[-0.65, 1.71, 46.70]])
    assert objects.rotation_y[0] == -1.59 and objects.alpha[0] == -1.58 and objects.scores[0] == 0.93
    (tmp_path / "empty.txt").write_text("")
    assert len(read_kitti_file(tmp_path / "empty.txt", detections=True)) == 0


def test_result_without_label_file_is_an_error(tmp_path: Path) -> None:
    _write_labels(tmp_path / "gt", {0: _cars([[0, 0, 50, 50]], [[0, 1.7, 10]])})
    write_kitti_results(tmp_path / "det", {0: Objects3D.empty(), 1: Objects3D.empty()})
    with pytest.raises(FileNotFoundError, match="000001.txt"):
        evaluate_kitti(tmp_path / "gt", tmp_path / "det")


def test_in_memory_api_equals_file_api(tmp_path: Path) -> None:
    ground_truth, detections = _random_frames(np.random.default_rng(0), 60)
    frame_ids = [3 * i + 1 for i in range(len(ground_truth))]
    _write_labels(tmp_path / "gt", dict(zip(frame_ids, ground_truth)))
    write_kitti_results(tmp_path / "det", dict(zip(frame_ids, detections)))

    from_files = evaluate_kitti(tmp_path / "gt", tmp_path / "det")
    in_memory = evaluate_kitti_objects(ground_truth, detections)
    assert from_files.num_frames == in_memory.num_frames == len(frame_ids)
    assert from_files.num_ground_truth == in_memory.num_ground_truth
    evaluated = 0
    for class_name, metrics in in_memory.precision.items():
        for metric, precision in metrics.items():
            other = from_files.precision[class_name][metric]
            assert (precision is None) == (other is None), (class_name, metric)
            if precision is not None:
                np.testing.assert_array_equal(precision, other, err_msg=f"{class_name}/{metric}")
                evaluated += 1
    assert evaluated == 12  # 3 classes x (bbox, aos, bev, 3d)
    assert any(np.any(p > 0) for m in in_memory.precision.values() for p in m.values())


def test_only_frames_with_result_files_count(tmp_path: Path) -> None:
    car = _cars([[100, 100, 200, 180]], [[0, 1.7, 10]])
    _write_labels(tmp_path / "gt", {0: car, 1: car, 2: car})
    write_kitti_results(tmp_path / "det", {0: _cars(car.boxes, car.locations, scores=[0.9]), 1: Objects3D.empty()})
    result = evaluate_kitti(tmp_path / "gt", tmp_path / "det")
    assert result.num_frames == 2  # frame 2 has no result file: not evaluated
    assert result.num_ground_truth["car"] == (2, 2, 2)  # frame 1's empty file: evaluated, a miss
    assert result.precision["pedestrian"]["bbox"] is None  # no pedestrian detected anywhere


def test_perfect_small_sample_scores_below_100() -> None:
    # Two valid cars, both found: precision 1 at the 2 thresholds, 0 after (the binary's tail).
    gt = _cars([[100, 100, 200, 180], [400, 100, 480, 170]], [[-3, 1.7, 10], [3, 1.7, 12]])
    det = _cars(gt.boxes, gt.locations, scores=[0.9, 0.8])
    result = evaluate_kitti_objects([gt], [det])
    expected = np.zeros(41)
    expected[:2] = 1.0
    for metric in ("bbox", "aos", "bev", "3d"):
        np.testing.assert_array_equal(result.precision["car"][metric], np.tile(expected, (3, 1)))
        np.testing.assert_allclose(result.ap11("car", metric), 100 / 11)
        np.testing.assert_allclose(result.ap40("car", metric), 100 / 40)


def test_iou_must_exceed_threshold_and_duplicates_are_false_positives() -> None:
    gt = _cars([[0, 100, 100, 200]], [[0, 1.7, 10]])
    # IoU exactly 0.7 (70x100 inside 100x100): not a match; a duplicate of the exact box is an FP.
    exact_07 = _cars([[0, 100, 70, 200]], [[0, 1.7, 10]], scores=[0.9])
    assert np.all(evaluate_kitti_objects([gt], [exact_07]).precision["car"]["bbox"] == 0)
    with_duplicate = _cars([[0, 100, 100, 200], [0, 100, 100, 200]], [[0, 1.7, 10]] * 2, scores=[0.9, 0.5])
    precision = evaluate_kitti_objects([gt], [with_duplicate]).precision["car"]["bbox"]
    np.testing.assert_allclose(precision[:, 0], 1.0)  # threshold 0.9: the duplicate is dropped
    np.testing.assert_allclose(precision[:, 1:], 0.0)


def test_aos_uses_alpha_and_is_dropped_by_a_missing_orientation() -> None:
    gt = _cars([[0, 100, 100, 200]], [[0, 1.7, 10]], alpha=[0.5])
    flipped = _cars(gt.boxes, gt.locations, scores=[0.9], alpha=[0.5 + np.pi / 2])
    result = evaluate_kitti_objects([gt], [flipped])
    np.testing.assert_allclose(result.precision["car"]["aos"][:, 0], 0.5)  # (1 + cos(pi/2)) / 2
    no_orientation = _cars(gt.boxes, gt.locations, scores=[0.9], alpha=[-10.0])
    result = evaluate_kitti_objects([gt], [no_orientation])
    assert result.precision["car"]["aos"] is None and result.precision["car"]["bbox"] is not None


def test_two_d_only_detections_skip_bev_and_3d() -> None:
    gt = _cars([[0, 100, 100, 200]], [[0, 1.7, 10]])
    det = _cars(gt.boxes, [[-1000.0, -1000.0, -1000.0]], scores=[0.9])
    result = evaluate_kitti_objects([gt], [det])
    assert result.precision["car"]["bev"] is None and result.precision["car"]["3d"] is None
    assert "not evaluated" in result.format_table()


def test_bev_threshold_presets() -> None:
    # The same car shifted 1 m along its 3.9 m length: BEV IoU = 2.9 / (7.8 - 2.9) = 0.59.
    gt = _cars([[0, 100, 100, 200]], [[0, 1.7, 10]])
    det = _cars(gt.boxes, [[1.0, 1.7, 10]], scores=[0.9])
    original = evaluate_kitti_objects([gt], [det], iou_thresholds="original")
    official = evaluate_kitti_objects([gt], [det], iou_thresholds="official")
    assert original.precision["car"]["bev"][0, 0] == 1.0  # > 0.5
    assert official.precision["car"]["bev"][0, 0] == 0.0  # not > 0.7
    custom = {"car": {"bbox": 0.7, "bev": 0.6, "3d": 0.6}}
    assert (
        evaluate_kitti_objects([gt], [det], iou_thresholds=custom, classes=["car"]).precision["car"]["bev"][0, 0] == 0
    )
    with pytest.raises(ValueError, match="pedestrian"):
        evaluate_kitti_objects([gt], [det], iou_thresholds=custom)


def test_rotated_intersection_matches_shapely() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    centres = rng.uniform(-2, 2, (2, n, 2))
    sizes = rng.uniform(0.3, 4, (2, n, 2))
    angles = rng.uniform(-4, 4, (2, n))
    half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) / 2
    local = half[None, None] * sizes[:, :, None, :]  # [2, n, 4, 2]
    c, s = np.cos(angles)[..., None], np.sin(angles)[..., None]
    corners = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1]], -1)
    corners = corners + centres[:, :, None, :]
    corners[1, :50] = corners[0, :50]  # identical boxes
    corners[1, 50:100] = corners[0, 50:100, ::-1]  # same boxes, opposite orientation
    ours = rotated_rectangle_intersection(corners[0], corners[1])
    reference = shapely.area(shapely.intersection(shapely.polygons(corners[0]), shapely.polygons(corners[1])))
    np.testing.assert_allclose(ours, reference, atol=1e-12)
    assert np.mean(reference > 0) > 0.3
