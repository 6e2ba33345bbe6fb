"""Every verb takes its words in any order: a recipe, section.field=value overrides and --options mixed."""
from __future__ import annotations

import json

import pytest

from centernet.cli import build_parser, main
from tests.helpers import tiny_synthetic_run


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("order")
    assert main(["train", f"project={root}", "name=tiny", *tiny_synthetic_run(), "train.epochs=1"]) == 0
    return str(root / "tiny" / "best.pt")


def rows_per_image(path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for row in json.loads(path.read_text()):
        counts[row["image_id"]] = counts.get(row["image_id"], 0) + 1
    return counts


@pytest.mark.parametrize(
    "order",
    [
        ["--weights", "W", "--save-json", "J", "test.K=3", "data.synthetic_images={train: 8, val: 3}"],
        ["test.K=3", "--weights", "W", "data.synthetic_images={train: 8, val: 3}", "--save-json", "J"],
        ["--save-json", "J", "data.synthetic_images={train: 8, val: 3}", "--weights", "W", "test.K=3"],
    ],
)
def test_val_reads_overrides_wherever_they_stand(weights, tmp_path, order, capsys) -> None:
    saved = tmp_path / "rows.json"
    argv = ["val", *[weights if word == "W" else str(saved) if word == "J" else word for word in order]]
    assert main(argv) == 0, capsys.readouterr().err
    counts = rows_per_image(saved)
    assert len(counts) == 3, "data.synthetic_images (an override after an option) was not applied"
    assert max(counts.values()) <= 3, "test.K=3 (an override among the options) was not applied"


def test_a_recipe_may_follow_the_options_and_overrides() -> None:
    args = build_parser().parse_args(["val", "--weights", "W", "data.source=S", "ddd_dla34_kitti", "--flip", "test.K=60", "--save-kitti", "D"])
    assert (args.weights, args.flip, args.save_kitti) == ("W", True, "D")
    assert args.config == ["data.source=S", "ddd_dla34_kitti", "test.K=60"]
    for verb, extra in (("predict", ["--source", "S", "--weights", "W"]), ("train", []), ("config", [])):
        args = build_parser().parse_args([verb, "train.epochs=2", *extra, "ctdet_res18_voc_70e", "train.lr=1e-3"])
        assert args.config == ["train.epochs=2", "ctdet_res18_voc_70e", "train.lr=1e-3"], verb
    args = build_parser().parse_args(["demo", "train.epochs=1", "--output", "o", "train.seed=2"])
    assert (args.output, args.overrides) == ("o", ["train.epochs=1", "train.seed=2"])
    args = build_parser().parse_args(["data", "check", "--split", "val", "synthetic", "--no-decode"])
    assert (args.path, args.split, args.no_decode) == ("synthetic", "val", True)


def test_config_verb_resolves_a_recipe_named_after_its_overrides(capsys) -> None:
    assert main(["config", "train.epochs=3", "ctdet_res18_voc_70e"]) == 0
    printed = capsys.readouterr().out
    assert "epochs: 3" in printed and "res_18" in printed


def test_two_recipes_and_unknown_fields_are_one_line_errors(weights, capsys) -> None:
    assert main(["config", "ctdet_res18_voc_70e", "train.epochs=3", "ddd_dla34_kitti"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: more than one recipe") and "\n" not in err
    assert main(["val", "--weights", weights, "test.nosuch=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nosuch" in err and "\n" not in err
