"""The gather implementation of modulated deformable convolution equals torchvision's op.

``deform_conv2d_gather`` is the CPU inference path of every ``DeformConv`` (``dla_34``,
``resdcn_N``); torchvision's op is the reference the original's DCNv2 was checked against (see the
reference folder's README), so every case here compares the two on the same inputs.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torchvision.ops import deform_conv2d

from centernet.models import dcn
from centernet.models.dcn import (
    DeformConv,
    dcn_implementation,
    deform_conv2d_gather,
    resolve_implementation,
)

# float32 sums of up to C * 9 products of unit-scale values, in different orders.
ATOL = 1e-4


def make_inputs(
    batch: int,
    channels: int,
    out_channels: int,
    hw: tuple[int, int],
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    offset_scale: float = 2.0,
    seed: int = 0,
) -> dict[str, torch.Tensor | int]:
    """Random input, weight, bias, mask and offsets of ``offset_scale`` pixels for a 3x3 layer."""
    generator = torch.Generator().manual_seed(seed)
    height, width = hw
    padding = dilation
    out_h = (height + 2 * padding - 2 * dilation - 1) // stride + 1
    out_w = (width + 2 * padding - 2 * dilation - 1) // stride + 1
    return {
        "x": torch.randn(batch, channels, height, width, generator=generator),
        "offset": offset_scale * torch.randn(batch, 2 * groups * 9, out_h, out_w, generator=generator),
        "weight": torch.randn(out_channels, channels, 3, 3, generator=generator) / (3 * channels**0.5),
        "bias": torch.randn(out_channels, generator=generator),
        "mask": torch.rand(batch, groups * 9, out_h, out_w, generator=generator),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
    }


def assert_same_as_torchvision(inputs: dict, use_mask: bool = True) -> torch.Tensor:
    args = dict(inputs, mask=inputs["mask"] if use_mask else None)
    expected = deform_conv2d(**{"input" if k == "x" else k: v for k, v in args.items()})
    actual = deform_conv2d_gather(**args)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    return actual


@pytest.mark.parametrize("use_mask", [True, False], ids=["mask", "no-mask"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(
    ("batch", "channels", "out_channels", "hw"),
    [(1, 64, 64, (32, 32)), (2, 16, 8, (9, 13)), (1, 3, 5, (1, 7))],
    ids=["64ch-square", "batch2-odd", "one-row"],
)
def test_equals_torchvision(batch, channels, out_channels, hw, stride, use_mask) -> None:
    assert_same_as_torchvision(make_inputs(batch, channels, out_channels, hw, stride=stride), use_mask)


@pytest.mark.parametrize("stride", [1, 2])
def test_dilation_and_offset_groups(stride: int) -> None:
    inputs = make_inputs(2, 12, 6, (11, 10), stride=stride, dilation=2, groups=3)
    assert_same_as_torchvision(inputs)
    assert_same_as_torchvision(inputs, use_mask=False)


@pytest.mark.parametrize("stride", [1, 2])
def test_samples_outside_the_map_read_zero(stride: int) -> None:
    """Offsets of up to a map's size: most samples cross the border or leave the map."""
    inputs = make_inputs(1, 8, 4, (12, 9), stride=stride, offset_scale=10.0, seed=1)
    out_h, out_w = inputs["offset"].shape[-2:]
    rows = torch.arange(out_h).view(-1, 1) * stride - 1 + torch.arange(3).repeat_interleave(3).view(9, 1, 1)
    cols = torch.arange(out_w).view(1, -1) * stride - 1 + torch.arange(3).repeat(3).view(9, 1, 1)
    sample_rows = rows + inputs["offset"][0, 0::2]
    sample_cols = cols + inputs["offset"][0, 1::2]
    outside = (sample_rows <= -1) | (sample_rows >= 12) | (sample_cols <= -1) | (sample_cols >= 9)
    assert 0.3 < outside.float().mean() < 0.9
    assert_same_as_torchvision(inputs)


