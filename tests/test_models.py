"""Behaviour of every registered network and of the checkpoint formats (original and our own)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from centernet.models import build_model, list_models
from centernet.models.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_original_checkpoint,
    save_checkpoint,
)
from centernet.models.resnet import load_backbone_weights

HEADS = {"hm": 3, "wh": 2, "reg": 2}
POSE_HEADS = {"hm": 1, "wh": 2, "hps": 34, "reg": 2, "hm_hp": 17, "hp_offset": 2}
# Two 32 px images are the smallest train-mode input: stride-32 maps are 1x1, and BatchNorm needs
# more than one value per channel. Hourglass-104 needs 128 px to reach its innermost level and costs
# about ten ResNet-18s on a CPU: it runs on one image, in eval mode.
INPUT_SHAPE = {"hourglass": (1, 3, 128, 128)}
TRAIN_MODE = {"hourglass": False}
HEAD_CONV = 32
ROUND_TRIP_MAX_PARAMS = 20_000_000  # one network per family but Hourglass; keeps file writes small


def _num_params(arch: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(arch, HEADS).parameters())


SMALL_ARCHS = [arch for arch in list_models() if _num_params(arch) < ROUND_TRIP_MAX_PARAMS]


def _stacks(outputs: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return outputs if isinstance(outputs, list) else [outputs]


def _input(arch: str) -> torch.Tensor:
    return torch.randn(INPUT_SHAPE.get(arch, (2, 3, 32, 32)), generator=torch.Generator().manual_seed(0))


def _build(arch: str, heads: dict[str, int] = HEADS, head_conv: int = HEAD_CONV) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, heads, head_conv)


def _original_style_file(path: Path, state_dict: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> Path:
    """What the original trainer wrote: DataParallel prefixes, optimizer state, legacy pickle format."""
    weights = {f"module.{k}": v for k, v in {**state_dict, **extra}.items()}
    optimizer = {"state": {}, "param_groups": [{"lr": 1.25e-4, "betas": (0.9, 0.999), "params": [0, 1]}]}
    torch.save({"epoch": 70, "state_dict": weights, "optimizer": optimizer}, path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize("arch", list_models())
def test_forward_and_backward_at_stride_4(arch: str) -> None:
    model = _build(arch)
    model.train(TRAIN_MODE.get(arch, True))
    x = _input(arch)
    stacks = _stacks(model(x))
    for stack in stacks:
        assert list(stack) == list(HEADS)
        for name, value in stack.items():
            assert value.shape == (x.shape[0], HEADS[name], x.shape[2] // 4, x.shape[3] // 4), name
            assert torch.isfinite(value).all(), name
    sum(value.square().mean() for stack in stacks for value in stack.values()).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    first_weight = next(name for name, p in model.named_parameters() if p.ndim == 4)
    assert grads[first_weight].abs().sum() > 0, "no gradient reaches the first convolution"


@pytest.mark.parametrize("arch", SMALL_ARCHS)
def test_own_checkpoint_round_trip_gives_identical_outputs(arch: str, tmp_path: Path) -> None:
    model = _build(arch).eval()
    x = _input(arch)[:1]
    with torch.no_grad():
        before = _stacks(model(x))
    path = tmp_path / "model.pth"
    save_checkpoint(
        path,
        {
            "arch": arch,
            "heads": HEADS,
            "head_conv": HEAD_CONV,
            "class_names": ["a", "b", "c"],
            "input_size": [512, 512],
            "mean": [0.408, 0.447, 0.470],
            "std": [0.289, 0.274, 0.278],
            "channel_order": "BGR",
            "epoch": 3,
            "state_dict": model.state_dict(),
        },
    )
    payload = load_checkpoint(path)
    assert payload["format_version"] == CHECKPOINT_FORMAT_VERSION and payload["class_names"] == ["a", "b", "c"]
    restored = build_model(payload["arch"], payload["heads"], payload["head_conv"])
    restored.load_state_dict(payload["state_dict"], strict=True)
    with torch.no_grad():
        after = _stacks(restored.eval()(x))
    for stack_before, stack_after in zip(before, after, strict=True):
        for name in HEADS:
            assert torch.equal(stack_before[name], stack_after[name]), name
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"], "temporary file left behind"


@pytest.mark.parametrize("arch", list_models())
def test_original_checkpoint_infers_architecture_heads_and_classes(arch: str, tmp_path: Path) -> None:
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in build_model(arch, POSE_HEADS).state_dict().items()}
    # Stride-0 tensors keep the file a few kilobytes even for Hourglass-104.
    state_dict = {k: torch.zeros((), dtype=dtype).expand(shape) for k, (shape, dtype) in shapes.items()}
    classifier = (
        {}
        if "base.fc.weight" in shapes
        else {"base.fc.weight": torch.zeros(1000, 512, 1, 1), "base.fc.bias": torch.zeros(1000)}
    )
    path = _original_style_file(tmp_path / "model_last.pth", state_dict, classifier)
    model, info = load_original_checkpoint(path)
    assert info.arch == arch
    assert info.heads == POSE_HEADS
    assert info.num_classes == 1 and info.epoch == 70
    assert set(info.dropped_keys) == set(classifier)
    assert set(model.state_dict()) == set(shapes) and not model.training


@pytest.mark.parametrize("arch", ["res_18", "resdcn_18"])
def test_original_checkpoint_loads_every_value(arch: str, tmp_path: Path) -> None:
    source = _build(arch, head_conv=16)
    state_dict = source.state_dict()
    classifier = {"base.fc.weight": torch.randn(1000, 512, 1, 1), "base.fc.bias": torch.randn(1000)}
    path = _original_style_file(tmp_path / "ctdet.pth", state_dict, classifier)
    model, info = load_original_checkpoint(path)
    assert (info.arch, info.heads, info.head_conv, info.num_classes) == (arch, HEADS, 16, 3)
    assert info.dropped_keys == ("base.fc.weight", "base.fc.bias")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())


def test_single_conv_heads_keep_the_original_keys(tmp_path: Path) -> None:
    source = _build("res_18", head_conv=0)
    assert {"hm.weight", "hm.bias"} <= set(source.state_dict())
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    _, info = load_original_checkpoint(tmp_path / "bare.pth")
    assert (info.arch, info.heads, info.head_conv, info.epoch) == ("res_18", HEADS, 0, None)


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path) -> None:
    state_dict = dict(_build("res_18").state_dict())
    del state_dict["layer1.0.bn1.running_var"]
    path = tmp_path / "broken.pth"
    torch.save({"epoch": 1, "state_dict": state_dict}, path)
    with pytest.raises(CheckpointError, match="layer1.0.bn1.running_var") as missing:
        load_original_checkpoint(path)
    assert str(path) in str(missing.value)
    with pytest.raises(CheckpointError, match=r"shape mismatch \(2\): hm.2.weight .*hm.2.bias"):
        load_original_checkpoint(path, heads={"hm": 5, "wh": 2, "reg": 2})


def test_unknown_architecture_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3, 3, 1, 1)}}, path)
    with pytest.raises(CheckpointError, match="cannot infer the architecture") as error:
        load_original_checkpoint(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("content", [b"definitely not a checkpoint", b""])
def test_garbage_file_raises_a_clear_error(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    for load in (load_original_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as error:
            load(path)
        assert str(path) in str(error.value)


def test_file_without_weights_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="no model weights found") as error:
        load_original_checkpoint(path)
    assert str(path) in str(error.value)


def test_save_checkpoint_rejects_unloadable_payload_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(TypeError, match=r"payload\['extra'\]\['bad'\]"):
        save_checkpoint(path, {"epoch": 2, "extra": {"bad": object()}})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_saved_checkpoint_has_a_plain_files_permissions(tmp_path: Path) -> None:
    """The atomic write's temporary file is private; the checkpoint follows the umask as open() would."""
    old = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "model.pth", {"epoch": 1})
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "model.pth").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o640


