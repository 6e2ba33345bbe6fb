"""A newcomer's first hour through the real entry point: explicit splits, resume from the run folder,
recipes and their fields, the lr schedule, Ctrl-C and misspelt overrides (issue 14).

Each user error is checked as a subprocess of ``python -m centernet.cli``: exit code 2, one
``error:`` line, no traceback.
"""
from __future__ import annotations

import csv
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import centernet
from centernet.cli import main
from centernet.config import RESUME_SAFE_FIELDS, ConfigError, list_recipes, load_config
from centernet.models.detector import CenterNet
from centernet.engine.dataset import TrainingDataset, load_split
from centernet.engine.trainer import lr_schedule_description
from tests.helpers import tiny_synthetic_run

TINY = [*tiny_synthetic_run(), "train.tensorboard=false"]


def _cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "centernet.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The user error contract: exit 2, stderr one ``error:`` line, no traceback; returns the line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A one-epoch run folder (trained in process; the CLI tests below use its folder)."""
    project = tmp_path_factory.mktemp("first_hour")
    assert main(["train", f"project={project}", "name=tiny", "train.epochs=1", *TINY]) == 0
    return project / "tiny"


# ---------------------------------------------------------------- 1: splits are explicit


def test_a_split_that_is_not_there_is_an_error_naming_those_there_are(data_dir: Path, tmp_path: Path, capsys) -> None:
    raccoon = data_dir / "raccoon"
    weights = tmp_path / "untrained.pt"
    CenterNet(arch="res_18", task="ctdet", num_classes=1, head_conv=8, input_size=(64, 64)).save(weights)
    line = _one_error_line(_cli("val", f"data.source={raccoon}", "--weights", str(weights), "--split", "nosuch"))
    assert f"{raccoon}: no split 'nosuch'" in line and f"{raccoon / 'nosuch.txt'}" in line
    assert "splits there: train, val; split 'all' uses every image" in line
    # A recipe's split is refused before anything is trained or written.
    assert main(["train", f"project={tmp_path}", "name=split", f"data.source={raccoon}", "data.val_split=validation"]) == 2
    err = capsys.readouterr().err
    assert "no split 'validation'" in err and "splits there: train, val" in err
    assert not (tmp_path / "split").exists()


def test_data_check_split_and_the_whole_set_said_explicitly(data_dir: Path, capsys, caplog) -> None:
    assert main(["data", "check", str(data_dir / "kitti_mini"), "--split", "train", "--no-decode"]) == 2
    err = capsys.readouterr().err
    assert "no split 'train'" in err and "it has no split files; split 'all' uses every image" in err
    # ``all`` is the explicit choice; training and validation say that they use every image.
    cfg = load_config(None, [f"data.source={data_dir / 'raccoon'}", "data.train_split=train", "data.val_split=all"])
    with caplog.at_level(logging.WARNING, logger="centernet.data"):
        assert len(load_split(cfg, "val")) == 200
    assert "data.val_split=all: validation uses every image of" in caplog.text
    assert "(200 images), the training images included" in caplog.text
    # A json file is one split: training does not validate on its own json unless ``all`` is said,
    # an explicit split must be the one the file's name says, and ``val`` scores the file it is given.
    train_json = data_dir / "raccoon" / "train.json"
    with pytest.raises(ValueError, match="train.json: validation would score the training file itself.*data.val_split=all"):
        TrainingDataset.from_config(load_config(None, [f"data.source={train_json}"]), "val")
    with pytest.raises(ValueError, match="train.json: a json file is one split.*'val'.*split 'all'"):
        load_split(load_config(None, [f"data.source={train_json}"]), "val", "val")
    both = load_config(None, [f"data.source={train_json}", f"data.val_source={data_dir / 'raccoon' / 'val.json'}"])
    assert len(TrainingDataset.from_config(both, "val").data) == len(load_split(both, "val")) > 0


# ---------------------------------------------------------------- 2: resume from the run folder


def test_resume_from_the_run_folder_refuses_unsafe_overrides(tiny_run: Path, capsys) -> None:
    line = _one_error_line(_cli("train", "--resume", str(tiny_run), "train.lr=0.1", "data.input_size=[96,96]"))
    assert f"--resume {tiny_run}: data.input_size ([64, 64] -> [96, 96]), train.lr (None -> 0.1) cannot change" in line
    assert ", ".join(RESUME_SAFE_FIELDS) in line
    assert main(["train", "--resume", str(tiny_run.parent / "nosuch")]) == 2
    assert "nosuch: no such run folder" in capsys.readouterr().err


