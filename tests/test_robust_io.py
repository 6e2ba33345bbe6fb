"""Issue 22's input / output classes through the real entry points: nothing computed is lost, runs
never mix, one decoder for every pass, safe folder walks, and the smaller frictions.

The cases that could crash the interpreter (a file name that is not valid UTF-8 handed to OpenCV)
or that need a process-wide limit (a file-size limit that makes writes fail) run the installed
``centernet`` command in a subprocess; the others call ``centernet.cli.main`` in-process.
"""
from __future__ import annotations

import io
import json
import logging
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from centernet.cli import main
from centernet.data.check import load_dataset
from tests.helpers import tiny_synthetic_run

TINY = [*tiny_synthetic_run(train_images=4, val_images=2), "train.epochs=1", "train.tensorboard=false"]
CENTERNET = Path(sys.executable).with_name("centernet")
BAD_NAME = os.fsdecode(b"bad\xff.jpg")  # not valid UTF-8: cv2.imread on it crashes the process


def centernet(*args: str, cwd: Path, file_size_limit: int | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``centernet ARGS`` in a fresh process (PYTHONPATH inherited), optionally under a file-size limit."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    command = [str(CENTERNET)] if CENTERNET.exists() else [sys.executable, "-m", "centernet.cli"]
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, timeout=timeout, check=False,
        preexec_fn=limit if file_size_limit else None,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("robust_io")
    assert main(["train", f"project={root}", "name=tiny", *TINY]) == 0
    return root / "tiny" / "best.pt"


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    data = load_dataset("synthetic", "val", num_images=3, image_size=64)
    return [data.load_image(i) for i in range(3)]


def _write(path: Path, image: np.ndarray) -> Path:
    """Any file name, through Python (OpenCV's own writer takes UTF-8 names only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(path.suffix, image)[1].tobytes())
    return path


# ---------------------------------------------------------------- 1: nothing computed is lost
def test_a_file_name_that_is_not_utf8_is_predicted_and_checked_not_a_crash(weights, pictures, tmp_path):
    source = tmp_path / "photos"
    _write(source / "a.png", pictures[0])
    _write(source / BAD_NAME, pictures[1])
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for picture in pictures[:2]:
        writer.write(picture)
    writer.release()
    bad_video = os.fsdecode(b"clip\xfe.avi")
    (tmp_path / "clip.avi").rename(source / bad_video)  # OpenCV's video reader and writer crash on such names too
    proc = centernet("predict", "--weights", str(weights), "--source", str(source), "--conf", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert proc.stdout.decode().startswith("4 images/frames, ")
    out = tmp_path / "runs" / "predict"
    assert (out / BAD_NAME).is_file() and (out / "a.png").is_file()
    assert (out / os.fsdecode(b"clip\xfe.mp4")).stat().st_size > 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(line["file"], line["frame"]) for line in lines] == [
        (str(source / "a.png"), None), (str(source / BAD_NAME), None), (str(source / bad_video), 0), (str(source / bad_video), 1)
    ]

    # The data check (and training's decode pass) hashes and decodes it by its bytes too.
    (source / "notes.txt").write_text("not an image: the walk passes it over\n")
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "photos", "val": "photos", "names": ["thing"]}))
    proc = centernet("data", "check", str(data), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert "Images: 2" in proc.stdout.decode() and "Bad images" not in proc.stdout.decode()


def test_outputs_are_unique_within_a_run_and_each_line_names_its_files(weights, pictures, tmp_path, capsys):
    source = tmp_path / "src"
    for name, picture in [("a/x.jpg", 0), ("b/x.jpg", 1), ("y.jpg", 2), ("y.png", 0)]:
        _write(source / name, pictures[picture])
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), "--source", str(source / "**" / "*.*"), "--output", str(out), "--save-txt", "--conf", "0"]) == 0
    assert "4 images/frames" in capsys.readouterr().out
    drawn = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.suffix in (".jpg", ".png"))
    assert drawn == ["a/x.jpg", "b/x.jpg", "y.jpg", "y_png.png"]
    labels = sorted(str(p.relative_to(out / "labels")) for p in (out / "labels").rglob("*.txt"))
    assert labels == ["a/x.txt", "b/x.txt", "y.txt", "y_png.txt"]
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["outputs"] for line in lines] == [
        ["a/x.jpg", "labels/a/x.txt"], ["b/x.jpg", "labels/b/x.txt"], ["y.jpg", "labels/y.txt"], ["y_png.png", "labels/y_png.txt"],
    ]
    assert [line["detections"][0]["file_name"] for line in lines] == ["a/x.jpg", "b/x.jpg", "y.jpg", "y.png"]


def test_a_failed_write_names_the_file_exits_2_and_keeps_what_was_done(weights, pictures, tmp_path):
    source = tmp_path / "src"
    _write(source / "a_small.png", np.zeros((64, 64, 3), np.uint8))  # a drawing of a few hundred bytes
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    _write(source / "b_noise.png", noise)  # its drawing is ~200 kB: past the limit
    out = tmp_path / "out"
    proc = centernet("predict", "--weights", str(weights), "--source", str(source), "--output", str(out), "--score-thresh", "0.5",
                     cwd=tmp_path, file_size_limit=64_000)
    line = one_error_line(proc)
    assert f"cannot write {out / 'b_noise.png'}: File too large" in line, line
    assert f"the detections of the 2 images/frames done are kept in {out}" in line, line
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["outputs"] for line in lines] == [["a_small.png"], ["b_noise.png"]]  # the second's detections kept
    assert isinstance(json.loads((out / "results.json").read_text()), list)  # flushed on the failure too
    assert (out / "a_small.png").is_file() and not (out / "b_noise.png").exists()  # no half-written drawing


# ---------------------------------------------------------------- 2: runs are kept apart
def test_each_predict_run_takes_a_fresh_folder_recording_its_command(weights, pictures, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "one.png", pictures[0])
    command = ["predict", "--weights", str(weights), "--source", "one.png"]
    assert main(command) == 0 and main([*command, "--conf", "0"]) == 0
    first, second = tmp_path / "runs" / "predict", tmp_path / "runs" / "predict2"
    assert "results in runs/predict2" in capsys.readouterr().out
    for folder, conf in ((first, 0.3), (second, 0.0)):
        record = yaml.safe_load((folder / "args.yaml").read_text())
        assert record["command"].split()[1:] == ["predict", "--weights", str(weights), "--source", "one.png", *(["--conf", "0"] if conf == 0 else [])]
        assert record["conf"] == conf and record["output"] == str(folder.relative_to(tmp_path))
        assert record["test"]["K"] == 100 and record["data"]["input_size"] == [64, 64]  # the resolved options
        assert (folder / "one.png").is_file() and len((folder / "results.jsonl").read_text().splitlines()) == 1

    # A chosen folder holding a run is refused before the model loads, and left as it was.
    before = sorted(p.name for p in first.iterdir())
    code = main([*command, "--output", str(first)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and f"output folder {first} already holds" in err, err
    assert sorted(p.name for p in first.iterdir()) == before
    assert main([*command, "name=mine"]) == 0 and (tmp_path / "runs" / "mine" / "results.json").is_file()
    assert main([*command, "name=mine", "on_existing_run=increment"]) == 0 and (tmp_path / "runs" / "mine-2" / "args.yaml").is_file()


def test_a_training_run_folder_records_its_command(weights):
    record = (weights.parent / "command.txt").read_text().splitlines()
    assert record == [shlex.join(["centernet", "train", f"project={weights.parent.parent}", "name=tiny", *TINY])]


def test_val_writes_into_a_fresh_folder_or_a_new_path_never_over_an_earlier_run(weights, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["val", "--weights", str(weights), "--save-json"]) == 0
    assert main(["val", "--weights", str(weights), "--save-json"]) == 0
    for folder in (tmp_path / "runs" / "val", tmp_path / "runs" / "val2"):
        assert isinstance(json.loads((folder / "results.json").read_text()), list)
        record = yaml.safe_load((folder / "args.yaml").read_text())
        assert record["command"] == f"centernet val --weights {weights} --save-json" and record["test"]["K"] == 100
    earlier = tmp_path / "runs" / "val" / "results.json"
    before = earlier.read_text()
    capsys.readouterr()
    assert main(["val", "--weights", str(weights), "--save-json", str(earlier)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"--save-json {earlier}: the file exists" in err and "Traceback" not in err
    assert earlier.read_text() == before
    assert main(["val", "--weights", str(weights), "--save-json", str(earlier), "on_existing_run=overwrite"]) == 0


# ---------------------------------------------------------------- 4: one decoder
def test_what_the_check_passes_training_reads_and_skip_skips_the_rest(pictures, tmp_path, capsys, caplog):
    """An ICO file named .png: Pillow reads it, OpenCV (training's decoder) does not."""
    root = tmp_path / "set"
    for i in range(4):
        _write(root / "images" / f"im{i}.png", pictures[i % 3])
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"im{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    ico = io.BytesIO()
    Image.fromarray(pictures[0][:, :, ::-1]).save(ico, format="ICO")
    (root / "images" / "odd.png").write_bytes(ico.getvalue())
    with Image.open(root / "images" / "odd.png") as opened:
        opened.load()  # Pillow reads it whole: the former check passed it
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "images", "val": "images", "names": ["thing"]}))

    assert main(["data", "check", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"{root / 'images' / 'odd.png'}: not a decodable image" in out and "Bad images: 1" in out

    overrides = [f"data.source={data}", "data.num_workers=0", "data.input_size=[64,64]", "model.head_conv=16",
                 "train.batch_size=4", "train.epochs=1", "train.save_images=0", "train.tensorboard=false",
                 f"project={tmp_path}", "name=skip", "data.on_bad_image=skip"]
    with caplog.at_level(logging.INFO):
        assert main(["train", *overrides]) == 0
    assert "4 images, 4 boxes" in caplog.text and "bad images skipped 1" in caplog.text


# ---------------------------------------------------------------- 5: safe folder walks
def _looping_tree(root: Path, picture: np.ndarray) -> None:
    _write(root / "a" / "x.png", picture)
    _write(root / "a" / "b" / "y.png", picture)
    (root / "a" / "up").symlink_to("..")  # back to the root
    (root / "a" / "b" / "top").symlink_to("../..")  # a second loop: glob never ends with both
    (root / "again").symlink_to("a")
    (root / "same.png").symlink_to("a/x.png")
    (root / "gone.png").symlink_to("nowhere.png")


def test_a_glob_over_looping_links_visits_each_file_once_and_names_the_links(weights, pictures, tmp_path, capsys):
    source = tmp_path / "tree"
    _looping_tree(source, pictures[0])
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), "--source", str(source / "**" / "*.png"), "--output", str(out)]) == 0
    printed = capsys.readouterr()
    lines = [json.loads(line)["file"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert lines == [str(source / "a" / "b" / "y.png"), str(source / "a" / "x.png")]
    assert printed.out.startswith("2 images/frames") and "5 files skipped" in printed.out
    for link, reason in [("again", "link to a folder already walked"), ("a/up", "link to a folder already walked"),
                         ("a/b/top", "link to a folder already walked"), ("same.png", f"the same file as {source / 'a' / 'x.png'}"),
                         ("gone.png", "broken symbolic link")]:
        shown = [line for line in printed.out.splitlines() if line.startswith(f"skipped {source / link}: ")]
        assert len(shown) == 1 and reason in shown[0], (link, printed.out)
        assert str(source / link) not in printed.err  # each skipped file printed once


@pytest.mark.parametrize("pattern", ["*.png", "**/*.png", "**", "a/*/*.png", "*/**/*.jpg", "?.png", "[ab]*/*", ".*/*.png", "a/**/b/*.png"])
def test_the_safe_glob_matches_python_glob_where_there_are_no_links(tmp_path, monkeypatch, pattern):
    import glob

    from centernet.data.files import glob_files

    for name in ["x.png", "y.jpg", "a/x.png", "a/b/y.png", "a/b/c/z.jpg", "a/.hidden/h.png", ".top/t.png", "b2/q.png", "a/c/b/w.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for root in ("", f"{tmp_path}/"):  # relative and absolute patterns
        expected = sorted(Path(p) for p in glob.glob(root + pattern, recursive=True) if Path(p).is_file())
        assert glob_files(root + pattern).files == expected, (root, pattern)


def test_a_yolo_folder_with_looping_links_is_read_once_and_the_links_reported(pictures, tmp_path, capsys):
    root = tmp_path / "set"
    _looping_tree(root / "images", pictures[0])
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": ".", "train": "images", "val": "images", "names": ["thing"]}))
    assert main(["data", "check", str(data), "--no-decode"]) == 0
    out = capsys.readouterr().out
    assert "Images: 2 " in out and "link_not_followed: 5" in out


# ---------------------------------------------------------------- 7: smaller frictions
def test_video_results_carry_their_frame_and_the_bar_counts_frames(weights, pictures, tmp_path, capsys):
    import centernet

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for picture in pictures:
        writer.write(picture)
    writer.release()
    assert [r.frame for r in centernet.predict(weights, video)] == [0, 1, 2]
    assert [r.frame for r in centernet.predict(weights, _write(tmp_path / "one.png", pictures[0]))] == [None]
    assert main(["predict", "--weights", str(weights), "--source", str(video), "--output", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "3/3" in err and "frame/s" in err and "image/s" not in err


def test_pretrained_backbone_weights_say_that_they_loaded(tmp_path, caplog):
    import torchvision

    from centernet.models.pretrained import load_pretrained_backbone
    from centernet.models.registry import build_model

    path = tmp_path / "resnet18.pth"
    import torch

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = build_model("res_18", {"hm": 3, "wh": 2, "reg": 2}, 16)
    with caplog.at_level(logging.INFO, logger="centernet.models.pretrained"):
        load_pretrained_backbone(model, "res_18", path)
    assert f"model.pretrained: res_18 ImageNet backbone weights loaded (" in caplog.text
    assert f"from {path}" in caplog.text


def test_ctrl_c_in_the_demo_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import centernet.engine.demo

    output = tmp_path / "demo"

    def interrupt(out, overrides=(), resume=False):
        Path(out).mkdir()
        (Path(out) / "last.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(centernet.engine.demo, "run_demo", interrupt)
    assert main(["demo", "--output", str(output)]) == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted: the demo's last checkpoint is {output / 'last.pt'}; continue with: centernet demo --output {output} --resume"
    )
    shutil.rmtree(output)
    monkeypatch.setattr(centernet.engine.demo, "run_demo", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["demo", "--output", str(output)]) == 130
    assert "no checkpoint yet" in capsys.readouterr().err


def test_an_interrupted_demo_resumes_from_its_last_checkpoint(tmp_path, capsys):
    output = tmp_path / "demo"
    shrink = ["data.synthetic_images={train: 8, val: 2}", "data.synthetic_image_size=64", "data.input_size=[64,64]",
              "data.num_workers=0", "train.save_images=0", "train.tensorboard=false"]
    assert main(["demo", "--output", str(output), *shrink, "train.epochs=1"]) == 0
    assert main(["demo", "--output", str(output), "--resume", "train.epochs=2"]) == 0
    assert [row.split(",")[0] for row in (output / "results.csv").read_text().splitlines()[1:]] == ["1", "2"]
    assert (output / "command.txt").read_text().splitlines()[-1] == f"centernet demo --output {output} --resume train.epochs=2"
    assert "demo: COCO AP" in capsys.readouterr().out


def test_readme_names_the_int8_file_export_writes():
    root = Path(__file__).parents[1]
    readme = "\n".join(path.read_text() for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    assert "model_int8.onnx" not in readme and "best_int8.onnx" in readme  # export's default: best.pt -> best_int8.onnx
