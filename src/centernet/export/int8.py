"""Static INT8 quantisation of an exported network (onnxruntime, QDQ format), calibrated on images.

Only the network is quantised. ``export_onnx(..., int8=True)`` exports the raw-heads graph (with
the flip test, each image and its mirror as one batch), quantises it here, and then re-attaches
the task's float decoder graph (``Task.export_decoder``: sigmoid, 3x3 max-pool peaks, top-K,
gathers, the flip merge, the ``trans`` affine, 3D's camera geometry) under the node prefix
``decode/``, for every task alike: 8-bit steps on the
peak scores would tie neighbouring peaks and reorder the top-K, and the decoder costs almost
nothing next to the network. The last convolution of every head stays in float too (its input
is de-quantised): the logits it writes feed the scores and box sizes directly, and an 8-bit
step on them is 1/256 of their whole range, which turns close peaks into ties.

Calibration reads the images with the same test-time letterbox and normalisation as inference
(``InputSpec.inference_input``, from the graph's own metadata), so the activation ranges
recorded are the ranges the deployed graph meets. Weights are quantised per output channel
(depthwise layers, as in EfficientNet-Lite, lose too much with one scale per tensor);
activations are unsigned 8-bit, which onnxruntime's x86 kernels (``U8S8``, VNNI) run fastest.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from centernet.data.image_io import load_image
from centernet.data.transforms import InputSpec
from centernet.engine.sources import IMAGE_SUFFIXES

__all__ = ["DECODER_PREFIX", "attach_decoder", "calibration_files", "quantize_network"]

DECODER_PREFIX = "decode/"


def calibration_files(folder: str | PathLike[str], count: int) -> list[Path]:
    """Up to ``count`` images of ``folder`` (sorted by name, evenly spaced), each checked to decode.

    Every chosen image is decoded here, before any export work, so that a bad file is reported
    at once with its name.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: ``count`` < 1, or the folder holds no image files.
        ImageReadError: a chosen image cannot be read (the message names it).
    """
    folder = Path(folder)
    if count < 1:
        raise ValueError(f"calibration count must be at least 1, not {count}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: calibration image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ValueError(f"{folder}: no images to calibrate INT8 on (looked for {suffixes})")
    if len(files) > count:
        files = [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]
    for path in files:
        load_image(path)
    return files


class _CalibrationImages:
    """onnxruntime ``CalibrationDataReader``: one pre-processed image per ``get_next`` call."""

    def __init__(self, files: Sequence[Path], spec: InputSpec) -> None:
        self._inputs = self._read(files, spec)

    @staticmethod
    def _read(files: Sequence[Path], spec: InputSpec) -> Iterator[dict[str, np.ndarray]]:
        for path in files:
            network_input, _ = spec.inference_input(load_image(path))
            yield {"images": network_input[None]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


class _DropExpectedWarnings(logging.Filter):
    """The two warnings onnxruntime's quantiser logs on the root logger for every CenterNet network.

    It advises shape pre-processing on every call (measured here: no change in speed or output);
    and a BatchNormalization that follows a deformable convolution (no Conv to fold it into) has a
    1-D scale, for which per-channel quantisation falls back, as it should, to one scale.
    """

    EXPECTED = ("pre-processing", "is out-of-range for weight")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.EXPECTED)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    advice = _DropExpectedWarnings()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def quantize_network(raw_graph, spec: InputSpec, files: Sequence[Path]):
    """A raw-heads graph (``images`` -> head maps) with static INT8 QDQ weights and activations.

    Args:
        raw_graph: ``onnx.ModelProto`` of the network (``export_onnx(..., decode=False)``'s graph).
        spec: the graph's pre-processing (for the calibration images).
        files: calibration images (``calibration_files``).

    Returns:
        The quantised ``onnx.ModelProto`` (same inputs and outputs, float32 at both ends).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    outputs = {output.name for output in raw_graph.graph.output}
    head_convs = [node.name for node in raw_graph.graph.node if outputs.intersection(node.output)]
    with tempfile.TemporaryDirectory(prefix="centernet_int8_") as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save(raw_graph, str(source))
        with _quiet_root_logger():
            quantize_static(
                str(source),
                str(target),
                _CalibrationImages(files, spec),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=head_convs,
            )
        return onnx.load(str(target))


def attach_decoder(network, decoder, heads: Sequence[str]):
    """One graph: ``network`` (images -> head maps) feeding ``decoder`` (head maps, trans -> detections).

    The decoder's nodes and intermediate values are renamed under ``DECODER_PREFIX``; its inputs
    named as the heads are connected to the network's outputs of the same names.
    """
    from onnx import compose

    decoder = compose.add_prefix(decoder, DECODER_PREFIX, rename_inputs=False, rename_outputs=False)
    ir_version = max(network.ir_version, decoder.ir_version)
    network.ir_version = decoder.ir_version = ir_version
    return compose.merge_models(network, decoder, io_map=[(name, name) for name in heads])
