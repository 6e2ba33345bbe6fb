"""Every field of the project's checkpoint checked before it is used: one ``CheckpointError`` naming
the file, the field, what was found and what was expected.

A file written by ``save_checkpoint`` (the trainer's ``best.pt`` / ``last.pt``, ``CenterNet.save``)
always carries the description fields of :data:`REQUIRED_FIELDS`; a file that lacks one, holds a
value of another type or shape, or describes another network than its weights (``arch``, ``heads``,
``head_conv`` against the tensors of ``state_dict``; ``class_names``, ``category_ids``,
``num_classes`` against the ``hm`` head; ``task`` against the heads; ``config`` against ``arch`` and
``task``) is refused here, before any network is built. :func:`check_training_state` adds what
``--resume`` reads (optimiser, scheduler, scaler, RNG states, epoch counters, history).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

import torch

from centernet.config import Config, ConfigError
from centernet.models.checkpoint import (
    CheckpointError,
    _describe_mismatch,
    _heads_outside,
    _top_level,
    infer_arch,
    load_checkpoint,
)
from centernet.models.registry import build_model, default_head_conv, list_models

#: Fields every writer of the project's format stores (``state_dict`` aside).
REQUIRED_FIELDS = (
    "arch",
    "task",
    "heads",
    "head_conv",
    "class_names",
    "category_ids",
    "input_size",
    "keep_res",
    "mean",
    "std",
    "channel_order",
)
#: Fields ``--resume`` reads beside the description.
TRAINING_FIELDS = ("optimizer", "scheduler", "scaler", "rng", "epoch", "iteration", "best_metric")


def is_project_checkpoint(payload: Any) -> bool:
    """Whether ``payload`` (read by ``load_checkpoint``) claims to be of this project's format."""
    return isinstance(payload, Mapping) and (payload.get("format") == "centernet" or "arch" in payload or "format" in payload)


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    return "a tensor" if isinstance(value, torch.Tensor) else f"{type(value).__name__} {_shown(value)}"


