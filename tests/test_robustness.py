"""Hostile inputs: each broken file, folder, checkpoint or concurrent run gets one exact, named behaviour.

Each of issue 13's defects has a test here that fails on the code before it: runs of the same
name mixing (1), images that cannot be decoded passing the check and failing mid-epoch (2), a
json size that disagrees with the image (4), duplicate image ids (5), corrupt JPEG data (6), raw
tracebacks for bad weights (9), unknown checkpoint versions (10), weak messages (11), and CI
passing without its fixtures (12). Beyond those: the other bad inputs a demanding user tries.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from centernet import CenterNet
from centernet.cli import main
from centernet.config import ConfigError, load_config
from centernet.data import DataFormatError, ImageReadError, load_image, read_coco, read_yolo
from centernet.data.check import check_images, inspect_dataset, prepare_training_data
from centernet.data.image_io import verify_image
from centernet.data.voc import read_voc
from centernet.engine.run_folder import LOCK_NAME, RunFolder, RunLockedError
from centernet.engine.trainer import Trainer
from centernet.models.checkpoint import CheckpointError, load_checkpoint, read_state_dict

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def _pixels(seed: int) -> np.ndarray:
    """Smooth random pixels: JPEG-coded they fill many entropy-coded bytes worth corrupting."""
    noise = np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 2)


def _coco(root: Path, num_images: int = 4, edit=None) -> Path:
    """``num_images`` 64x64 JPEGs with one 20x20 box each; ``edit(data)`` may break the json first."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        cv2.imwrite(str(root / "images" / f"im{i}.jpg"), _pixels(i))
        images.append({"id": i + 1, "file_name": f"im{i}.jpg", "width": SIZE, "height": SIZE})
        annotations.append({"id": 100 + i, "image_id": i + 1, "category_id": 1, "bbox": [10, 12, 20, 20], "iscrowd": 0})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    if edit is not None:
        edit(data)
    path = root / "train.json"
    path.write_text(json.dumps(data))
    return path