def test_load_checkpoint_refuses_a_newer_format(tmp_path: Path) -> None:
    path = tmp_path / "future.pth"
    save_checkpoint(path, {"format_version": CHECKPOINT_FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(path)


def test_resnet_init_follows_the_original() -> None:
    plain, deformable = _build("res_18"), _build("resdcn_18")
    assert list(dict(plain.named_children()))[-3:] == ["hm", "reg", "wh"], "msra_resnet registers heads sorted"
    assert list(dict(deformable.named_children()))[-3:] == list(HEADS)
    for model in (plain, deformable):
        assert torch.all(model.hm[-1].bias == -2.19)
        assert torch.all(model.wh[-1].bias == 0) and model.wh[-1].weight.std() < 0.002
    assert plain.deconv_layers[0].weight.std() < 0.002
    assert plain.wh[0].weight.std() > 0.002, "msra_resnet leaves the 3x3 conv of regression heads at default init"
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    up = deformable.deconv_layers[3].weight
    assert torch.allclose(up[:, 0], torch.outer(taps, taps).expand_as(up[:, 0]))


def test_load_backbone_weights_from_a_local_torchvision_file(tmp_path: Path) -> None:
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet, path)
    model = _build("res_18")
    head_before = model.hm[0].weight.clone()
    loaded = load_backbone_weights(model, path)
    assert "fc.weight" not in loaded and len(loaded) == len(imagenet) - 2
    own = model.state_dict()
    assert all(torch.equal(own[k], imagenet[k]) for k in loaded)
    assert torch.equal(model.hm[0].weight, head_before)

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="unexpected") as error:
        load_backbone_weights(model, path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("arch", ["res_18", "dla_34", "hourglass"])
def test_pytorch_head_init_replaces_only_the_regression_heads(arch: str) -> None:
    from centernet.models.heads import reinit_regression_heads

    heads = {"hm": 3, "wh": 2, "reg": 2}
    torch.manual_seed(0)
    model = build_model(arch, heads, head_conv=8)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    reinit_regression_heads(model, heads)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, original[k])}
    assert {k.split(".")[0] for k in changed} == {"wh", "reg"}
    if arch == "res_18":  # msra_resnet's final regression conv: N(0, 0.001) -> PyTorch's Kaiming-uniform
        assert float(original["wh.2.weight"].std()) < 0.002
        assert float(model.state_dict()["wh.2.weight"].std()) > 0.1


def test_unknown_head_init_is_refused_before_anything_is_written(tmp_path) -> None:
    from centernet.config import ConfigError, load_config
    from centernet.engine.trainer import Trainer

    cfg = load_config("ctdet_res18_synthetic", ["model.head_init=xavier", f"project={tmp_path}"])
    with pytest.raises(ConfigError, match="model.head_init: 'xavier' is not one of original, pytorch"):
        Trainer(cfg)
    assert not any(tmp_path.iterdir())  # no run folder for a config that cannot train
