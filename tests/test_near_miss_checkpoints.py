"""Near-miss checkpoints: every field of a real checkpoint corrupted in turn (issue 22, items 6 and 8).

The base is what a tiny training run writes (``best.pt`` and ``last.pt`` of a res_18 on synthetic
shapes). Each field is deleted, given another type, or given a value that disagrees with the weights
or with another field; every reader (``CenterNet.from_checkpoint``, hence val / predict / export,
and ``--resume``) must answer with one ``CheckpointError`` line naming the file and the field, never
a traceback. A sample goes through the CLI (in-process and the installed entry point).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from centernet import CenterNet
from centernet.cli import main
from centernet.config import load_config
from centernet.engine.trainer import train
from centernet.models.checkpoint import CheckpointError
from centernet.models.checkpoint_fields import REQUIRED_FIELDS, TRAINING_FIELDS, check_training_state
from tests.helpers import tiny_synthetic_run

DELETE = object()
WRONG_TYPES = {"text": "x", "number": 7, "list": [1, 2], "mapping": {"a": 1}, "null": None, "fraction": 1.5, "bool": True}
# Values of another type that a field legitimately takes.
ACCEPTED = {("category_ids", "null"), ("keep_res", "bool"), ("input_size", "list")}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The run folder of a one-epoch training: best.pt and last.pt as users get them."""
    root = tmp_path_factory.mktemp("near_miss_run")
    cfg = load_config(None, [f"project={root}", "name=tiny", *tiny_synthetic_run(), "train.epochs=1", "train.tensorboard=false"])
    train(cfg)
    return root / "tiny"


@pytest.fixture(scope="module")
def base(run: Path) -> dict:
    return torch.load(run / "best.pt", weights_only=True)


def _write(payload: dict, path: Path) -> Path:
    torch.save(payload, path)
    return path


def _refused(path: Path, field: str, reader=CenterNet.from_checkpoint) -> str:
    with pytest.raises(CheckpointError) as caught:
        reader(path)
    message = str(caught.value)
    assert str(path) in message and f"'{field}'" in message and "\n" not in message, message
    return message


def _cases():
    for field in REQUIRED_FIELDS + ("state_dict", "format", "config"):
        for kind in [DELETE, *WRONG_TYPES]:
            if (field, kind) in ACCEPTED or (field in ("format", "config") and kind in (DELETE, "null")):
                continue  # a checkpoint without its config / format tag is still complete
            yield pytest.param(field, kind, id=f"{field}-{'delete' if kind is DELETE else kind}")


@pytest.mark.parametrize("field, kind", list(_cases()))
def test_each_field_deleted_or_mistyped_is_named(field, kind, base: dict, tmp_path: Path) -> None:
    payload = dict(base)
    if kind is DELETE:
        del payload[field]
    else:
        payload[field] = WRONG_TYPES[kind]
    _refused(_write(payload, tmp_path / "bad.pt"), field)


def _drop_one_weight(payload: dict) -> None:
    state = dict(payload["state_dict"])
    state.pop(next(iter(state)))
    payload["state_dict"] = state


def _reshape_one_head(payload: dict) -> None:
    state = dict(payload["state_dict"])
    key = next(k for k in state if k.startswith("wh.") and k.endswith("weight"))
    state[key] = torch.zeros(5, *state[key].shape[1:])
    payload["state_dict"] = state


DISAGREEING = {
    "arch": lambda p: p.update(arch="res_34"),
    "heads": lambda p: p.update(heads={**p["heads"], "hm": p["heads"]["hm"] + 2}),
    "head_conv": lambda p: p.update(head_conv=p["head_conv"] * 4),
    "num_classes": lambda p: p.update(num_classes=p["heads"]["hm"] + 1),
    "class_names": lambda p: p.update(class_names=p["class_names"][:-1]),
    "category_ids": lambda p: p.update(category_ids=[1] * len(p["category_ids"])),
    "task": lambda p: p.update(task="multi_pose"),
    "input_size": lambda p: p.update(input_size=[0, 64]),
    "mean": lambda p: p.update(mean=[0.4, 0.4]),
    "std": lambda p: p.update(std=[0.0, 0.3, 0.3]),
    "channel_order": lambda p: p.update(channel_order="bgra"),
    "config": lambda p: p.update(config={**p["config"], "model": {**p["config"]["model"], "arch": "dla_34"}}),
    "state_dict": _drop_one_weight,
    "state_dict-shape": _reshape_one_head,
    "K": lambda p: p.update(K=0),
    "score_thresh": lambda p: p.update(score_thresh=3),
}


