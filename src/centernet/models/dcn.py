"""Modulated deformable convolution (DCNv2), with a fast CPU inference path.

Parameter names match the original's compiled DCNv2 module (``weight``, ``bias``,
``conv_offset_mask.weight``, ``conv_offset_mask.bias``) so its checkpoints load unchanged.

Two implementations compute the same function:

* ``"torchvision"``: ``torchvision.ops.deform_conv2d``. Its CUDA kernel is fast and its backward is
  the reference; its CPU kernel is a scalar im2col loop (a 64-channel 3x3 layer at 128x128 costs
  about ten plain convolutions), and it is the op the ONNX exporter turns into ``DeformConv``.
* ``"gather"``: :func:`deform_conv2d_gather`. Each output pixel's ``k * k`` bilinear samples are one
  ``embedding_bag`` over the four corners of each sample (the corner weights carry the modulation
  mask), laid out as a channels-last map ``k`` times the output's height and width, on which one
  plain ``k x k`` convolution of stride ``k`` applies the weight (oneDNN's convolution instead of a
  hand-written loop). It equals torchvision's op to float32 rounding, zero padding included. The
  sampled map is ``k * k`` times the output's size (37 MB for a 64-channel layer at 128x128), so it
  is built and convolved a band of output rows at a time (about ``_BAND_BYTES`` each): the band
  stays in the CPU's cache between the gather and the convolution instead of going through memory,
  which measured twice as fast for the layer as one whole-map gather.

``"auto"`` (the default) picks ``"gather"`` on the CPU when no gradient is needed (inference under
``torch.no_grad``/``inference_mode``, or inputs and parameters that do not require grad), and
``"torchvision"`` everywhere else: on CUDA, for training (its backward is the one the original's
results were trained with), while exporting (so the graph keeps the ``DeformConv`` op), and for
dtypes other than float32/float64. ``CENTERNET_DCN=torchvision|gather|auto`` in the environment,
or :func:`dcn_implementation` in code, forces one; a forced ``"gather"`` is differentiable through
autograd as well.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from centernet.threads import busy_cores, single_threaded

__all__ = ["IMPLEMENTATIONS", "DeformConv", "dcn_implementation", "deform_conv2d_gather", "resolve_implementation"]

IMPLEMENTATIONS = ("auto", "torchvision", "gather")
_GATHER_DTYPES = (torch.float32, torch.float64)
# Sampled-map bytes per band of output rows: about one core's L2 cache (1 MiB on the benchmark's
# AMD EPYC); 2 MiB measured fastest for a 64-channel layer at 128x128 (14 ms against 26 ms unbanded).
# Each band's convolution reads the whole weight again, so a band is also at least
# _BAND_WEIGHT_RATIO times the weight: for 128 channels and up (weights of 0.6 MB and more) smaller
# bands measured slower than one whole-map gather.
_BAND_BYTES = 2**21
_BAND_WEIGHT_RATIO = 8
# Intra-op threads short of a free core (``threads.busy_cores``) from which the gather runs on one thread.
CONTENDED_CORES = 0.5


def _implementation_from_env() -> str:
    """``CENTERNET_DCN``, read at each call so that a bad value is reported where it is used (the
    CLI's ``error:`` line), not as an import-time traceback."""
    name = os.environ.get("CENTERNET_DCN", "auto")
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"CENTERNET_DCN={name!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    return name


_forced: str | None = None


@contextlib.contextmanager
def dcn_implementation(name: str) -> Iterator[None]:
    """Force every ``DeformConv`` to ``name`` (one of ``IMPLEMENTATIONS``) inside the block; it
    takes precedence over ``CENTERNET_DCN``."""
    global _forced
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"deformable convolution implementation {name!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def _exporting() -> bool:
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def resolve_implementation(*tensors: torch.Tensor) -> str:
    """``"gather"`` or ``"torchvision"``: what a ``DeformConv`` on these tensors runs (see module doc)."""
    implementation = _forced or _implementation_from_env()
    if implementation != "auto":
        return implementation
    first = tensors[0]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    fast = first.device.type == "cpu" and first.dtype in _GATHER_DTYPES and not needs_grad and not _exporting()
    return "gather" if fast else "torchvision"


def _bilinear_corners(
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the zero-padded, flattened input and their weights for every bilinear sample.

    Args:
        offset: ``[B, 2 * G * kh * kw, Ho, Wo]``, per group and tap the (row, column) offset in
            input pixels (torchvision's layout).
        mask: ``[B, G * kh * kw, Ho, Wo]`` modulation, or ``None`` for 1.
        in_hw: input ``(H, W)``; the flattened map is ``[B, H + 3, W + 3, G]`` rows of ``C / G``:
            the input with a zero border of one pixel before and two after.

    Returns:
        ``index`` (int32; int64 for a table of 2**31 rows or more) and ``weight`` of shape
        ``[B * Ho * kh * Wo * kw * G, 4]``: the four corners of each sample, ordered as the rows of
        the channels-last ``[B, Ho * kh, Wo * kw, C]`` map.
        A sample at row ``h <= -1`` or ``h >= H`` (or the same for columns) reads 0, as in
        torchvision and DCNv2; inside, corners on the zero border contribute 0.

    The maths is a handful of whole-tensor operations on ``[..., 2]`` (row, column) pairs: on a
    busy machine every operation costs a thread synchronisation, so fewer is faster.
    """
    batch, _, out_h, out_w = offset.shape
    height, width = in_hw
    kh, kw = kernel_hw
    dtype, device = offset.dtype, offset.device
    # Sample order [B, Ho, kh, Wo, kw, G, (row, column)]: the order of the sampled map's rows.
    order = (0, 5, 2, 6, 3, 1, 4)
    taps = torch.arange(max(kh, kw), dtype=dtype, device=device) * dilation
    base_rows = (torch.arange(out_h, dtype=dtype, device=device) * stride - padding).view(out_h, 1, 1, 1) + taps[:kh].view(kh, 1, 1)
    base_cols = (torch.arange(out_w, dtype=dtype, device=device) * stride - padding).view(out_w, 1) + taps[:kw]
    base = torch.stack(torch.broadcast_tensors(base_rows, base_cols), dim=-1).view(out_h, kh, out_w, kw, 1, 2)
    # ``base`` first: its strides give the result the sample order's memory layout.
    position = base + offset.view(batch, groups, kh, kw, 2, out_h, out_w).permute(order)
    # Torchvision and DCNv2 read 0 for a sample at h <= -1 or h >= H (w likewise), and 0 for each
    # corner outside the map. Clamping to [-1, H] keeps every sample's value: one inside keeps its
    # position, one outside lands on an integer of the zero border (one row and column before the
    # map, two after, so that a sample at H still has its second corner row). A NaN reads 0 too.
    upper = torch.tensor([height, width], dtype=dtype, device=device)
    position = torch.clamp(position, min=torch.tensor(-1.0, dtype=dtype, device=device), max=upper)
    position.nan_to_num_(nan=-1.0)
    corner = position.floor()
    fraction = position - corner
    padded_w = width + 3
    # Row-major pixel of the top-left corner; whole numbers, exact in float32 below 2**24.
    if (height + 3) * padded_w >= 2**24:
        corner = corner.double()
    # int32 rows where the table allows (half the index bytes for embedding_bag to read).
    index_dtype = torch.int32 if batch * (height + 3) * padded_w * groups < 2**31 else torch.int64
    pixel = torch.add(corner[..., 1], corner[..., 0], alpha=padded_w).to(index_dtype)
    image_start = torch.arange(batch, dtype=index_dtype, device=device) * ((height + 3) * padded_w) + padded_w + 1
    pixel += image_start.view(batch, 1, 1, 1, 1, 1)
    if groups > 1:
        pixel = pixel * groups + torch.arange(groups, dtype=index_dtype, device=device)
    steps = torch.tensor([0, groups, padded_w * groups, (padded_w + 1) * groups], dtype=index_dtype, device=device)
    index = pixel.unsqueeze(-1) + steps
    # Bilinear weights of the near and far row and column; the modulation joins the row weights.
    # Four products of whole vectors: a broadcast outer product over a trailing pair is far slower.
    row_far, col_far = fraction.unbind(-1)
    if mask is None:
        row_near = 1 - row_far
    else:
        modulation = mask.view(batch, groups, kh, kw, out_h, out_w).permute(0, 4, 2, 5, 3, 1)
        row_far = row_far * modulation
        row_near = modulation - row_far
    col_near = 1 - col_far
    weight = torch.stack((row_near * col_near, row_near * col_far, row_far * col_near, row_far * col_far), dim=-1)
    return index.reshape(-1, 4), weight.reshape(-1, 4)


def deform_conv2d_gather(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` (without weight groups) as a gather plus one convolution.

    Args:
        x: ``[B, C, H, W]`` input, any memory format.
        offset: ``[B, 2 * G * kh * kw, Ho, Wo]``; ``G`` offset groups split ``C`` into equal parts.
        weight: ``[C_out, C, kh, kw]``.
        bias: ``[C_out]`` or ``None``.
        mask: ``[B, G * kh * kw, Ho, Wo]`` modulation (DCNv2), or ``None`` (DCNv1).

    Returns:
        ``[B, C_out, Ho, Wo]`` in ``x``'s memory format.
    """
    batch, channels, height, width = x.shape
    _, weight_channels, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    groups = offset.shape[1] // (2 * kh * kw)
    if weight_channels != channels or groups * 2 * kh * kw != offset.shape[1] or channels % groups:
        raise ValueError(
            f"deformable convolution: input {tuple(x.shape)}, weight {tuple(weight.shape)} and offset "
            f"{tuple(offset.shape)} do not fit (weight groups are not supported)"
        )
    # The gather is ~20 small operations per band, each a parallel region whose threads meet at a
    # barrier: while another process holds a core they wait for the descheduled one at every
    # barrier (a 64-channel layer at 128x128: 13 ms quiet, 550 ms with 2 threads and the other
    # core busy, 29 ms on one thread). With other work running it runs on one thread.
    with single_threaded(_contended(x)):
        return _gather_and_convolve(x, offset, weight, bias, stride, padding, dilation, mask, groups)


def _gather_and_convolve(x, offset, weight, bias, stride, padding, dilation, mask, groups) -> torch.Tensor:
    batch, channels, height, width = x.shape
    kh, kw = weight.shape[-2:]
    out_h, out_w = offset.shape[-2:]
    index, corner_weight = _bilinear_corners(
        offset, mask, (height, width), (kh, kw), stride, padding, dilation, groups
    )
    # One pad of the channels-last view: a zero border of one pixel before and two after.
    table = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2, 1, 2)).reshape(-1, channels // groups)
    memory_format = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    out = torch.empty(batch, weight.shape[0], out_h, out_w, dtype=x.dtype, device=x.device, memory_format=memory_format)
    # Bags of one output row, and how many rows make one band of about _BAND_BYTES of samples.
    row_bags = kh * out_w * kw * groups
    band_bytes = max(_BAND_BYTES, _BAND_WEIGHT_RATIO * weight.numel() * weight.element_size())
    band_rows = max(1, band_bytes // (row_bags * table.shape[1] * x.element_size()))
    if batch * math.ceil(out_h / band_rows) > 1:
        # The sampled maps are channels-last; a weight in that layout is not converted per band
        # (8% of a 64-channel layer at 128x128).
        weight = weight.contiguous(memory_format=torch.channels_last)
    for image in range(batch):
        for top in range(0, out_h, band_rows):
            bottom = min(out_h, top + band_rows)
            bags = slice((image * out_h + top) * row_bags, (image * out_h + bottom) * row_bags)
            samples = F.embedding_bag(index[bags], table, per_sample_weights=corner_weight[bags], mode="sum")
            # Sample (tap a, b) of output pixel (i, j) sits at (i * kh + a, j * kw + b): a stride-k conv.
            sampled = samples.view(1, (bottom - top) * kh, out_w * kw, channels).permute(0, 3, 1, 2)
            out[image : image + 1, :, top:bottom] = F.conv2d(sampled, weight, bias, stride=(kh, kw))
    return out


def _contended(x: torch.Tensor) -> bool:
    """Whether a CPU layer on ``x`` should run on one thread: several threads are set and other
    runnable work leaves fewer free cores than that (``threads.busy_cores``, re-read at most every
    quarter second)."""
    return x.device.type == "cpu" and torch.get_num_threads() > 1 and busy_cores() >= CONTENDED_CORES


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class DeformConv(nn.Module):
    """3x3 modulated deformable convolution.

    ``conv_offset_mask`` predicts ``3 * k * k`` channels per deformable group, split into three equal
    chunks ``(o1, o2, m)``: ``cat(o1, o2)`` are the offsets (channel ``2k`` the row, ``2k + 1`` the
    column offset of tap ``k``, as DCNv2's CUDA kernel reads them) and ``sigmoid(m)`` the modulation.
    The forward runs the implementation :func:`resolve_implementation` picks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        deformable_groups: int = 1,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.conv_offset_mask = nn.Conv2d(
            in_channels,
            deformable_groups * 3 * kernel_size * kernel_size,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # While other work holds a core, the whole layer (offset convolution, sigmoid, gather)
        # runs on one thread: a busy machine then costs it in proportion to the load, as it costs
        # a plain convolution, instead of a wait for a descheduled thread at each of its barriers.
        with single_threaded(_contended(x)):
            # Chunks (o1, o2, m) of the prediction; cat(o1, o2) is its first two thirds, taken as a view.
            offset_mask = self.conv_offset_mask(x)
            offset, mask = offset_mask.split((offset_mask.shape[1] * 2 // 3, offset_mask.shape[1] // 3), dim=1)
            implementation = resolve_implementation(x, offset, self.weight, self.bias)
            op = deform_conv2d_gather if implementation == "gather" else deform_conv2d
            return op(
                x,
                offset,
                self.weight,
                self.bias,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                mask=torch.sigmoid(mask),
            )