def test_samples_on_and_near_the_border() -> None:
    """Sample rows and columns exactly at -1, 0, H - 1 and H and just inside or outside them:
    DCNv2 reads zero at ``h <= -1`` and ``h >= H``, and zero for a corner outside the map."""
    height, width = 6, 5
    inputs = make_inputs(1, 4, 3, (height, width), seed=2)
    out_h, out_w = inputs["offset"].shape[-2:]
    generator = torch.Generator().manual_seed(3)

    def border_samples(size: int) -> torch.Tensor:
        """``[9, out_h, out_w]`` positions drawn from around both borders of a side of ``size``."""
        targets = torch.tensor([-1.5, -1.0, -1.0 + 1e-3, -0.5, 0.0, 2.25, size - 1.0, size - 0.5, size - 1e-3, size, 7.5])
        return targets[torch.randint(len(targets), (9, out_h, out_w), generator=generator)]

    base_rows = torch.arange(out_h).view(-1, 1) - 1 + torch.arange(3).repeat_interleave(3).view(9, 1, 1)
    base_cols = torch.arange(out_w).view(1, -1) - 1 + torch.arange(3).repeat(3).view(9, 1, 1)
    offset = torch.empty_like(inputs["offset"])
    offset[0, 0::2] = border_samples(height) - base_rows
    offset[0, 1::2] = border_samples(width) - base_cols
    inputs["offset"] = offset
    assert_same_as_torchvision(inputs)


def test_nan_offsets_read_zero_like_samples_outside_the_map() -> None:
    inputs = make_inputs(1, 4, 3, (7, 7), seed=5)
    far_outside = dict(inputs, offset=inputs["offset"].clone())
    inputs["offset"][0, :4, 2:5, 1:3] = float("nan")
    far_outside["offset"][0, :4, 2:5, 1:3] = -100.0
    torch.testing.assert_close(deform_conv2d_gather(**inputs), deform_conv2d_gather(**far_outside), atol=0, rtol=0)


def test_channels_last_input_keeps_its_format() -> None:
    inputs = make_inputs(2, 32, 16, (20, 24))
    expected = assert_same_as_torchvision(inputs)
    assert expected.is_contiguous()
    inputs["x"] = inputs["x"].contiguous(memory_format=torch.channels_last)
    actual = assert_same_as_torchvision(inputs)
    assert actual.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def test_mismatched_shapes_name_the_problem() -> None:
    inputs = make_inputs(1, 8, 4, (6, 6))
    inputs["offset"] = inputs["offset"][:, :17]
    with pytest.raises(ValueError, match="do not fit"):
        deform_conv2d_gather(**inputs)


def random_deform_conv(seed: int = 0, stride: int = 1) -> DeformConv:
    """A ``DeformConv`` whose ``conv_offset_mask`` predicts non-zero, per-pixel offsets."""
    torch.manual_seed(seed)
    layer = DeformConv(16, 8, stride=stride)
    with torch.no_grad():
        layer.conv_offset_mask.weight.normal_(0, 0.2)
        layer.conv_offset_mask.bias.normal_(0, 1)
        layer.bias.normal_(0, 1)
    return layer.eval()


@pytest.mark.parametrize("stride", [1, 2])
def test_module_picks_gather_for_cpu_inference_and_matches(stride: int) -> None:
    layer = random_deform_conv(stride=stride)
    x = torch.randn(2, 16, 15, 17)
    with torch.no_grad():
        assert resolve_implementation(x, layer.weight) == "gather"
        fast = layer(x)
        with dcn_implementation("torchvision"):
            reference = layer(x)
    torch.testing.assert_close(fast, reference, atol=ATOL, rtol=0)


def test_training_uses_torchvision() -> None:
    """Gradients are torchvision's (DCNv2's backward) unless an implementation is forced."""
    layer = random_deform_conv().train()
    x = torch.randn(1, 16, 8, 8)
    assert resolve_implementation(x, layer.weight) == "torchvision"
    with torch.no_grad():
        assert resolve_implementation(x, layer.weight) == "gather"
    frozen = x.clone()
    assert resolve_implementation(frozen, layer.weight.detach()) == "gather"
    with torch.no_grad(), dcn_implementation("torchvision"):
        assert resolve_implementation(x, layer.weight) == "torchvision"


