"""ONNX export of any task with its decoder (and flip test) inside the graph.

``export_onnx`` writes one self-contained file: the network followed by the task's own in-graph
decoder (``Task.export_decoder``; inputs and outputs in ``centernet.export.graph``), or the raw
head maps (``decode=False``). The flip test is the checkpoint's, as ``centernet predict`` reads it
(its experiment's ``test.flip``; a ``CenterNet`` object's ``flip_test``), unless ``flip`` says
otherwise; test scales other than 1 and soft-NMS are not in a graph, and the export warns when the
experiment asks for them.

The batch axis is dynamic; the input height and width are fixed at export time (the letterbox
size; a keep-res model is exported, and then run, letterboxed to its ``input_size``). The model's
metadata (task, class names, mean/std, channel order, input size, K, flip...) travels in the ONNX
``metadata_props`` (``centernet.export.metadata``) and is read back by ``OnnxDetector``
(``centernet.export.runtime``). Deformable convolutions export as ONNX ``DeformConv`` (opset 19)
through the dynamo exporter.

``int8=True`` writes the same inputs and outputs with a statically quantised network (QDQ
``QuantizeLinear`` / ``DequantizeLinear`` pairs, calibrated on ``calibration_images``) and the
decoder kept in float; ``centernet.export.int8`` says why and how. The metadata's ``precision``
tells the two apart; ``OnnxDetector`` runs both the same way.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from centernet.export.graph import DecodedGraph, RawHeads, output_to_image_transform, sample_inputs, trace
from centernet.export.metadata import ExportMetadata, read_metadata
from centernet.export.runtime import OnnxDetector
from centernet.extras import require

if TYPE_CHECKING:
    from centernet.models.detector import CenterNet

__all__ = ["ExportMetadata", "OnnxDetector", "export_onnx", "output_to_image_transform", "read_metadata"]


def _metadata(detector: CenterNet, input_hw: tuple[int, int] | None, K: int, decode: bool, precision: str,
              flip: bool) -> ExportMetadata:
    """The deployment metadata of a detector exported at ``input_hw`` (default: its own size)."""
    spec = detector.spec
    names = detector.class_names or [str(i) for i in range(detector.num_classes)]
    return ExportMetadata(
        task=detector.task.name,
        arch=detector.arch,
        class_names=tuple(names),
        heads=dict(detector.task.heads),
        input_hw=input_hw or detector.input_size,
        mean=tuple(float(v) for v in spec.mean),
        std=tuple(float(v) for v in spec.std),
        channel_order=spec.channel_order,
        down_ratio=spec.down_ratio,
        K=K,
        decoded=decode,
        precision=precision,
        flip=flip,
    )


def _test_flip(weights, detector: CenterNet, flip: bool | None) -> bool:
    """The flip test of the export: ``flip``, else the checkpoint's as ``predict`` reads it (warns of what a graph leaves out)."""
    if isinstance(weights, (str, PathLike)):
        from centernet.engine.evaluate import experiment_for

        test = experiment_for(detector, weights).test
        stored_flip = test.flip
        if [float(s) for s in test.scales] != [1.0] or test.nms:
            warnings.warn(
                f"{weights}: the experiment tests at scales {list(test.scales)}{' with soft-NMS' if test.nms else ''}; "
                "an exported graph runs scale 1 only, without soft-NMS",
                stacklevel=3,
            )
    else:
        stored_flip = detector.flip_test
    if flip and not detector.task.flip_test:
        raise ValueError(f"{detector.task.name} has no flip test (the original defines none)")
    return bool(stored_flip if flip is None else flip) and detector.task.flip_test


def _check_k(meta: ExportMetadata) -> None:
    out_h, out_w = meta.input_hw[0] // meta.down_ratio, meta.input_hw[1] // meta.down_ratio
    num_classes = meta.heads["hm"]
    if not 1 <= meta.K <= num_classes * out_h * out_w:
        raise ValueError(f"K={meta.K} must be in 1..{num_classes * out_h * out_w} (classes x output pixels)")


def _float_graph(detector: CenterNet, meta: ExportMetadata, images: torch.Tensor, opset: int, dynamic_batch: bool):
    if not meta.decoded:
        module = RawHeads(detector.network, list(meta.heads)).eval()
        return trace(module, (images,), ("images",), list(meta.heads), opset, dynamic_batch)
    decoder = detector.task.export_decoder(meta.K, meta.flip)
    module = DecodedGraph(detector.network, decoder).eval()
    extra = sample_inputs(decoder.extra_inputs, images.shape[0], images.device)
    return trace(module, (images, *extra), ("images", *decoder.extra_inputs), decoder.outputs, opset, dynamic_batch)