class _Fields:
    """Reads the fields of one payload; each check raises the one-line error of its field."""

    def __init__(self, payload: Mapping[str, Any], path: str | PathLike[str]) -> None:
        self.payload, self.path = payload, path

    def fail(self, name: str, found: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: checkpoint field '{name}': found {found}, expected {expected}")

    def get(self, name: str, expected: str, required: bool = True) -> Any:
        if name not in self.payload:
            if required:
                raise self.fail(name, "nothing (the field is missing)", expected)
            return None
        return self.payload[name]

    def integer(self, name: str, value: Any, minimum: int, expected: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(name, _kind(value), expected)
        return value

    def number(self, name: str, value: Any, expected: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise self.fail(name, _kind(value), expected)
        return float(value)

    def numbers(self, name: str, value: Any, count: int, expected: str, positive: bool = False) -> None:
        ok = isinstance(value, (list, tuple)) and len(value) == count
        ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
        if not ok or (positive and any(v <= 0 for v in value)):
            raise self.fail(name, _kind(value), expected)

    def boolean(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise self.fail(name, _kind(value), "true or false")


def check_checkpoint_fields(
    payload: Mapping[str, Any], path: str | PathLike[str], task_heads: Callable[[str, int, dict], dict] | None = None
) -> None:
    """Refuse a project checkpoint whose description is missing, mistyped or disagrees with its weights.

    ``task_heads(task, num_classes, heads)``: the heads the named task drives for a network with
    ``heads`` (raising ``ValueError`` for an unknown task); given, ``task`` is checked against them.

    Raises:
        CheckpointError: the message names ``path``, the field, what it holds and what it should.
    """
    f = _Fields(payload, path)
    fmt = f.get("format", "'centernet'", required=False)
    if fmt is not None and fmt != "centernet":
        raise f.fail("format", _kind(fmt), "'centernet'")
    state_dict = f.get("state_dict", "the network's weights (a dict of name -> tensor)")
    if not (
        isinstance(state_dict, Mapping)
        and state_dict
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items())
    ):
        found = _kind(state_dict) if not isinstance(state_dict, Mapping) else "a dict that is empty or not of name -> tensor"
        raise f.fail("state_dict", found, "the network's weights (a dict of name -> tensor)")
    arch = f.get("arch", f"a registered architecture ({', '.join(list_models())})")
    if not isinstance(arch, str) or arch not in list_models():
        raise f.fail("arch", _kind(arch), f"a registered architecture ({', '.join(list_models())})")
    heads_expected = "a dict of head name -> output channels, e.g. {'hm': 80, 'wh': 2, 'reg': 2}"
    heads = f.get("heads", heads_expected)
    if not (
        isinstance(heads, Mapping)
        and heads
        and all(isinstance(k, str) and not isinstance(v, bool) and isinstance(v, int) and v > 0 for k, v in heads.items())
    ):
        raise f.fail("heads", _kind(heads), heads_expected)
    if "hm" not in heads:
        raise f.fail("heads", _kind(heads), "a centre heat-map head 'hm' among the heads")
    num_classes = heads["hm"]
    head_conv = f.get("head_conv", "an integer >= 0, or null for the architecture's default")
    if head_conv is None:  # model.head_conv=null: the architecture's default width
        head_conv = default_head_conv(arch)
    f.integer("head_conv", head_conv, 0, "an integer >= 0 (the heads' 3x3 conv width, 0: none), or null (the default)")
    _check_weights(f, arch, dict(heads), head_conv, state_dict, payload["head_conv"])

    if "num_classes" in payload and payload["num_classes"] != num_classes:
        raise f.fail("num_classes", _kind(payload["num_classes"]), f"{num_classes} (the channels of the weights' 'hm' head)")
    names = f.get("class_names", f"a list of {num_classes} class names")
    if not isinstance(names, (list, tuple)) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise f.fail("class_names", _kind(names), f"a list of {num_classes} class names (one per channel of the 'hm' head)")
    ids = f.get("category_ids", f"a list of {num_classes} integer category ids")
    if ids is not None:
        if (
            not isinstance(ids, (list, tuple))
            or len(ids) != num_classes
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise f.fail("category_ids", _kind(ids), f"a list of {num_classes} integer category ids (one per class)")
        if len(set(ids)) != len(ids):
            raise f.fail("category_ids", _kind(ids), "distinct ids (two classes share one)")
    task = f.get("task", "a task name (ctdet, multi_pose, ddd)")
    if not isinstance(task, str):
        raise f.fail("task", _kind(task), "a task name (ctdet, multi_pose, ddd)")
    if task_heads is not None:
        _check_task(f, task, dict(heads), num_classes, task_heads)

    f.numbers("input_size", f.get("input_size", "[height, width]"), 2, "[height, width], two positive integers", positive=True)
    if not all(isinstance(v, int) for v in payload["input_size"]):
        raise f.fail("input_size", _kind(payload["input_size"]), "[height, width], two positive integers")
    f.boolean("keep_res", f.get("keep_res", "true or false"))
    f.numbers("mean", f.get("mean", "3 numbers"), 3, "3 numbers (one per channel)")
    f.numbers("std", f.get("std", "3 positive numbers"), 3, "3 positive numbers (one per channel)", positive=True)
    order = f.get("channel_order", "'bgr' or 'rgb'")
    if not isinstance(order, str) or order.lower() not in ("bgr", "rgb"):
        raise f.fail("channel_order", _kind(order), "'bgr' or 'rgb'")
    if "K" in payload:
        f.integer("K", payload["K"], 1, "a positive integer (detections per image)")
    if "score_thresh" in payload:
        value = f.number("score_thresh", payload["score_thresh"], "a number from 0 to 1")
        if not 0 <= value <= 1:
            raise f.fail("score_thresh", _kind(payload["score_thresh"]), "a number from 0 to 1")
    if "flip_test" in payload:
        f.boolean("flip_test", payload["flip_test"])
    config = payload.get("config")
    if config is not None:
        _check_config(f, config, arch, task)


def _check_weights(
    f: _Fields, arch: str, heads: dict[str, int], head_conv: int, state_dict: Mapping[str, torch.Tensor], stored_conv: Any
) -> None:
    """``arch``, ``heads`` and ``head_conv`` must build exactly the network whose tensors ``state_dict`` holds."""
    with torch.device("meta"):
        try:
            model = build_model(arch, heads, head_conv)
        except (ValueError, RuntimeError, TypeError) as err:
            raise f.fail("heads", f"{_kind(heads)} with head_conv {head_conv}", f"heads {arch} can build ({err})") from err
    problem = _describe_mismatch(model, state_dict)
    if problem is None:
        return
    backbone = {_top_level(k) for k in model.state_dict()} - set(heads)
    weights_heads, weights_conv = _heads_outside(state_dict, backbone)
    if weights_heads and set(weights_heads) == set(heads) and weights_heads != heads:
        raise f.fail("heads", _kind(heads), f"{weights_heads}, the heads of the weights in 'state_dict'")
    if weights_heads == heads and weights_conv != head_conv:
        found = _kind(stored_conv) + (f" ({arch}'s default {head_conv})" if stored_conv is None else "")
        raise f.fail("head_conv", found, f"{weights_conv}, the heads' conv width in 'state_dict'")
    try:
        weights_arch = infer_arch(state_dict)
    except CheckpointError:
        weights_arch = None
    if weights_arch is not None and weights_arch != arch:
        raise f.fail("arch", _kind(arch), f"{weights_arch!r}, the architecture of the weights in 'state_dict'")
    raise CheckpointError(
        f"{f.path}: checkpoint fields 'arch', 'heads', 'head_conv' ({arch}, {heads}, {head_conv}) disagree "
        f"with the weights in 'state_dict': {problem}"
    )


def _check_task(f: _Fields, task: str, heads: dict[str, int], num_classes: int, task_heads: Callable) -> None:
    try:
        built = dict(task_heads(task, num_classes, heads))
    except (ValueError, TypeError, KeyError) as err:
        raise f.fail("task", _kind(task), f"a task whose network has the heads {heads} ({err})") from err
    if built != heads:
        raise f.fail("task", _kind(task), f"the task of the heads {heads} ({task} has {built})")


def _check_config(f: _Fields, config: Any, arch: str, task: str) -> None:
    if not isinstance(config, Mapping):
        raise f.fail("config", _kind(config), "the run's resolved experiment (a mapping of sections)")
    try:
        Config.from_dict(dict(config), "config")
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{f.path}: checkpoint field 'config' is not a valid experiment ({err})") from err
    model = config.get("model", {})
    stored_arch = model.get("arch", arch) if isinstance(model, Mapping) else arch
    if stored_arch != arch:
        raise f.fail("config", f"model.arch {_shown(stored_arch)}", f"{arch!r}, the checkpoint's 'arch'")
    if config.get("task", task) != task:
        raise f.fail("config", f"task {_shown(config.get('task'))}", f"{task!r}, the checkpoint's 'task'")


def check_training_state(payload: Mapping[str, Any], path: str | PathLike[str]) -> None:
    """What ``--resume`` reads: optimiser / scheduler / scaler / RNG states, counters, history."""
    check_checkpoint_fields(payload, path)
    f = _Fields(payload, path)
    optimizer = f.get("optimizer", "the optimiser's state (a dict with 'state' and 'param_groups')")
    if not (
        isinstance(optimizer, Mapping)
        and isinstance(optimizer.get("param_groups"), list)
        and isinstance(optimizer.get("state"), Mapping)
    ):
        raise f.fail("optimizer", _kind(optimizer), "the optimiser's state (a dict with 'state' and 'param_groups')")
    for name in ("scheduler", "scaler"):
        if not isinstance(f.get(name, f"the {name}'s state (a dict)"), Mapping):
            raise f.fail(name, _kind(payload[name]), f"the {name}'s state (a dict)")
    rng = f.get("rng", "the random states (a dict of torch, numpy, numpy_pos, python)")
    keys = ("torch", "numpy", "numpy_pos", "python")
    tensors = ("torch", "numpy", "python")
    if not isinstance(rng, Mapping) or not all(k in rng for k in keys) or not all(isinstance(rng[k], torch.Tensor) for k in tensors):
        raise f.fail("rng", _kind(rng), "the random states (a dict of torch, numpy, numpy_pos, python tensors)")
    f.integer("epoch", f.get("epoch", "the next epoch (an integer >= 1)"), 1, "the next epoch (an integer >= 1)")
    f.integer("iteration", f.get("iteration", "an integer >= 0"), 0, "the iterations done in that epoch (an integer >= 0)")
    best = f.get("best_metric", "a number")
    if isinstance(best, bool) or not isinstance(best, (int, float)):
        raise f.fail("best_metric", _kind(best), "a number (the best validation metric so far)")
    losses = payload.get("epoch_losses", {"sums": {}, "steps": 0})
    if not (
        isinstance(losses, Mapping)
        and isinstance(losses.get("sums"), Mapping)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in losses["sums"].values())
        and isinstance(losses.get("steps"), int)
    ):
        raise f.fail("epoch_losses", _kind(losses), "{'sums': {loss name: number}, 'steps': integer}")
    history = payload.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, Mapping) and "epoch" in row for row in history):
        raise f.fail("history", _kind(history), "a list of results.csv rows (dicts with an 'epoch')")


def load_resume_checkpoint(path: str | PathLike[str]) -> dict[str, Any]:
    """``load_checkpoint`` of a ``last.pt`` to resume, every field it needs checked."""
    payload = load_checkpoint(path)
    check_training_state(payload, path)
    return payload
