"""KITTI's one object type, its files and its geometry (``centernet.data.kitti``).

The writer is checked against the files the original's ``save_results`` wrote in the end-to-end
fixtures (``e2e/cases.json``, every ``ddd`` case, read from the fixture set in use).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from centernet.data.objects3d import Objects3D, box_corners, project_to_image
from centernet.data.kitti import format_kitti_lines, read_calib, read_kitti, read_kitti_file, write_kitti_results
from centernet.data.records import DataFormatError
from centernet.data.results import Results
from centernet.tasks.ddd import CLASS_NAMES

FIELDS = ("dims", "locations", "rotation_y", "alpha", "boxes", "truncation", "occlusion", "scores")


def _ddd_cases(reference_dir: Path) -> list[tuple[str, dict]]:
    cases = json.loads((reference_dir / "e2e" / "cases.json").read_text())["cases"]
    found = [(name, case) for name, case in cases.items() if case["task"] == "ddd"]
    assert found, "the e2e fixtures hold no ddd case"
    return found


def _as_float32(objects: Objects3D) -> Objects3D:
    """The objects with every value at float32 precision, as the network's rows are."""
    return dataclasses.replace(
        objects, **{name: getattr(objects, name).astype(np.float32) for name in FIELDS if name != "occlusion"}
    )


def _assert_same(a: Objects3D, b: Objects3D) -> None:
    assert a.types == b.types
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _random_objects(rng: np.random.Generator, n: int, detections: bool) -> Objects3D:
    """Objects whose every value has 2 decimals (what a KITTI file holds)."""
    x1, y1 = rng.uniform(0, 1200, n), rng.uniform(0, 370, n)
    return Objects3D(
        dims=rng.uniform(0.5, 5, (n, 3)).round(2),
        locations=rng.uniform(-40, 80, (n, 3)).round(2),
        rotation_y=rng.uniform(-np.pi, np.pi, n).round(2),
        alpha=rng.uniform(-np.pi, np.pi, n).round(2),
        types=list(rng.choice(["Car", "Pedestrian", "Cyclist", "Van", "DontCare"], n)),
        boxes=np.stack([x1, y1, x1 + rng.uniform(1, 200, n), y1 + rng.uniform(1, 100, n)], 1).round(2),
        truncation=None if detections else rng.choice([0.0, 0.25, 0.5, 1.0], n),
        occlusion=None if detections else rng.integers(0, 4, n),
        scores=rng.uniform(0, 1, n).round(2) if detections else None,
    )


def test_writer_reproduces_the_original_result_files(reference_dir: Path, tmp_path: Path) -> None:
    for name, case in _ddd_cases(reference_dir):
        for frame, written in case["results"].items():
            unrounded = tmp_path / f"{name}_{frame}.txt"
            unrounded.write_text("".join(line + "\n" for line in case["results_unrounded"][frame]))
            objects = _as_float32(read_kitti_file(unrounded, detections=True))
            assert format_kitti_lines(objects) == written, (name, frame)


def test_results_to_kitti_groups_classes_as_the_original(reference_dir: Path, tmp_path: Path) -> None:
    for name, case in _ddd_cases(reference_dir):
        calibs = {f"{int(image['id']):06d}": image["calib"] for image in case["images"]}
        for frame, written in case["results"].items():
            path = tmp_path / f"{name}_{frame}.txt"
            path.write_text("".join(line + "\n" for line in case["results_unrounded"][frame]))
            objects = _as_float32(read_kitti_file(path, detections=True))
            # Results hold the detections best first, whatever their class.
            order = np.argsort(-objects.scores, kind="stable")
            objects = objects.subset(order)
            results = Results(
                boxes=objects.boxes,
                scores=objects.scores,
                labels=np.array([CLASS_NAMES.index(t) for t in objects.types], np.int64),
                names=CLASS_NAMES,
                boxes_3d=Objects3D(objects.dims, objects.locations, objects.rotation_y, objects.alpha, calibs[frame]),
            )
            assert results.to_kitti() == "".join(line + "\n" for line in written), (name, frame)


def test_results_to_kitti_orders_by_class_then_keeps_each_class_order() -> None:
    n = 5
    labels = np.array([1, 0, 1, 2, 0])  # best first: Car, Pedestrian, Car, Cyclist, Pedestrian
    boxes_3d = Objects3D(np.ones((n, 3)), np.arange(3 * n).reshape(n, 3), np.zeros(n), np.arange(n) / 10, np.eye(3, 4))
    results = Results(np.tile([1.0, 2, 3, 4], (n, 1)), np.array([0.9, 0.8, 0.7, 0.6, 0.5]), labels, CLASS_NAMES, boxes_3d=boxes_3d)
    lines = results.to_kitti().splitlines()
    assert [line.split()[0] for line in lines] == ["Pedestrian", "Pedestrian", "Car", "Car", "Cyclist"]
    assert [line.split()[-1] for line in lines] == ["0.80", "0.50", "0.90", "0.70", "0.60"]
    assert lines[0] == "Pedestrian 0.0 0 0.10 1.00 2.00 3.00 4.00 1.00 1.00 1.00 3.00 4.00 5.00 0.00 0.80"
    empty = Results(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), CLASS_NAMES, boxes_3d=boxes_3d.subset([]))
    assert empty.to_kitti() == ""
    with pytest.raises(ValueError, match="3D boxes"):
        Results(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), CLASS_NAMES).to_kitti()