def test_resume_continues_from_the_folder_config_and_extends(tiny_run: Path, tmp_path: Path, caplog) -> None:
    # Moved elsewhere and resumed with no recipe: the folder's own config.yaml (synthetic 64 px...).
    moved = tmp_path / "elsewhere" / "tiny"
    moved.parent.mkdir()
    subprocess.run(["cp", "-r", str(tiny_run), str(moved)], check=True)
    with caplog.at_level(logging.INFO, logger="centernet.train"):
        assert main(["train", "--resume", str(moved), "train.epochs=2"]) == 0
    rows = list(csv.DictReader((moved / "results.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert yaml.safe_load((moved / "config.yaml").read_text())["train"]["epochs"] == 2
    assert "lr schedule: " in caplog.text and "restored from last.pt" in caplog.text
    # The recipe form finds the same folder from project= / name= and repeats no field.
    assert main(["train", f"project={moved.parent}", "name=tiny", "train.epochs=2", "--resume"]) == 0
    # The Python API takes the run folder too, with the same rule for overrides.
    with pytest.raises(ConfigError, match=r"train.lr \(None -> 1.0\) cannot change in a resumed run"):
        centernet.train(None, "train.lr=1", resume=moved)


# ---------------------------------------------------------------- 3: recipes, their fields, the lr drops


def test_recipes_and_config_print_what_there_is(capsys) -> None:
    result = _cli("recipes")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    for name in list_recipes():
        line = next(row for row in result.stdout.splitlines() if row.startswith(name + " "))
        assert load_config(name).task in line and load_config(name).model.arch in line
    assert main(["config", "ctdet_res18_voc_70e", "train.epochs=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 3 and printed["train"]["lr_steps"] == [45, 60] and printed["model"]["arch"] == "res_18"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "centernet recipes" in help_text and "centernet config NAME" in help_text


def test_the_lr_drops_are_said_and_why_they_moved() -> None:
    cfg = load_config("ctdet_res18_voc_70e", ["train.epochs=3"])
    line = lr_schedule_description(cfg, cfg.lr_milestones())
    assert line.startswith("lr schedule: 0.000125 for epochs 1-2, 1.25e-05 for epoch 3 ")
    assert "train.lr_steps [45, 60] were written for train.schedule_epochs=70, moved to [2, 3]" in line
    kept = load_config("ctdet_res18_voc_70e", ["train.epochs=3", "train.schedule_epochs=null"])
    assert lr_schedule_description(kept, kept.lr_milestones()) == "lr schedule: 0.000125 for epochs 1-3"


# ---------------------------------------------------------------- 4: Ctrl-C


def test_ctrl_c_ends_in_one_line_with_the_resume_command(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "centernet.cli", "train", f"project={tmp_path}", "name=int", *TINY]
    command += ["train.epochs=1000", "train.checkpoint_interval=1"]  # never ends by itself; last.pt after step 1
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, whoever started pytest
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "int" / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last == (
        f"interrupted: the last checkpoint is {tmp_path / 'int' / 'last.pt'} (written at each epoch end and every "
        f"train.checkpoint_interval steps); continue with: centernet train --resume {tmp_path / 'int'}"
    )


def test_ctrl_c_in_val_and_predict_is_one_line_and_exit_130(tmp_path: Path, monkeypatch, capsys) -> None:
    import centernet.engine.evaluate
    import centernet.engine.predict

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(centernet.engine.evaluate, "evaluate_checkpoint", interrupt)
    monkeypatch.setattr(centernet.engine.predict, "predict_to_folder", interrupt)
    assert main(["val", "--weights", "w.pt"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted: val stopped"
    assert main(["predict", "--weights", "w.pt", "--source", "x.jpg", "--output", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip() == "interrupted: predict stopped before its output folder was made; nothing was written"


# ---------------------------------------------------------------- 5: a misspelt override


def test_a_misspelt_override_is_reported_as_the_command_line_one() -> None:
    line = _one_error_line(_cli("config", "ctdet_res18_voc_70e", "train.epoch=3"))
    assert line.startswith("error: command-line override 'train.epoch=3': train: unknown field(s) epoch; valid: ")
    assert "ctdet_res18_voc_70e.yaml" not in line
