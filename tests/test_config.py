"""Typed configs: YAML recipes, dotted overrides, clear errors."""
from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from centernet.config import Config, ConfigError, load_config


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert cfg.train.lr_steps == [90, 120] and cfg.train.epochs == 140
    assert cfg.test.K == 100
    assert cfg.data.input_size == [512, 512]


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  arch: dla_34\ntrain:\n  epochs: 70\n  lr_steps: [45, 60]\n")
    cfg = load_config(path, ["train.epochs=3", "test.scales=[0.5, 1, 1.5]", "train.grad_clip=35"])
    assert cfg.model.arch == "dla_34"
    assert cfg.train.epochs == 3 and cfg.train.lr_steps == [45, 60]
    assert cfg.test.scales == [0.5, 1.0, 1.5]
    assert cfg.train.grad_clip == 35.0


def test_round_trip(tmp_path):
    cfg = load_config(None, ["name=abc", "data.keep_res=true"])
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown field(s) epoch"),
        ("train.epochs=abc", "train.epochs: expected int"),
        ("model=3", "model: expected a mapping"),
        ("noequals", "must look like section.field=value"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def _typed(value, hint) -> bool:
    """Whether ``value`` is of the annotated type (written here, independently of the config's coercion)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_typed(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_typed(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _typed(v, args[1]) for k, v in value.items())
    if hint is typing.Any:
        return True
    return isinstance(value, hint) and not (hint in (int, float) and isinstance(value, bool))


def _untyped_leaves(node, where: str = "") -> list[str]:
    """Every field of a config tree whose value is not of its annotated type (sections must be their dataclass)."""
    assert dataclasses.is_dataclass(node) and not isinstance(node, type), f"{where or 'config'} is not a dataclass instance"
    wrong = []
    for f in dataclasses.fields(node):
        hint, value, name = typing.get_type_hints(type(node))[f.name], getattr(node, f.name), f"{where}.{f.name}".lstrip(".")
        if dataclasses.is_dataclass(hint):
            assert isinstance(value, hint), f"{name}: {type(value).__name__}, not the {hint.__name__} section"
            wrong += _untyped_leaves(value, name)
        elif not _typed(value, hint):
            wrong.append(f"{name} = {value!r} is not {hint}")
    return wrong


def test_config_is_a_dataclass_tree():
    """Defaults, every shipped recipe and overrides written as YAML ints all give typed sections and leaves."""
    from centernet.config import list_recipes

    assert _untyped_leaves(Config()) == []
    for name in list_recipes():
        assert _untyped_leaves(load_config(name)) == [], name
    # "35" and "[1, 2]" are YAML ints: float fields must hold floats after loading.
    cfg = load_config(None, ["train.grad_clip=35", "test.scales=[1, 2]", "data.mean=[0, 0.5, 1]", "model.head_conv=64"])
    assert _untyped_leaves(cfg) == []
    assert type(cfg.train.grad_clip) is float and [type(s) for s in cfg.test.scales] == [float, float]


def test_lr_schedule_scales_with_the_run_length():
    cfg = load_config(None, ["train.epochs=70"])
    assert cfg.lr_milestones() == [45, 60]
    assert load_config().lr_milestones() == [90, 120]
    assert load_config(None, ["train.batch_size=64"]).base_lr() == 2.5e-4
    assert load_config(None, ["train.lr=1e-3"]).base_lr() == 1e-3


def test_every_shipped_recipe_loads_by_name_and_path():
    from centernet.config import RECIPES_DIR, list_recipes

    assert "ctdet_res18_coco_140e" in list_recipes()
    for name in list_recipes():
        assert load_config(name) == load_config(RECIPES_DIR / f"{name}.yaml")
        assert load_config(f"configs/{name}.yaml").task in ("ctdet", "multi_pose", "ddd")


def test_loss_weight_overrides_reach_the_task_and_unknown_names_are_refused():
    from centernet.engine.dataset import task_for

    paper = task_for(load_config(), num_classes=3)
    assert paper.loss_weights == {"hm_loss": 1.0, "wh_loss": 0.1, "off_loss": 1.0}
    tuned = task_for(load_config(None, ["train.loss_weights={wh_loss: 0.5}"]), num_classes=3)
    assert tuned.loss_weights == {"hm_loss": 1.0, "wh_loss": 0.5, "off_loss": 1.0}
    pose = task_for(load_config(None, ["task=multi_pose", "train.loss_weights={hp_loss: 2}"]), num_classes=1)
    assert pose.loss_weights["hp_loss"] == 2.0
    with pytest.raises(ConfigError, match="ctdet has no loss dep_loss; its losses: hm_loss, wh_loss, off_loss"):
        task_for(load_config(None, ["train.loss_weights={dep_loss: 1}"]), num_classes=3)


def test_dense_wh_reaches_the_2d_task_only():
    from centernet.engine.dataset import task_for

    assert task_for(load_config(None, ["task_options.dense_wh=true"]), num_classes=3).dense_wh
    assert task_for(load_config(None, ["train.dense_wh=true"]), num_classes=3).dense_wh  # the former field
    assert not task_for(load_config(), num_classes=3).dense_wh
    with pytest.raises(ConfigError, match=r"task_options: unknown field\(s\) dense_wh.*multi_pose task"):
        task_for(load_config(None, ["task=multi_pose", "task_options.dense_wh=true"]), num_classes=1)
