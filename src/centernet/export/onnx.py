"""ONNX export with the ctdet decoder inside the graph, and an onnxruntime detector.

The decoded graph (``decode=True``, 2D detection only) is

    inputs   images  [B, 3, H, W] float32  normalised network input (see ``InputSpec.inference_input``)
             trans   [B, 2, 3]    float32  output-map pixels -> original-image pixels (``output_to_image_transform``)
    outputs  boxes   [B, K, 4]    float32  x1, y1, x2, y2 in original-image pixels
             scores  [B, K]       float32  centre-peak scores in [0, 1], decreasing
             labels  [B, K]       int64    0-based class indices

and runs the same code as the PyTorch path: sigmoid, 3x3 max-pool peaks, top-K, gathering ``wh``
and ``reg`` at the peaks (``CtdetTask.decode``), then the affine ``trans`` on both box corners.
The raw graph (``decode=False``, any task) takes ``images`` only and returns every head's
pre-activation map ``[B, C, H/4, W/4]`` under the head's name; a multi-stack network (Hourglass)
exports its last stack, the one used at inference.

``trans`` for an image letterboxed by the test-time pre-processing (window centre ``c``, window
size ``s`` source pixels, output map ``Wo x Ho``) maps an output pixel ``(x, y)`` to
``c + (x - Wo / 2, y - Ho / 2) * s / Wo``; ``output_to_image_transform(meta)`` computes it from the
image's ``ImageMeta`` with the same routine the PyTorch post-processing uses.

The batch axis is dynamic; the input height and width are fixed at export time (the letterbox
size; a keep-res model is exported, and then run, letterboxed to its ``input_size``). The model's
metadata (task, class names, mean/std, channel order, input size, K...) travels in the ONNX
``metadata_props`` as JSON values and is read back by ``read_metadata`` and ``OnnxDetector``.
Deformable convolutions export as ONNX ``DeformConv`` (opset 19) through the dynamo exporter.

``int8=True`` writes the same inputs and outputs with a statically quantised network (QDQ
``QuantizeLinear`` / ``DequantizeLinear`` pairs, calibrated on ``calibration_images``) and the
decoder kept in float; ``centernet.export.int8`` says why and how. The metadata's ``precision``
tells the two apart; ``OnnxDetector`` runs both the same way.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from centernet.data.geometry import ImageMeta, get_affine_transform
from centernet.data.transforms import InputSpec
from centernet.data.results import Results
from centernet.extras import require
from centernet.tasks.base import HeadOutputs, final_stack
from centernet.tasks.ctdet import CtdetTask

if TYPE_CHECKING:
    from centernet.models.detector import CenterNet

__all__ = [
    "ExportMetadata",
    "OnnxDetector",
    "decode_to_image",
    "export_onnx",
    "output_to_image_transform",
    "read_metadata",
]

METADATA_VERSION = 1
DECODED_OUTPUTS = ("boxes", "scores", "labels")


@dataclass(frozen=True)
class ExportMetadata:
    """What a deployed graph needs besides its weights; stored in the ONNX ``metadata_props``.

    Attributes:
        task: ``"ctdet"``, ``"multi_pose"`` or ``"ddd"``.
        arch: registered architecture name.
        class_names: name of each 0-based class index.
        heads: head name -> channels, in output order of a raw graph.
        input_hw: fixed network input ``(height, width)`` in pixels.
        mean, std: per-channel normalisation of 0..1 pixels, in ``channel_order``.
        channel_order: ``"bgr"`` or ``"rgb"``.
        down_ratio: output stride of the network.
        K: detections per image of a decoded graph.
        decoded: whether the graph holds the decoder (outputs ``boxes, scores, labels``).
        precision: ``"float32"``, or ``"int8"`` for a statically quantised network.
    """

    task: str
    arch: str
    class_names: tuple[str, ...]
    heads: dict[str, int]
    input_hw: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    down_ratio: int
    K: int
    decoded: bool
    precision: str = "float32"

    def input_spec(self) -> InputSpec:
        """The pre-processing the graph expects (fix-res letterbox at ``input_hw``)."""
        return InputSpec(
            input_hw=self.input_hw,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            down_ratio=self.down_ratio,
        )

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries: one JSON value per field, plus the format version."""
        return {"centernet_metadata_version": str(METADATA_VERSION), **{k: json.dumps(v) for k, v in asdict(self).items()}}

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ExportMetadata:
        """Parse ``metadata_props`` written by ``to_props``.

        Raises:
            ValueError: the graph was not exported by this module, or by a newer version of it.
        """
        version = props.get("centernet_metadata_version")
        if version is None or not version.isdigit() or int(version) > METADATA_VERSION:
            raise ValueError(f"not a CenterNet ONNX export (metadata version {version!r})")
        # Graphs written before ``precision`` existed are float32.
        values = {name: json.loads(props[name]) for name in cls.__dataclass_fields__ if name in props}
        return cls(
            task=values["task"],
            arch=values["arch"],
            class_names=tuple(values["class_names"]),
            heads={str(k): int(v) for k, v in values["heads"].items()},
            input_hw=(int(values["input_hw"][0]), int(values["input_hw"][1])),
            mean=tuple(float(v) for v in values["mean"]),
            std=tuple(float(v) for v in values["std"]),
            channel_order=values["channel_order"],
            down_ratio=int(values["down_ratio"]),
            K=int(values["K"]),
            decoded=bool(values["decoded"]),
            precision=str(values.get("precision", "float32")),
        )


