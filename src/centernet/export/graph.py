"""The modules an export traces, their per-image inputs, and the tracing itself.

A decoded graph is the network followed by its task's ``ExportDecoder`` (``Task.export_decoder``):

    inputs   images  [B, 3, H, W] float32  normalised network input (``InputSpec.inference_input``)
             trans   [B, 2, 3]    float32  output-map pixels -> original-image pixels (``output_to_image_transform``)
             calib   [B, 3, 4]    float32  3D only: each image's camera matrix (KITTI ``P2``)
    outputs  the decoder's ``outputs``: ctdet ``boxes, scores, labels``; multi_pose ``boxes, scores,
             keypoints``; ddd ``boxes, scores, labels, alpha, dims, locations, rotation_y``

With the flip test the graph runs each image and its mirror through the network as one batch
of ``2B`` and the decoder merges them, as ``Predictor`` does. A raw graph takes ``images`` only and
returns every head's pre-activation map ``[B, C, H/4, W/4]`` under the head's name; a multi-stack
network (Hourglass) exports its last stack, the one used at inference.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from centernet.data.geometry import ImageMeta, get_affine_transform
from centernet.tasks.base import final_stack
from centernet.tasks.decoding import ExportDecoder

__all__ = ["DecodedGraph", "RawHeads", "output_to_image_transform", "sample_inputs", "trace"]


def output_to_image_transform(meta: ImageMeta) -> np.ndarray:
    """The ``trans`` input of a decoded graph for one image: output-map -> original-image pixels.

    ``trans`` for an image letterboxed by the test-time pre-processing (window centre ``c``, window
    size ``s`` source pixels, output map ``Wo x Ho``) maps an output pixel ``(x, y)`` to
    ``c + (x - Wo / 2, y - Ho / 2) * s / Wo``: the inverse of the test-time warp, scaled to the output
    map, the matrix the PyTorch post-processing (``transform_preds``) applies. Stack one per image
    for a batch: ``[B, 2, 3]``.

    Returns:
        ``[2, 3]`` float32 matrix acting on ``[x, y, 1]`` (x, y in output-map pixels).
    """
    out_wh = (meta.output_hw[1], meta.output_hw[0])
    return get_affine_transform(meta.center, meta.scale, meta.rot, out_wh, inv=True).astype(np.float32)


def _network_input(images: torch.Tensor, flip: bool) -> torch.Tensor:
    """The batch the network sees: the images, then (flip test) their mirrors."""
    return torch.cat([images, images.flip(3)]) if flip else images


class RawHeads(nn.Module):
    """Network returning the last stack's head maps as a tuple in ``heads`` order (``2B`` maps with ``flip``)."""

    def __init__(self, network: nn.Module, heads: Sequence[str], flip: bool = False) -> None:
        super().__init__()
        self.network = network
        self.heads = tuple(heads)
        self.flip = flip

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = final_stack(self.network(_network_input(images, self.flip)))
        return tuple(output[name] for name in self.heads)


class DecodedGraph(nn.Module):
    """Network + the task's decoder: ``images`` and the decoder's extra inputs -> its outputs."""

    def __init__(self, network: nn.Module, decoder: ExportDecoder) -> None:
        super().__init__()
        self.raw = RawHeads(network, decoder.heads, decoder.flip)
        self.decoder = decoder

    def forward(self, images: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.decoder(*self.raw(images), *extra)


def sample_inputs(names: Sequence[str], batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Trace-time values of a decoder's extra inputs (identity ``trans``, a KITTI-like ``calib``)."""
    samples = []
    for name in names:
        if name == "trans":
            value = torch.eye(2, 3)
        elif name == "calib":
            value = torch.tensor([[700.0, 0, 600, 45], [0, 700, 180, 0], [0, 0, 1, 0.005]])
        else:
            value = torch.zeros(ExportDecoder.EXTRA_SHAPES[name])
        samples.append(value.to(device).expand(batch, *value.shape).contiguous())
    return tuple(samples)


def trace(module: nn.Module, samples: tuple[torch.Tensor, ...], input_names: Sequence[str], output_names: Sequence[str],
          opset: int, dynamic_batch: bool, doubled: Sequence[str] = ()):
    """``module`` as an ``onnx.ModelProto`` through the dynamo exporter (batch axis dynamic if asked).

    ``doubled`` names inputs whose batch is twice the images' (a flip test's maps).
    """
    dynamic_shapes = None
    if dynamic_batch:
        batch_dim = torch.export.Dim("batch")
        specs = [{0: 2 * batch_dim if name in doubled else batch_dim} for name in input_names]
        dynamic_shapes = []  # nested as ``forward``'s parameters: a ``*args`` parameter takes a tuple
        for parameter in inspect.signature(module.forward).parameters.values():
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                dynamic_shapes.append(tuple(specs))
                specs = []
            elif specs:
                dynamic_shapes.append(specs.pop(0))
        dynamic_shapes = tuple(dynamic_shapes)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # The exporter reports progress on stdout, and warns that inputs sharing the batch Dim
        # share one axis name, which is what we mean.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(
            module,
            samples,
            None,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    return program.model_proto