@pytest.mark.parametrize("detections", [True, False])
def test_write_then_parse_gives_the_same_objects(tmp_path: Path, detections: bool) -> None:
    frames = {i: _random_objects(np.random.default_rng(i), n, detections) for i, n in enumerate([7, 0, 1, 12])}
    if detections:
        write_kitti_results(tmp_path, frames)
    else:
        for i, objects in frames.items():
            (tmp_path / f"{i:06d}.txt").write_text("".join(line + "\n" for line in format_kitti_lines(objects, detections=False)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000.txt", "000001.txt", "000002.txt", "000003.txt"]
    assert (tmp_path / "000001.txt").read_text() == ""
    for i, objects in frames.items():
        parsed = read_kitti_file(tmp_path / f"{i:06d}.txt", detections=detections)
        _assert_same(parsed, objects)
        assert len(parsed) == len(objects)
    one = (tmp_path / "000002.txt").read_text().split()
    assert len(one) == (16 if detections else 15)
    if detections:
        assert one[1:3] == ["0.0", "0"]


def test_parser_accepts_either_width_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    label = "Car 0.50 2 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"
    path.write_text(f"{label}\n\n{label} 0.93\n")
    objects = read_kitti_file(path)
    np.testing.assert_array_equal(objects.scores, [1.0, 0.93])
    np.testing.assert_array_equal(objects.occlusion, [2, 2])
    np.testing.assert_array_equal(objects.truncation, [0.5, 0.5])


@pytest.mark.parametrize(
    "text, message",
    [
        ("Car 0.0 1.5 " + " ".join(["1.0"] * 12), r"bad\.txt \[line 1\]: occlusion must be an integer, found '1.5'"),
        ("\nCar 0.0 0 1.0", r"bad\.txt \[line 2\]: 4 columns, expected 15 or 16"),
        ("Car 0.0 0 " + " ".join(["1.0"] * 11) + " nan1", r"bad\.txt \[line 1\]: .*'nan1'"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.txt").write_text(text + "\n")
    with pytest.raises(DataFormatError, match=message):
        read_kitti_file(tmp_path / "bad.txt")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"000009\.txt: cannot read KITTI file"):
        read_kitti_file(tmp_path / "000009.txt", detections=True)


def test_the_data_reader_uses_the_same_parser(data_dir: Path) -> None:
    dataset = read_kitti(data_dir / "kitti_mini")
    assert len(dataset) > 0
    for record in dataset:
        label = record.path.parent.parent / "label_2" / f"{record.path.stem}.txt"
        parsed = read_kitti_file(label)
        lines = [line for line in label.read_text().splitlines() if line.split()]
        rows = [int(i) - 1 for i in record.annotation_ids]  # ids are line numbers (1-based, no blanks here)
        assert len(lines) == len(parsed)
        expected = parsed.subset(rows)
        objects = record.objects_3d
        assert objects.types == expected.types and objects.boxes is None
        for name in ("dims", "locations", "rotation_y", "alpha", "truncation", "occlusion"):
            np.testing.assert_array_equal(getattr(objects, name), getattr(expected, name), err_msg=name)
        np.testing.assert_array_equal(record.calib, read_calib(label.parent.parent / "calib" / label.name))


def test_subset_by_mask_and_by_index() -> None:
    objects = _random_objects(np.random.default_rng(3), 6, detections=False)
    by_mask = objects.subset(np.array([True, False, True, False, False, True]))
    by_index = objects.subset([5, 0, 2])
    assert len(by_mask) == 3 and by_mask.types == tuple(objects.types[i] for i in (0, 2, 5))
    _assert_same(by_index.subset([1, 2, 0]), by_mask)
    assert len(objects.subset([])) == 0 and objects.subset([]).types == ()


def test_box_corners_follow_kitti_axes() -> None:
    # A car 1.5 high, 1.6 wide, 4 long at (2, 1.7, 20), its length along the camera x axis, then turned 90 degrees.
    dims, location = np.array([[1.5, 1.6, 4.0]]), np.array([[2.0, 1.7, 20.0]])
    straight = box_corners(dims, location, np.array([0.0]))[0]
    np.testing.assert_allclose(straight[0], [4.0, 1.7, 20.8])
    np.testing.assert_allclose(straight[2], [0.0, 1.7, 19.2])
    np.testing.assert_allclose(straight[4], [4.0, 0.2, 20.8])  # top face: y - h (y points down)
    turned = box_corners(dims, location, np.array([np.pi / 2]))[0]
    np.testing.assert_allclose(turned[0], [2.8, 1.7, 18.0], atol=1e-12)  # length now along -z
    assert box_corners(dims, location, [0.0], dtype=np.float32).dtype == np.float32
    assert box_corners(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)).shape == (0, 8, 3)

    objects = Objects3D(dims, location, [np.pi / 2], [0.0], calib=[[700, 0, 600, 0], [0, 700, 180, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(objects.footprints(), turned[None, :4][:, :, [0, 2]])
    projected = objects.projected_corners()
    np.testing.assert_allclose(projected[0, 0], [700 * 2.8 / 18 + 600, 700 * 1.7 / 18 + 180])
    np.testing.assert_allclose(project_to_image(turned, objects.calib), projected[0], rtol=1e-6)
    with pytest.raises(ValueError, match="calib"):
        dataclasses.replace(objects, calib=None).projected_corners()