def _corrupt_mid_stream(path: Path) -> None:
    """Overwrites bytes in the middle of the entropy-coded data (markers and the end marker stay)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for position in rng.integers(len(data) // 2, len(data) * 3 // 4, 12):
        data[position] = rng.integers(0, 255)
    path.write_bytes(bytes(data))


def _tiny(project: Path, source: Path, *extra: str):
    return load_config(
        None,
        [
            f"project={project}",
            "name=run",
            f"data.source={source}",
            f"data.val_source={source}",
            "data.val_split=all",  # validate on the training file itself
            f"data.input_size=[{SIZE},{SIZE}]",
            "data.num_workers=0",
            "model.head_conv=8",
            "train.batch_size=2",
            "train.epochs=1",
            "train.save_images=0",
            *extra,
        ],
    )


# ---------------------------------------------------------------- 1: run folders never mix


def _begun(cfg, resume: bool = False) -> RunFolder:
    run = RunFolder(cfg, resume=resume)
    run.begin(cfg)
    return run


def test_a_folder_holding_only_config_and_results_is_an_existing_run(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, tmp_path / "none.json")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.csv").write_text("epoch,loss\n1,2.0\n")
    with pytest.raises(FileExistsError, match="already holds a run .*results.csv.*--resume.*on_existing_run=overwrite"):
        RunFolder(cfg)
    assert (tmp_path / "run" / "results.csv").read_text() == "epoch,loss\n1,2.0\n"  # untouched
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # a refused run leaves no lock behind


def test_a_second_run_of_the_same_name_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    first = _begun(_tiny(tmp_path, tmp_path / "x.json"))
    for mode in ("error", "overwrite"):
        with pytest.raises(RunLockedError, match=f"in use by a live run \\(pid {os.getpid()} on host"):
            RunFolder(_tiny(tmp_path, tmp_path / "x.json", f"on_existing_run={mode}"))
    with pytest.raises(RunLockedError):
        RunFolder(_tiny(tmp_path, tmp_path / "x.json"), resume=True)
    # Two set up before either started: the second to begin is refused under the lock.
    late = RunFolder(_tiny(tmp_path, tmp_path / "y.json", "name=other"))
    early = _begun(_tiny(tmp_path, tmp_path / "y.json", "name=other"))
    with pytest.raises(RunLockedError):
        late.begin(_tiny(tmp_path, tmp_path / "y.json", "name=other"))
    assert sorted(p.name for p in first.root.iterdir()) == [LOCK_NAME, "command.txt", "config.yaml", "images"]
    first.close(), early.close()
    assert not (first.root / LOCK_NAME).exists()


def test_a_run_refused_while_it_is_set_up_leaves_nothing_behind(tmp_path: Path) -> None:
    json_path = _coco(tmp_path / "data")
    _break("empty", tmp_path / "data" / "images" / "im0.jpg")
    cfg = _tiny(tmp_path, json_path)
    with pytest.raises(DataFormatError, match="im0.jpg: empty file"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()  # a retry after the fix is not taken for an earlier run
    with pytest.raises(FileNotFoundError, match="last.pt"):
        Trainer(_tiny(tmp_path, _coco(tmp_path / "fixed")), resume=True)
    assert not (tmp_path / "run").exists()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from centernet.config import load_config
    from centernet.engine.run_folder import RunFolder
    cfg = load_config(None, [f"project={sys.argv[1]}", "name=run"])
    run = RunFolder(cfg)  # held: a dropped RunFolder releases its lock
    run.begin(cfg)
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_run_in_another_process_holds_the_folder_until_it_dies(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = load_config(None, [f"project={tmp_path}", "name=run", "on_existing_run=overwrite"])
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunFolder(cfg)
    finally:
        holder.kill()  # like kill -9: no clean-up runs, the lock file stays behind
        holder.wait()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == holder.pid
    run = _begun(cfg)  # the dead holder's lock is stale: taken over (and overwrite empties the folder)
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    run.close()


def test_increment_picks_a_new_name_and_overwrite_empties_the_folder(tmp_path: Path) -> None:
    _begun(_tiny(tmp_path, tmp_path / "x.json")).close()
    (tmp_path / "run" / "last.pt").write_bytes(b"old")
    cfg = _tiny(tmp_path, tmp_path / "x.json", "on_existing_run=increment")
    second = _begun(cfg)
    assert second.root == tmp_path / "run-2" and cfg.name == "run-2"
    assert load_config(second.root / "config.yaml").name == "run-2"
    third = _begun(_tiny(tmp_path, tmp_path / "x.json", "on_existing_run=increment"))
    assert third.root == tmp_path / "run-3"  # run-2 is taken: never shared
    second.close(), third.close()
    replaced = _begun(_tiny(tmp_path, tmp_path / "x.json", "on_existing_run=overwrite"))
    assert sorted(p.name for p in replaced.root.iterdir()) == [LOCK_NAME, "command.txt", "config.yaml", "images"]
    replaced.close()
    with pytest.raises(ConfigError, match="on_existing_run: 'sometimes' is not one of error, increment, overwrite"):
        RunFolder(_tiny(tmp_path, tmp_path / "x.json", "on_existing_run=sometimes"))


# ---------------------------------------------------------------- 2, 4, 6: images decoded before training


def _break(kind: str, path: Path) -> str:
    """Breaks one image file in the way ``kind`` says; returns the words the message must hold."""
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "truncated JPEG"
    if kind == "empty":
        path.write_bytes(b"")
        return "empty file"
    if kind == "text":
        path.write_text("this is not an image")
        return "not a decodable image"
    if kind == "missing":
        path.unlink()
        return "image file not found"
    if kind == "corrupt":
        _corrupt_mid_stream(path)
        return "corrupt JPEG"
    if kind == "folder":
        path.unlink()
        path.mkdir()
        return "is a folder"
    if kind == "symlink_loop":
        path.unlink()
        path.symlink_to(path)
        return "image file not found (a broken or looping symbolic link)"
    raise AssertionError(kind)


BROKEN = ("truncated", "empty", "text", "missing", "corrupt", "folder", "symlink_loop")


@pytest.mark.parametrize("kind", BROKEN)
def test_data_check_decodes_every_image_and_names_the_bad_one(kind: str, tmp_path: Path, capsys) -> None:
    json_path = _coco(tmp_path)
    words = _break(kind, tmp_path / "images" / "im2.jpg")
    assert main(["data", "check", str(json_path)]) == 1
    out = capsys.readouterr().out
    assert "Problems: none" not in out and "bad_image: 1" in out and "Bad images: 1" in out
    assert f"{tmp_path / 'images' / 'im2.jpg'}: {words}" in out


def test_corrupt_jpeg_data_that_libjpeg_only_warns_about_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), _pixels(0))
    clean = load_image(path)
    _corrupt_mid_stream(path)
    damaged = load_image(path)  # OpenCV decodes it "successfully"...
    assert damaged.shape == clean.shape and (np.abs(damaged.astype(int) - clean).max(axis=2) > 30).mean() > 0.1
    with pytest.raises(ImageReadError, match="a.jpg: corrupt JPEG \\(Corrupt JPEG data"):  # ...the check does not
        verify_image(path)


def test_good_images_of_every_kind_pass_the_decode_pass(tmp_path: Path) -> None:
    grey = np.full((30, 40), 90, dtype=np.uint8)
    Image.fromarray(np.full((30, 40, 4), 90, dtype=np.uint8), "CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(grey, "L").save(tmp_path / "grey.jpg")
    Image.fromarray(np.stack([grey] * 3, axis=2)).save(tmp_path / "progressive.jpg", progressive=True)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((30, 40), 4000, dtype=np.uint16))
    Image.fromarray(np.full((30, 40, 4), 90, dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    rotated = Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees: the image as loaded is 30 wide, 40 high
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    for name in ("cmyk.jpg", "grey.jpg", "progressive.jpg", "deep.png", "rgba.png"):
        assert verify_image(tmp_path / name) == (40, 30), name
    assert verify_image(tmp_path / "rotated.jpg") == (30, 40) == load_image(tmp_path / "rotated.jpg").shape[1::-1]


def test_json_sizes_that_disagree_with_the_image_are_named(tmp_path: Path) -> None:
    def lie(data: dict) -> None:
        data["images"][1]["width"], data["images"][1]["height"] = 2 * SIZE, 2 * SIZE

    dataset = read_coco(_coco(tmp_path, edit=lie))
    (index, message), = check_images(dataset).bad
    assert index == 1
    assert message == (
        f"{tmp_path / 'images' / 'im1.jpg'}: the annotations give size 128x128, the image is 64x64 (EXIF orientation applied)"
    )


def test_exif_rotated_image_with_the_pre_rotation_size_in_the_json_is_named(tmp_path: Path) -> None:
    def rotate(data: dict) -> None:
        data["images"][0]["width"], data["images"][0]["height"] = 40, 30

    json_path = _coco(tmp_path, edit=rotate)
    image = Image.fromarray(np.full((30, 40, 3), 90, dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 8
    image.save(tmp_path / "images" / "im0.jpg", exif=exif)
    summary, bad = inspect_dataset(json_path)
    assert bad == 1
    assert f"{tmp_path / 'images' / 'im0.jpg'}: the annotations give size 40x30, the image is 30x40" in summary


def test_training_refuses_bad_images_before_its_first_step(tmp_path: Path) -> None:
    json_path = _coco(tmp_path)
    _break("truncated", tmp_path / "images" / "im3.jpg")
    with pytest.raises(DataFormatError, match="im3.jpg: truncated JPEG .*1 of the 4 images .*data.on_bad_image=skip"):
        Trainer(_tiny(tmp_path, json_path))
    assert not (tmp_path / "run").exists()
    # the CLI: one line naming the file, exit code 2
    assert main(["train", f"project={tmp_path}", "name=cli", f"data.source={json_path}", "data.val_split=all"]) == 2


def test_skipped_bad_images_are_counted_and_training_runs_through(tmp_path: Path, caplog) -> None:
    def clip_and_degenerate(data: dict) -> None:
        data["annotations"][0]["bbox"] = [50, 50, 30, 30]  # reaches outside: clipped
        data["annotations"].append({"id": 900, "image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 4]})  # no area
        data["annotations"].append({"id": 901, "image_id": 2, "category_id": 42, "bbox": [5, 5, 9, 9]})  # no class

    json_path = _coco(tmp_path, num_images=6, edit=clip_and_degenerate)
    _break("corrupt", tmp_path / "images" / "im4.jpg")
    _break("missing", tmp_path / "images" / "im5.jpg")
    with caplog.at_level("INFO", logger="centernet.train"):
        summary = Trainer(_tiny(tmp_path, json_path, "data.on_bad_image=skip", "train.val_interval=1")).fit()
    out = caplog.text
    expected = (
        "4 images, 4 boxes; boxes clipped 1, dropped 1 (degenerate), skipped 3 (unknown class or bad image); "
        "bad images skipped 2"
    )
    assert f"train data: {expected}" in out and f"val data: {expected}" in out
    assert "AP" in summary and (tmp_path / "run" / "last.pt").is_file()
    with pytest.raises(ValueError, match="data.on_bad_image: 'maybe' is not one of error, skip"):
        prepare_training_data(read_coco(json_path), "maybe")


def test_the_decode_pass_is_cached_by_size_and_mtime(tmp_path: Path) -> None:
    dataset = read_coco(_coco(tmp_path))
    assert check_images(dataset).decoded == 4
    assert check_images(dataset).decoded == 0
    _break("text", tmp_path / "images" / "im0.jpg")  # another size: decoded again
    check = check_images(dataset)
    assert check.decoded == 1 and [index for index, _ in check.bad] == [0]


# ---------------------------------------------------------------- 5, 11: annotation files


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["images"].append({**d["images"][0], "file_name": "im1.jpg"}), "\\[image 1\\]: duplicate image id"),
        (lambda d: d.pop("annotations"), "needs 'images', 'annotations' and 'categories' lists; missing 'annotations'"),
        (lambda d: d["annotations"][2]["bbox"].__setitem__(1, "a"), "\\[annotation 102\\]: 'bbox' must hold 4 numbers"),
        (lambda d: d["images"].clear(), "'images' is empty"),
        (lambda d: d["images"][1].update(width=-64), "\\[image 2\\]: width must be a positive integer, got -64"),
        (lambda d: d["images"][1].pop("file_name"), "\\[images\\[1\\]\\]: an image needs 'id' and 'file_name'"),
        (lambda d: d.update(annotations={}), "'annotations' must be a list, got dict"),
        (lambda d: d["annotations"][0].update(image_id=77), "\\[annotation 100\\]: image_id 77 is not in 'images'"),
    ],
    ids=["duplicate_id", "no_annotations", "string_in_bbox", "no_images", "negative_size", "no_file_name",
         "annotations_not_a_list", "unknown_image_id"],
)
def test_broken_coco_json_names_the_file_and_the_entry(edit, message: str, tmp_path: Path, capsys) -> None:
    json_path = _coco(tmp_path, edit=edit)
    with pytest.raises(DataFormatError, match=f"^{json_path}.*{message}"):
        read_coco(json_path)
    assert main(["data", "check", str(json_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {json_path}") and "\n" not in err


def test_empty_and_non_object_json_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty.json: not valid json"):
        read_coco(empty)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="list.json: not a COCO annotation file .*holds a list"):
        read_coco(listed)


def test_unknown_category_ids_are_skipped_and_reported(tmp_path: Path) -> None:
    dataset = read_coco(_coco(tmp_path, edit=lambda d: d["annotations"][1].update(category_id=5)))
    (issue,) = dataset.report.of_kind("unknown_category")
    assert issue.where == "annotation 101" and "unknown category_id 5; skipped" in issue.message
    assert len(dataset.records[1]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.jpg"
    cv2.imwrite(str(path), _pixels(0))
    path.chmod(0)
    with pytest.raises(ImageReadError, match="secret.jpg: cannot read image file"):
        verify_image(path)


def test_yolo_lines_with_a_wrong_column_count_or_text_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), _pixels(0))
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images\nnames: [thing]\n")
    for text, message in (
        ("0 0.5 0.5 0.2\n", "a.txt \\[line 1\\]: 4 columns, expected 5"),
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 0.1\n", "a.txt \\[line 2\\]: 6 columns"),
        ("0 0.5 half 0.2 0.2\n", "a.txt \\[line 1\\]: non-numeric value"),
    ):
        (tmp_path / "labels" / "a.txt").write_text(text)
        with pytest.raises(DataFormatError, match=message):
            read_yolo(tmp_path / "data.yaml", "train")


def test_malformed_voc_xml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    cv2.imwrite(str(tmp_path / "JPEGImages" / "a.jpg"), _pixels(0))
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object><name>cat</name><bndbox><xmin>1")
    with pytest.raises(DataFormatError, match="a.xml: not a readable VOC xml file"):
        read_voc(tmp_path)
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>x</ymin><xmax>9</xmax><ymax>9</ymax>"
        "</bndbox></object></annotation>"
    )
    with pytest.raises(DataFormatError, match="a.xml \\[object 1\\]: non-numeric box corner"):
        read_voc(tmp_path)


# ---------------------------------------------------------------- 9, 10: checkpoints at the edges


@pytest.fixture(scope="module")
def saved_detector(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    CenterNet(arch="res_18", num_classes=2, head_conv=8, input_size=(SIZE, SIZE)).save(path)
    return path


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _bad_checkpoints(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """Checkpoint files that must be refused, and the words of each refusal."""
    truncated = folder / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = folder / "text.pt"
    text.write_text("not a checkpoint")
    malicious = folder / "malicious.pt"
    torch.save({"state_dict": {}, "payload": _Exploit()}, malicious)
    pickled = folder / "plain_pickle.pt"
    pickled.write_bytes(pickle.dumps(_Exploit()))
    exported = folder / "model.onnx"  # an exported graph given where the checkpoint belongs
    exported.write_bytes(b"\x08\x08\x12\x07pytorch")
    future = folder / "future.pt"
    torch.save({**torch.load(good, weights_only=True), "format_version": 99, "class_names": ["x", "y"]}, future)
    return {
        "truncated": (truncated, "not a readable PyTorch checkpoint (damaged, truncated"),
        "text": (text, "not a readable PyTorch checkpoint"),
        "malicious": (malicious, "refused: it holds pickled Python objects"),
        "plain_pickle": (pickled, "not a readable PyTorch checkpoint"),
        "future": (future, "checkpoint format_version 99 is not supported"),
        "onnx": (exported, "an ONNX model, not a PyTorch checkpoint"),
        "folder": (folder, "is a folder, not a checkpoint file"),
    }


def test_bad_checkpoints_are_refused_by_every_reader(saved_detector: Path, tmp_path: Path) -> None:
    for name, (path, words) in _bad_checkpoints(tmp_path, saved_detector).items():
        for reader in (load_checkpoint, read_state_dict, CenterNet.from_checkpoint):
            with pytest.raises(CheckpointError) as caught:
                reader(path)
            assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value), (name, reader)
            assert "weights_only" not in str(caught.value), (name, reader)


@pytest.mark.parametrize("verb", ["val", "predict", "export"])
def test_every_verb_turns_a_bad_checkpoint_into_one_line_and_exit_code_2(verb, saved_detector, tmp_path, capsys) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), _pixels(0))
    extra = {"val": [], "predict": ["--source", str(tmp_path / "a.jpg"), "--output", str(tmp_path / "out")], "export": []}
    for name, (path, words) in _bad_checkpoints(tmp_path, saved_detector).items():
        code = main([verb, "--weights", str(path), *extra[verb]])
        err = capsys.readouterr().err.strip()
        assert code == 2, (verb, name, err)
        assert err.startswith(f"error: {path}: ") and words in err and "\n" not in err, (verb, name, err)
        assert "weights_only" not in err and "Traceback" not in err, (verb, name)


# ---------------------------------------------------------------- 12: CI cannot pass without its fixtures


def test_required_fixtures_that_are_missing_fail_the_session(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CENTERNET_DATA_DIR": str(tmp_path / "absent")}
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "tests/test_config.py"]
    required = subprocess.run(command, cwd=ROOT, env={**env, "CENTERNET_REQUIRE_FIXTURES": "1"}, capture_output=True, text=True)
    assert required.returncode != 0
    assert "the test fixtures are missing: shared data sets" in required.stdout + required.stderr
    assert str(tmp_path / "absent") in required.stdout + required.stderr


# ---------------------------------------------------------------- a model or data of another task


def test_data_and_checkpoints_of_another_task_are_refused_before_any_step(tmp_path: Path, capsys) -> None:
    json_path = _coco(tmp_path)
    for task, words in (("multi_pose", "has no keypoint annotations"), ("ddd", "")):
        code = main(["train", f"task={task}", f"project={tmp_path}", f"name={task}", f"data.source={json_path}", "data.val_split=all", "data.num_workers=0"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and words in err and "\n" not in err, (task, err)
    pose = tmp_path / "pose.pt"
    CenterNet(arch="res_18", task="multi_pose", num_classes=1, head_conv=8, input_size=(SIZE, SIZE)).save(pose)
    # The task comes from the checkpoint's heads; an experiment naming another task is refused.
    for extra, words in ((["task=ctdet"], "a multi_pose network (from its heads), but the experiment is ctdet"), ([], "has no keypoint annotations")):
        assert main(["val", "--weights", str(pose), f"data.source={json_path}", "data.num_workers=0", *extra, "--split", "all"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err