def test_forced_gather_backward_equals_torchvision() -> None:
    """Forced ``gather`` is differentiable too: its autograd gradients are torchvision's."""
    inputs = make_inputs(1, 6, 4, (7, 8), offset_scale=1.5, seed=4)
    tensors = {k: v.clone().requires_grad_(True) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    settings = {k: v for k, v in inputs.items() if not isinstance(v, torch.Tensor)}
    gradients = []
    for op in (deform_conv2d_gather, deform_conv2d):
        arguments = {"input" if k == "x" and op is deform_conv2d else k: v for k, v in tensors.items()}
        upstream = torch.linspace(-1, 1, 4 * 7 * 8).view(1, 4, 7, 8)
        (op(**arguments, **settings) * upstream).sum().backward()
        gradients.append({k: v.grad.clone() for k, v in tensors.items()})
        for v in tensors.values():
            v.grad = None
    for name in tensors:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], atol=ATOL, rtol=1e-4, msg=name)


def test_implementation_switch_is_validated(monkeypatch) -> None:
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="expected one of auto, torchvision, gather"), dcn_implementation("fast"):
        pass
    monkeypatch.setenv("CENTERNET_DCN", "cuda")
    with pytest.raises(ValueError, match="CENTERNET_DCN='cuda'"):
        resolve_implementation(x)
    monkeypatch.setenv("CENTERNET_DCN", "torchvision")
    with torch.no_grad():
        assert resolve_implementation(x) == "torchvision"
        with dcn_implementation("gather"):
            assert resolve_implementation(x) == "gather"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_torchvision() -> None:
    layer = random_deform_conv().cuda()
    x = torch.randn(1, 16, 8, 8, device="cuda")
    with torch.no_grad():
        assert resolve_implementation(x, layer.weight) == "torchvision"
        torch.testing.assert_close(layer(x).cpu(), layer.cpu()(x.cpu()), atol=ATOL, rtol=0)


def test_export_keeps_the_deform_conv_op(tmp_path) -> None:
    """Exported even under ``no_grad`` (where the CPU would run ``gather``), the graph holds ONNX
    ``DeformConv`` and onnxruntime reproduces the module."""
    import onnx

    layer = random_deform_conv()
    x = torch.randn(1, 16, 12, 12)
    path = tmp_path / "dcn.onnx"
    with torch.no_grad():
        expected = layer(x).numpy()
        program = torch.onnx.export(layer, (x,), None, opset_version=19, dynamo=True, verbose=False)
    program.save(path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DeformConv" in ops, sorted(ops)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("band_rows", [1, 2, 4])
def test_row_bands_equal_one_band(monkeypatch, band_rows: int) -> None:
    """The gather runs in bands of output rows; bands of 1, 2 and 4 rows (the last one partial on
    the 17- and 9-row outputs of stride 1 and 2, two images) give torchvision's result."""
    for stride in (1, 2):
        inputs = make_inputs(2, 8, 6, (17, 11), stride=stride, offset_scale=3.0)
        out_w = inputs["offset"].shape[-1]
        monkeypatch.setattr(dcn, "_BAND_WEIGHT_RATIO", 0)
        monkeypatch.setattr(dcn, "_BAND_BYTES", band_rows * 9 * out_w * 8 * 4)
        assert_same_as_torchvision(inputs)
        assert_same_as_torchvision(inputs, use_mask=False)


@pytest.mark.parametrize("busy", [0.0, 4.0], ids=["quiet", "contended"])
def test_contended_gather_runs_on_one_thread_and_stays_exact(monkeypatch, busy: float) -> None:
    """With other work on the machine the gather runs single-threaded (then restores the count),
    with the same result."""
    seen: list[int] = []
    original = dcn._gather_and_convolve

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(dcn, "busy_cores", lambda: busy)
    monkeypatch.setattr(dcn, "_gather_and_convolve", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_same_as_torchvision(make_inputs(1, 16, 8, (12, 10), seed=7))
        assert seen == [1 if busy else 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
