"""What a deployed graph needs besides its weights, stored in the ONNX ``metadata_props``.

Every field is one JSON value under its own key, beside ``centernet_metadata_version``; graphs
written before a field existed read its default (``precision`` float32, ``flip`` off).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from os import PathLike

from centernet.data.transforms import InputSpec
from centernet.extras import require

__all__ = ["METADATA_VERSION", "ExportMetadata", "read_metadata"]

METADATA_VERSION = 1


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
        decoded: whether the graph holds the task's decoder (``Task.export_decoder``'s outputs).
        precision: ``"float32"``, or ``"int8"`` for a statically quantised network.
        flip: the flip test: inside a decoded graph (each image and its mirror through the network,
            merged by the task's decoder); for a raw graph, what its runner (``OnnxDetector``) applies.
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
    flip: bool = False

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
            flip=bool(values.get("flip", False)),
        )


def read_metadata(path: str | PathLike[str]) -> ExportMetadata:
    """The metadata of a graph written by ``export_onnx`` (reads the header only, not the weights)."""
    onnx = require("onnx", "export", "reading ONNX metadata")
    model = onnx.load(str(path), load_external_data=False)
    return ExportMetadata.from_props({p.key: p.value for p in model.metadata_props})