def _int8_graph(detector: CenterNet, meta: ExportMetadata, images: torch.Tensor, files: Sequence[Path], opset: int,
                dynamic_batch: bool):
    """The quantised network (flip batch included), with the float decoder attached when ``meta.decoded``."""
    from centernet.export.int8 import attach_decoder, quantize_network

    heads = list(meta.heads)
    raw = RawHeads(detector.network, heads, meta.flip and meta.decoded).eval()
    graph = quantize_network(trace(raw, (images,), ("images",), heads, opset, dynamic_batch), meta.input_spec(), files)
    if not meta.decoded:
        return graph
    decoder = detector.task.export_decoder(meta.K, meta.flip).eval()
    with torch.no_grad():
        maps = raw(images)
    extra = sample_inputs(decoder.extra_inputs, images.shape[0], images.device)
    doubled = heads if meta.flip else ()
    decoder_graph = trace(decoder, (*maps, *extra), (*heads, *decoder.extra_inputs), decoder.outputs, opset, dynamic_batch, doubled)
    return attach_decoder(graph, decoder_graph, heads)


def export_onnx(
    weights_or_detector: str | PathLike[str] | CenterNet,
    output: str | PathLike[str] | None = None,
    input_size: Sequence[int] | None = None,
    K: int = 100,
    decode: bool = True,
    opset: int = 19,
    dynamic_batch: bool = True,
    int8: bool = False,
    calibration_images: str | PathLike[str] | None = None,
    calibration_count: int = 64,
    flip: bool | None = None,
) -> Path:
    """Export a model of any task to one self-contained ONNX file.

    Args:
        weights_or_detector: our checkpoint (``.pt``), an original CenterNet ``.pth``, or a
            ``centernet.CenterNet`` detector.
        output: file to write; default: the checkpoint's path with suffix ``.onnx`` (``_int8.onnx``
            with ``int8``; a detector: ``<arch>_<task>.onnx`` in the working folder).
        input_size: network input ``(height, width)``, multiples of 32 (128 for Hourglass);
            default: the detector's ``input_size`` (a keep-res model is exported letterboxed to it).
        K: detections per image of the decoded graph.
        decode: put the task's decoder in the graph; ``False`` exports the raw head maps.
        opset: ONNX opset (19 or later for ``DeformConv``).
        dynamic_batch: make the batch axis dynamic; else the graph takes exactly one image.
        int8: quantise the network statically to INT8 (QDQ; the decoder stays float32).
        calibration_images: folder of images whose activation ranges calibrate ``int8``
            (representative of deployment: the training or validation photos).
        calibration_count: how many of its images to use (evenly spaced by name).
        flip: the flip test inside the graph (raw graphs: in their runner); ``None``: the
            checkpoint's (its experiment's ``test.flip``, as ``predict``). A task without a flip
            test (ddd) never flips.

    Returns:
        The written file.

    Raises:
        ValueError: ``K`` out of range, ``int8`` without calibration images (or calibration
            images without ``int8``), a folder without images.
        FileNotFoundError: ``calibration_images`` is not a folder.
        ImageReadError: a calibration image cannot be read (named).
        MissingExtraError: onnx or onnxscript is not installed (``pip install "centernet[export]"``).
    """
    from centernet.models.detector import CenterNet

    # torch's dynamo exporter imports both lazily, deep inside; check before loading any weights.
    require("onnx", "export", "ONNX export")
    require("onnxscript", "export", "ONNX export")
    if int8 != (calibration_images is not None):
        raise ValueError(
            "INT8 export needs calibration images (CLI: --int8 --calibration-images DIR)"
            if int8
            else "calibration images are only read by an INT8 export (CLI: add --int8)"
        )
    files = []
    if int8:
        require("onnxruntime", "export", "INT8 export")
        from centernet.export.int8 import calibration_files

        files = calibration_files(calibration_images, calibration_count)  # bad images fail before the export
    input_hw = (int(input_size[0]), int(input_size[1])) if input_size is not None else None
    suffix = "_int8.onnx" if int8 else ".onnx"
    if isinstance(weights_or_detector, CenterNet):
        detector = weights_or_detector
        default_output = Path(f"{detector.arch}_{detector.task.name}{suffix}")
    else:
        detector = CenterNet.from_checkpoint(weights_or_detector)
        default_output = Path(weights_or_detector).with_suffix("")
        default_output = default_output.with_name(default_output.name + suffix)
    test_flip = _test_flip(weights_or_detector, detector, flip)
    meta = _metadata(detector, input_hw, K, decode, "int8" if int8 else "float32", test_flip)
    _check_k(meta)
    output = Path(output) if output is not None else default_output
    was_training = detector.network.training
    detector.network.eval()

    # A batch of 2 keeps torch.export from specialising the batch axis to the sample's size.
    batch = 2 if dynamic_batch else 1
    device = next(detector.network.parameters()).device
    images = torch.zeros(batch, 3, *meta.input_hw, device=device)
    try:
        if int8:
            graph = _int8_graph(detector, meta, images, files, opset, dynamic_batch)
        else:
            graph = _float_graph(detector, meta, images, opset, dynamic_batch)
    finally:
        detector.network.train(was_training)
    del graph.metadata_props[:]
    for key, value in meta.to_props().items():
        graph.metadata_props.add(key=key, value=value)
    output.parent.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save(graph, str(output))
    return output
