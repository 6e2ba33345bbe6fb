"""A task defined outside the package: 2D boxes plus an orientation head, registered through the
public registry, trained, validated and used for prediction through the Python API and the CLI
without a line of ``src/`` knowing it."""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest

import centernet
from centernet.cli import main
from centernet.data.geometry import ImageMeta
from centernet.models.detector import CenterNet
from centernet.tasks import get_task, register_task, task_name_for_heads, task_names
from centernet.tasks.ctdet import CtdetTask
from centernet.tasks.losses import reg_l1_loss
from tests.helpers import tiny_synthetic_run


@register_task
class BoxAngleTask(CtdetTask):
    """``ctdet`` plus an ``angle`` head regressing ``(sin, cos)`` of each box's diagonal angle."""

    name = "box_angle"

    @classmethod
    def head_channels(cls, num_classes: int) -> dict[str, int]:
        return {**super().head_channels(num_classes), "angle": 2}

    def __init__(self, num_classes: int, **options) -> None:
        super().__init__(num_classes, **options)
        self.loss_weights["angle_loss"] = 1.0

    def encode(self, annotations: Mapping[str, np.ndarray], meta: ImageMeta) -> dict[str, np.ndarray]:
        targets = super().encode(annotations, meta)
        boxes = np.asarray(annotations["boxes"], np.float32).reshape(-1, 4)[: self.max_objects]
        angle = np.arctan2(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0])
        rows = np.zeros((self.max_objects, 2), np.float32)
        rows[: len(boxes)] = np.stack([np.sin(angle), np.cos(angle)], axis=1)
        return {**targets, "angle": rows}

    def stack_losses(self, output, batch):
        losses = super().stack_losses(output, batch)
        losses["angle_loss"] = reg_l1_loss(output["angle"], batch["reg_mask"], batch["ind"], batch["angle"])
        return losses


def test_the_registry_knows_the_new_task_by_name_and_by_heads():
    assert "box_angle" in task_names()
    task = get_task("box_angle", 3)
    assert task.heads == {"hm": 3, "wh": 2, "reg": 2, "angle": 2}
    assert task_name_for_heads(task.heads) == "box_angle"
    assert task_name_for_heads({"hm": 3, "wh": 2, "reg": 2}) == "ctdet"
    targets = task.encode({"boxes": np.array([[0, 0, 10, 10]], np.float32), "labels": np.array([0])}, _meta())
    np.testing.assert_allclose(targets["angle"][0], [math.sqrt(0.5), math.sqrt(0.5)], atol=1e-6)


def _meta() -> ImageMeta:
    return ImageMeta(center=np.array([32, 32], np.float32), scale=64.0, input_hw=(64, 64), output_hw=(16, 16), image_hw=(64, 64))


@pytest.mark.slow
def test_train_val_predict_a_registered_task_through_the_api_and_the_cli(tmp_path, capsys):
    run = [f"project={tmp_path}", "task=box_angle", "train.epochs=1", *tiny_synthetic_run()]
    centernet.train(None, *run, "name=api")
    assert "angle_loss" in (tmp_path / "api" / "results.csv").read_text().splitlines()[0]
    weights = tmp_path / "api" / "best.pt"
    detector = CenterNet.from_checkpoint(weights)
    assert detector.task.name == "box_angle" and "angle" in detector.task.heads

    report = centernet.evaluate(weights)
    assert 0.0 <= report.primary <= 1.0
    image = np.full((64, 64, 3), 255, np.uint8)
    image[20:40, 10:50] = 0
    folder = tmp_path / "images"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "shape.png"), image)
    [result] = list(centernet.predict(weights, folder))
    assert result.boxes.shape[1] == 4 and len(result) > 0

    assert main(["train", *run, "name=cli"]) == 0
    assert "angle_loss" in (tmp_path / "cli" / "results.csv").read_text()
    cli_weights = tmp_path / "cli" / "best.pt"
    assert main(["val", "--weights", str(cli_weights)]) == 0
    out = tmp_path / "predicted"
    assert main(["predict", "--weights", str(cli_weights), "--source", str(folder), "--output", str(out), "--save-txt"]) == 0
    assert any(out.rglob("*.txt"))
    trained = CenterNet.from_checkpoint(cli_weights).network.state_dict()
    assert any(key.startswith("angle") for key in trained)

    # Export: the task's own (inherited) in-graph decoder, through the API and the CLI (words in any order).
    from centernet.export import OnnxDetector

    graph = centernet.export(weights, tmp_path / "box_angle.onnx")
    onnx_result = OnnxDetector(graph).predict([image])[0]
    # An untrained network ties many scores at the top-K cut, where onnxruntime and torch may keep
    # other tied peaks: the scores kept are the same (the boxes are compared on trained ctdet graphs).
    assert len(onnx_result) == len(result)
    np.testing.assert_allclose(np.sort(onnx_result.scores), np.sort(np.asarray(result.scores)), atol=1e-4)
    assert main(["export", "test.K=20", "--weights", str(cli_weights), "--output", str(tmp_path / "k20.onnx")]) == 0
    assert len(OnnxDetector(tmp_path / "k20.onnx").predict([image])[0]) <= 20