def output_to_image_transform(meta: ImageMeta) -> np.ndarray:
    """The ``trans`` input of a decoded graph for one image: output-map -> original-image pixels.

    The inverse of the test-time warp, scaled to the output map; the same matrix the PyTorch
    post-processing (``transform_preds``) applies. Stack one per image for a batch: ``[B, 2, 3]``.

    Args:
        meta: the image's test-time window (``InputSpec.meta`` / ``inference_input``).

    Returns:
        ``[2, 3]`` float32 matrix acting on ``[x, y, 1]`` (x, y in output-map pixels).
    """
    out_wh = (meta.output_hw[1], meta.output_hw[0])
    return get_affine_transform(meta.center, meta.scale, meta.rot, out_wh, inv=True).astype(np.float32)


def _metadata(detector: CenterNet, input_hw: tuple[int, int] | None, K: int, decode: bool, precision: str) -> ExportMetadata:
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
    )


def decode_to_image(
    task: CtdetTask, outputs: HeadOutputs | list[HeadOutputs], trans: torch.Tensor, K: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw head maps -> the top ``K`` detections in original-image pixels.

    Args:
        task: the ctdet task (its decoder: sigmoid, 3x3 max-pool peaks, top-K, ``wh`` / ``reg``).
        outputs: raw head maps ``name -> [B, C, Ho, Wo]`` (or one dict per stack).
        trans: ``[B, 2, 3]`` output-map -> image affine per image (``output_to_image_transform``).
        K: detections per image.

    Returns:
        ``boxes [B, K, 4]`` xyxy image pixels, ``scores [B, K]``, ``labels [B, K]`` int64 0-based.
    """
    dets = task.decode(outputs, K=K)
    batch = dets.shape[0]
    corners = dets[..., :4].reshape(batch, 2 * K, 2)
    mapped = corners @ trans[:, :, :2].transpose(1, 2) + trans[:, None, :, 2]
    return mapped.reshape(batch, K, 4), dets[..., 4], dets[..., 5].to(torch.int64)


class DecodedCtdet(nn.Module):
    """Network + ``decode_to_image``: the graph of a decoded export.

    Args:
        network: raw CenterNet network (head dict, or list of per-stack dicts).
        num_classes: channels of ``hm``.
        K: detections per image.
    """

    def __init__(self, network: nn.Module, num_classes: int, K: int) -> None:
        super().__init__()
        self.network = network
        self.task = CtdetTask(num_classes)
        self.K = K

    def forward(self, images: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``images [B, 3, H, W]``, ``trans [B, 2, 3]`` -> ``boxes [B, K, 4]``, ``scores [B, K]``, ``labels [B, K]``."""
        return decode_to_image(self.task, self.network(images), trans, self.K)


class HeadDecoder(nn.Module):
    """``decode_to_image`` alone: the float decoder attached to an INT8 network.

    Args:
        num_classes: channels of ``hm``.
        K: detections per image.
    """

    inputs = ("hm", "wh", "reg", "trans")

    def __init__(self, num_classes: int, K: int) -> None:
        super().__init__()
        self.task = CtdetTask(num_classes)
        self.K = K

    def forward(
        self, hm: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, trans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head maps ``[B, C, Ho, Wo]`` and ``trans [B, 2, 3]`` -> ``boxes``, ``scores``, ``labels`` (``DecodedCtdet``'s)."""
        return decode_to_image(self.task, {"hm": hm, "wh": wh, "reg": reg}, trans, self.K)


class RawHeads(nn.Module):
    """Network returning the last stack's head maps as a tuple in ``heads`` order."""

    def __init__(self, network: nn.Module, heads: Sequence[str]) -> None:
        super().__init__()
        self.network = network
        self.heads = tuple(heads)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = final_stack(self.network(images))
        return tuple(output[name] for name in self.heads)


def _graph(network: nn.Module, meta: ExportMetadata) -> tuple[nn.Module, tuple[str, ...], tuple[str, ...]]:
    """The module to trace, its input names and its output names."""
    if not meta.decoded:
        return RawHeads(network, list(meta.heads)), ("images",), tuple(meta.heads)
    if meta.task != "ctdet":
        raise ValueError(
            f"in-graph decoding is implemented for 2D detection (ctdet), not {meta.task!r}; "
            "export the raw head maps with decode=False (CLI: --raw-heads)"
        )
    out_h, out_w = meta.input_hw[0] // meta.down_ratio, meta.input_hw[1] // meta.down_ratio
    num_classes = meta.heads["hm"]
    if not 1 <= meta.K <= num_classes * out_h * out_w:
        raise ValueError(f"K={meta.K} must be in 1..{num_classes * out_h * out_w} (classes x output pixels)")
    return DecodedCtdet(network, num_classes, meta.K), ("images", "trans"), DECODED_OUTPUTS


def _trace(
    module: nn.Module, samples: tuple[torch.Tensor, ...], input_names: Sequence[str], output_names: Sequence[str],
    opset: int, dynamic_batch: bool,
):
    """``module`` as an ``onnx.ModelProto`` through the dynamo exporter (batch axis dynamic if asked)."""
    dynamic_shapes = None
    if dynamic_batch:
        batch_dim = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch_dim} for _ in input_names)
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


def _int8_graph(network: nn.Module, meta: ExportMetadata, sample_images: torch.Tensor, sample_trans: torch.Tensor,
                files: Sequence[Path], opset: int, dynamic_batch: bool):
    """The quantised raw-heads network, with the float decoder attached when ``meta.decoded``."""
    from centernet.export.int8 import attach_decoder, quantize_network

    heads = list(meta.heads)
    raw = RawHeads(network, heads).eval()
    raw_graph = _trace(raw, (sample_images,), ("images",), heads, opset, dynamic_batch)
    graph = quantize_network(raw_graph, meta.input_spec(), files)
    if not meta.decoded:
        return graph
    with torch.no_grad():
        maps = dict(zip(heads, raw(sample_images)))
    decoder = HeadDecoder(meta.heads["hm"], meta.K).eval()
    samples = (maps["hm"], maps["wh"], maps["reg"], sample_trans)
    decoder_graph = _trace(decoder, samples, HeadDecoder.inputs, DECODED_OUTPUTS, opset, dynamic_batch)
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
) -> Path:
    """Export a model to one self-contained ONNX file.

    Args:
        weights_or_detector: our checkpoint (``.pt``), an original CenterNet ``.pth``, or a
            ``centernet.CenterNet`` detector.
        output: file to write; default: the checkpoint's path with suffix ``.onnx`` (``_int8.onnx``
            with ``int8``; a detector: ``<arch>_<task>.onnx`` in the working folder).
        input_size: network input ``(height, width)``, multiples of 32 (128 for Hourglass);
            default: the detector's ``input_size`` (a keep-res model is exported letterboxed to it).
        K: detections per image of the decoded graph.
        decode: put the ctdet decoder in the graph (2D detection only); ``False`` exports the raw
            head maps (pose, 3D, or to decode elsewhere).
        opset: ONNX opset (19 or later for ``DeformConv``).
        dynamic_batch: make the batch axis dynamic; else the graph takes exactly one image.
        int8: quantise the network statically to INT8 (QDQ; the decoder stays float32).
        calibration_images: folder of images whose activation ranges calibrate ``int8``
            (representative of deployment: the training or validation photos).
        calibration_count: how many of its images to use (evenly spaced by name).

    Returns:
        The written file.

    Raises:
        ValueError: ``decode`` for a task other than ctdet, ``K`` out of range, ``int8`` without
            calibration images (or calibration images without ``int8``), a folder without images.
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
    meta = _metadata(detector, input_hw, K, decode, "int8" if int8 else "float32")
    output = Path(output) if output is not None else default_output
    module, input_names, output_names = _graph(detector.network, meta)
    was_training = detector.network.training
    module.eval()

    # A batch of 2 keeps torch.export from specialising the batch axis to the sample's size.
    batch = 2 if dynamic_batch else 1
    height, width = meta.input_hw
    device = next(detector.network.parameters()).device
    sample_images = torch.zeros(batch, 3, height, width, device=device)
    sample_trans = torch.eye(2, 3, device=device).expand(batch, 2, 3).contiguous()
    try:
        if int8:
            graph = _int8_graph(detector.network, meta, sample_images, sample_trans, files, opset, dynamic_batch)
        else:
            samples = (sample_images, sample_trans)[: len(input_names)]
            graph = _trace(module, samples, input_names, output_names, opset, dynamic_batch)
    finally:
        detector.network.train(was_training)
    del graph.metadata_props[:]
    for key, value in meta.to_props().items():
        graph.metadata_props.add(key=key, value=value)
    output.parent.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save(graph, str(output))
    return output


def read_metadata(path: str | PathLike[str]) -> ExportMetadata:
    """The metadata of a graph written by ``export_onnx`` (reads the header only, not the weights)."""
    onnx = require("onnx", "export", "reading ONNX metadata")
    model = onnx.load(str(path), load_external_data=False)
    return ExportMetadata.from_props({p.key: p.value for p in model.metadata_props})


class OnnxDetector:
    """Runs an exported ctdet graph with onnxruntime, with the PyTorch path's pre-processing.

    Both decoded and raw (``decode=False``) ctdet graphs are accepted, float32 or INT8 alike. A raw graph runs as the
    network of the one ``Predictor`` (the PyTorch path's pre-processing, decoding, merge and
    threshold); a decoded graph takes the same pre-processing and does the decoding itself.

    Args:
        path: ONNX file from ``export_onnx``.
        providers: onnxruntime execution providers (default: CPU).
        score_thresh: detections scoring below it are dropped from the results.
        threads: onnxruntime intra-op threads (default: onnxruntime's, one per core).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        providers: Sequence[str] | None = None,
        score_thresh: float = 0.0,
        threads: int | None = None,
    ) -> None:
        ort = require("onnxruntime", "export", "OnnxDetector")
        self.path = Path(path)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        self.metadata = ExportMetadata.from_props(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.task != "ctdet":
            raise ValueError(f"{self.path}: OnnxDetector runs 2D detection graphs, not {self.metadata.task!r}")
        self.spec = self.metadata.input_spec()
        self.score_thresh = score_thresh
        fixed_batch = self.session.get_inputs()[0].shape[0]
        self.max_batch = fixed_batch if isinstance(fixed_batch, int) else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """BGR uint8 images -> ``(images [B, 3, H, W] float32, trans [B, 2, 3] float32)``."""
        inputs, trans = [], []
        for image in images:
            network_input, meta = self.spec.inference_input(image)
            inputs.append(network_input)
            trans.append(output_to_image_transform(meta))
        return np.stack(inputs), np.stack(trans)

    def _detect(self, inputs: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A decoded graph's ``(boxes [B, K, 4], scores [B, K], labels [B, K])`` in original-image pixels."""
        boxes, scores, labels = self.session.run(list(DECODED_OUTPUTS), {"images": inputs, "trans": trans})
        return boxes, scores, labels

    def _raw_heads(self, inputs: torch.Tensor) -> HeadOutputs:
        """The raw graph as a network: ``[B, 3, H, W]`` -> head maps (what ``Predictor`` calls)."""
        maps = self.session.run(list(self.metadata.heads), {"images": inputs.cpu().numpy()})
        return {name: torch.from_numpy(m) for name, m in zip(self.metadata.heads, maps)}

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[Results]:
        """Detect objects in BGR uint8 images ``[H, W, 3]`` of any sizes.

        Returns:
            One ``Results`` per image: boxes in its pixels, sorted by decreasing score.
        """
        step = self.max_batch or batch_size
        if not self.metadata.decoded:
            from centernet.models.predictor import Predictor
            from centernet.tasks.registry import task_for_heads

            heads = self.metadata.heads
            task = task_for_heads(self.metadata.task, heads["hm"], heads)  # e.g. cat_spec_wh's 2C size head
            predictor = Predictor(self._raw_heads, task, self.spec, self.class_names, K=self.metadata.K,
                                  score_thresh=self.score_thresh, batch_size=step)
            return predictor.detect(list(images))
        results = []
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            boxes, scores, labels = self._detect(*self.preprocess(chunk))
            for image, b, s, c in zip(chunk, boxes, scores, labels):
                keep = s >= self.score_thresh
                results.append(Results(b[keep], s[keep], c[keep], self.class_names, image=image))
        return results
