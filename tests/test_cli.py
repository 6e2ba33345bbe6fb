"""The command line end to end on a tiny synthetic run: train, val, predict (folder and video), export, data check."""
from __future__ import annotations

import json

import cv2
import pytest

from centernet.cli import main
from centernet.data.check import load_dataset
from tests.helpers import tiny_synthetic_run

TINY = [*tiny_synthetic_run(), "train.epochs=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["train", f"project={root}", "name=tiny", *TINY]) == 0
    return root / "tiny"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    data = load_dataset("synthetic", "val", num_images=3, image_size=64)
    for i in range(3):
        cv2.imwrite(str(folder / f"im{i}.png"), data.load_image(i))
    return folder


def test_train_writes_a_self_describing_checkpoint(trained):
    from centernet.data.synthetic import SHAPE_CLASSES
    from centernet.models.checkpoint import CHECKPOINT_FORMAT_VERSION, load_checkpoint

    ckpt = load_checkpoint(trained / "best.pt")
    assert ckpt["format"] == "centernet" and ckpt["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert ckpt["arch"] == "res_18" and ckpt["task"] == "ctdet" and ckpt["head_conv"] == 16
    assert ckpt["heads"] == {"hm": len(SHAPE_CLASSES), "wh": 2, "reg": 2}
    assert ckpt["class_names"] == list(SHAPE_CLASSES) and ckpt["input_size"] == [64, 64]
    assert ckpt["state_dict"]["hm.2.weight"].shape[0] == len(SHAPE_CLASSES)
    assert ckpt["config"]["name"] == "tiny" and ckpt["config"]["train"]["epochs"] == 1
    rows = (trained / "results.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and rows[1].startswith("1,")


def test_val_prints_the_twelve_coco_numbers(trained, capsys):
    assert main(["val", "--weights", str(trained / "best.pt"), "--save-json", str(trained / "val.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("Average Precision") == 6 and out.count("Average Recall") == 6
    # The COCO results list of every validation image: K = 100 rows each (the original writes them all).
    rows = json.loads((trained / "val.json").read_text())
    val_ids = [record.image_id for record in load_dataset("synthetic", "val", num_images=4, image_size=64).records]
    per_image = {image_id: sum(r["image_id"] == image_id for r in rows) for image_id in val_ids}
    assert len(rows) == sum(per_image.values()) and min(per_image.values()) >= 100, per_image
    for row in rows:
        assert set(row) == {"image_id", "category_id", "bbox", "score"} and row["category_id"] in (1, 2, 3)
        assert len(row["bbox"]) == 4 and row["bbox"][2] >= 0 and row["bbox"][3] >= 0 and 0 <= row["score"] <= 1


def test_predict_on_a_folder_with_txt_labels(trained, image_folder, tmp_path):
    out = tmp_path / "pred"
    code = main(["predict", "--weights", str(trained / "best.pt"), "--source", str(image_folder), "--output", str(out), "--save-txt", "--conf", "0"])
    assert code == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png", "im2.png"]
    rows = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in rows} == {0, 1, 2}
    assert all(len(r["bbox"]) == 4 and r["category_id"] in (1, 2, 3) for r in rows)
    label_lines = (out / "labels" / "im0.txt").read_text().split("\n")
    assert len(label_lines[0].split()) == 6


def test_predict_on_a_glob_and_a_video(trained, image_folder, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for path in sorted(image_folder.glob("*.png")):
        writer.write(cv2.imread(str(path)))
    writer.release()
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(trained / "best.pt"), "--source", str(video), "--output", str(out)]) == 0
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    out2 = tmp_path / "pred2"
    assert main(["predict", "--weights", str(trained / "best.pt"), "--source", str(image_folder / "im*.png"), "--output", str(out2)]) == 0
    assert len(list(out2.glob("*.png"))) == 3


def test_predict_from_a_webcam_writes_its_video(trained, image_folder, tmp_path, monkeypatch):
    """``--source 0``: a webcam (OpenCV's capture stood in for: no camera here) gives a drawn video."""
    pictures = [cv2.imread(str(p)) for p in sorted(image_folder.glob("*.png"))]

    class Camera:
        def __init__(self, target):
            assert target == 0
            self.pictures = list(pictures)

        def isOpened(self):
            return True

        def read(self):
            return (True, self.pictures.pop(0)) if self.pictures else (False, None)

        def get(self, prop):
            return 12.0 if prop == cv2.CAP_PROP_FPS else 0.0

        def release(self):
            pass

    real_capture = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture", Camera)
    out = tmp_path / "cam"
    assert main(["predict", "--weights", str(trained / "best.pt"), "--source", "0", "--output", str(out)]) == 0
    monkeypatch.setattr(cv2, "VideoCapture", real_capture)
    capture = cv2.VideoCapture(str(out / "webcam0.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(pictures)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (64, 64)
    capture.release()
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [0, 1, 2]


def test_python_api_mirrors_the_cli(trained, image_folder):
    import centernet

    results = list(centernet.predict(trained / "best.pt", image_folder))
    assert len(results) == 3
    first = results[0]
    assert first.boxes.shape[1] == 4 and len(first.scores) == len(first.labels)
    assert list(first.names) == ["rectangle", "ellipse", "triangle"]
    assert first.plot().shape == (64, 64, 3)
    report = centernet.evaluate(trained / "best.pt")
    assert 0.0 <= report.primary <= 1.0


def test_data_check_summarises(capsys):
    assert main(["data", "check", "synthetic"]) == 0
    assert "synthetic" in capsys.readouterr().out


def test_errors_are_one_clear_line(tmp_path, image_folder, capsys):
    assert main(["predict", "--weights", str(tmp_path / "missing.pt"), "--source", str(image_folder)]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["train", "train.epochz=3"]) == 2
    assert "epochz" in capsys.readouterr().err


def test_export_cli_writes_an_onnx_model(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(trained / "best.pt"), "--output", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 1e6


def test_predict_with_flip_and_multi_scale_soft_nms(trained, image_folder, tmp_path):
    out = tmp_path / "tta"
    code = main(["predict", "--weights", str(trained / "best.pt"), "--source", str(image_folder), "--output", str(out), "--flip", "--scales", "0.5", "1", "1.5"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert rows and all(0.0 <= r["score"] <= 1.0 for r in rows)


def test_demo_runs_its_recipe_end_to_end(tmp_path, capsys):
    """`centernet demo`, shrunk to seconds: the shipped recipe's settings, training, AP, drawn predictions."""
    output = tmp_path / "demo"
    shrink = ["data.synthetic_images={train: 16, val: 4}", "data.num_workers=0", "train.epochs=1", "train.save_images=0"]
    assert main(["demo", "--output", str(output), *shrink]) == 0
    captured = capsys.readouterr()
    assert "demo: COCO AP" in captured.out
    assert "threads: " in captured.err and "intra-op thread(s)" in captured.err  # the choice and why, told
    config = (output / "config.yaml").read_text()
    for setting in ("cpu_bf16: true", "channels_last: true", "dense_wh: true", "wh_loss: 0.2", "warmup_iters: 200", "flip: true"):
        assert setting in config, setting
    assert (output / "best.pt").is_file()
    assert len(list((output / "predictions").glob("synthetic_*.jpg"))) == 4
