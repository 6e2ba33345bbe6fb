"""Parity with the original's KITTI evaluator binary on every (gt, det) pair of the fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from centernet.evaluation.kitti import DIFFICULTIES, evaluate_kitti
from tests.helpers import assert_close

AP_TOLERANCE = 0.01  # percentage points
ARRAY_TOLERANCE = 1e-5  # the binary prints 6 decimals


@pytest.fixture(scope="module")
def kitti_eval_dir(reference_dir: Path) -> Path:
    folder = reference_dir / "kitti_eval"
    assert (folder / "results.json").is_file(), f"{folder}/results.json missing from the reference fixtures"
    return folder


@pytest.fixture(scope="module")
def evaluated(kitti_eval_dir: Path) -> list[tuple[str, dict, object]]:
    """(pair name, reference entry, our result) for every pair in results.json."""
    reference = json.loads((kitti_eval_dir / "results.json").read_text())
    pairs = reference["pairs"]
    assert pairs, "results.json lists no pairs"
    return [
        (name, pair, evaluate_kitti(kitti_eval_dir / pair["gt"], kitti_eval_dir / pair["det"]))
        for name, pair in pairs.items()
    ]


def _entries(evaluated):
    for name, pair, result in evaluated:
        for class_name, metrics in pair["results"].items():
            for metric, expected in metrics.items():
                yield f"{name}/{class_name}/{metric}", expected, result, class_name, metric


def test_frames_and_ground_truth_counts(evaluated) -> None:
    for name, pair, result in evaluated:
        assert result.num_frames == pair["n_frames_evaluated"], name
        for class_name, counts in pair["n_gt"].items():
            assert list(result.num_ground_truth[class_name]) == counts, f"{name}/{class_name}"


def test_not_evaluated_exactly_as_the_binary(evaluated) -> None:
    checked = 0
    for label, expected, result, class_name, metric in _entries(evaluated):
        assert (result.precision[class_name][metric] is None) == (expected is None), label
        checked += 1
    assert checked > 0


def test_ap11_and_ap40(evaluated) -> None:
    checked = 0
    for label, expected, result, class_name, metric in _entries(evaluated):
        if expected is None:
            continue
        for kind, ours in (("ap11", result.ap11(class_name, metric)), ("ap40", result.ap40(class_name, metric))):
            for difficulty, mine, theirs in zip(DIFFICULTIES, ours, expected[kind]):
                assert abs(mine - theirs) <= AP_TOLERANCE, f"{label}/{difficulty}/{kind}: {mine} != {theirs}"
                checked += 1
    assert checked > 0


def test_precision_arrays(evaluated) -> None:
    checked = 0
    for label, expected, result, class_name, metric in _entries(evaluated):
        if expected is None:
            continue
        reference = np.asarray(expected["precision"])
        assert reference.shape == (len(DIFFICULTIES), 41), label
        assert_close(result.precision[class_name][metric], reference, label, atol=ARRAY_TOLERANCE, rtol=0)
        checked += 1
    assert checked > 0