@pytest.mark.parametrize("case", list(DISAGREEING))
def test_metadata_that_disagrees_with_the_weights_is_named(case: str, base: dict, tmp_path: Path) -> None:
    payload = dict(base)
    DISAGREEING[case](payload)
    field = case.split("-")[0]
    message = _refused(_write(payload, tmp_path / "bad.pt"), "heads" if case == "state_dict-shape" else field)
    assert "expected" in message or "disagree" in message


def test_the_real_checkpoints_pass_every_check(run: Path) -> None:
    detector = CenterNet.from_checkpoint(run / "best.pt")
    assert detector.num_classes == len(detector.class_names)
    check_training_state(torch.load(run / "last.pt", weights_only=True), run / "last.pt")


@pytest.fixture(scope="module")
def last(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)


@pytest.mark.parametrize("field", [*TRAINING_FIELDS, "epoch_losses", "history"])
@pytest.mark.parametrize("kind", ["delete", "text", "list"])
def test_each_training_state_field_is_checked_before_a_resume(field: str, kind: str, last: dict, run: Path) -> None:
    payload = dict(last)
    if kind == "delete":
        if field in ("epoch_losses", "history"):
            return  # optional: a missing running sum or history starts empty
        del payload[field]
    else:
        payload[field] = "x" if kind == "text" else [1, 2]
    _refused(run / "last.pt", field, lambda p: check_training_state(payload, p))


def _resume_error(run: Path, tmp_path: Path, capsys, damage, *overrides: str) -> str:
    """The error line of ``train --resume`` on a copy of ``run`` whose ``last.pt`` payload (and folder)
    ``damage(payload, folder)`` edited; exit 2 and exactly one line, which is returned."""
    folder = tmp_path / "tiny"
    shutil.copytree(run, folder)
    payload = torch.load(folder / "last.pt", weights_only=True)
    damage(payload, folder)
    torch.save(payload, folder / "last.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(folder), *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_train_resume_of_a_damaged_last_pt_is_one_line(run: Path, tmp_path: Path, capsys) -> None:
    line = _resume_error(run, tmp_path, capsys, lambda payload, folder: payload.update(rng={"torch": "x"}), "train.epochs=2")
    assert line.startswith("error: ") and "last.pt" in line and "'rng'" in line, line


def test_train_resume_of_an_optimiser_state_of_another_network_is_one_line(run: Path, tmp_path: Path, capsys) -> None:
    def one_parameter_fewer(payload: dict, folder: Path) -> None:  # than the network has
        group = payload["optimizer"]["param_groups"][0]
        group["params"] = group["params"][:-1]

    line = _resume_error(run, tmp_path, capsys, one_parameter_fewer, "train.epochs=2")
    assert line.startswith("error: ") and "last.pt" in line and "'optimizer'" in line, line


def test_train_resume_of_a_last_pt_without_its_experiment_is_one_line(run: Path, tmp_path: Path, capsys) -> None:
    def no_experiment(payload: dict, folder: Path) -> None:
        (folder / "config.yaml").unlink()
        del payload["config"]

    line = _resume_error(run, tmp_path, capsys, no_experiment)
    assert "last.pt" in line and "config.yaml" in line and "model.weights=" in line, line


def test_val_predict_and_export_give_the_same_one_line(base: dict, tmp_path: Path, capsys) -> None:
    payload = dict(base)
    payload["heads"] = {**payload["heads"], "wh": 4}
    bad = _write(payload, tmp_path / "bad.pt")
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    for argv in (
        ["val", "--weights", str(bad)],
        ["predict", "--weights", str(bad), "--source", str(image), "--output", str(tmp_path / "out")],
        ["export", "--weights", str(bad), "--output", str(tmp_path / "bad.onnx")],
    ):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "bad.pt" in err[0] and "'heads'" in err[0], (argv, err)


def test_the_installed_cli_names_the_field_without_a_traceback(base: dict, tmp_path: Path) -> None:
    payload = dict(base)
    del payload["class_names"]
    bad = _write(payload, tmp_path / "bad.pt")
    done = subprocess.run(
        [sys.executable, "-m", "centernet.cli", "val", "--weights", str(bad)], capture_output=True, text=True, timeout=180
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: ") and "bad.pt" in lines[0] and "'class_names'" in lines[0]
