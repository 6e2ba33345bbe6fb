"""``OnnxDetector``: an exported graph run with onnxruntime, returning the PyTorch path's ``Results``.

Pre-processing, merging, thresholds and ``Results`` are the ``Predictor``'s own: a raw graph runs
as the Predictor's network (decoded on the host, flip test included); a decoded graph's outputs
go back to the task's ``post_process`` form (``Task.from_export``) and through ``Predictor.finish``.
"""
from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from centernet.data.results import Results
from centernet.models.predictor import Predictor
from centernet.export.graph import output_to_image_transform
from centernet.export.metadata import ExportMetadata
from centernet.extras import require
from centernet.tasks.base import HeadOutputs
from centernet.tasks.registry import task_for_heads

__all__ = ["OnnxDetector"]


class OnnxDetector:
    """Runs a graph of ``export_onnx`` (any task; decoded or raw; float32 or INT8) with onnxruntime.

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
        heads = self.metadata.heads
        self.task = task_for_heads(self.metadata.task, heads["hm"], heads)  # e.g. cat_spec_wh's 2C size head
        self.spec = self.metadata.input_spec()
        self.score_thresh = score_thresh
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        fixed_batch = self.session.get_inputs()[0].shape[0]
        self.max_batch = fixed_batch if isinstance(fixed_batch, int) else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    def predictor(self, batch_size: int = 8) -> Predictor:
        """The ``Predictor`` around this graph: a raw graph is its network; its ``finish`` merges any graph's rows."""
        flip = self.metadata.flip and not self.metadata.decoded  # a decoded graph flips inside
        return Predictor(self._raw_heads, self.task, self.spec, self.class_names, K=self.metadata.K,
                         score_thresh=self.score_thresh, flip=flip, batch_size=self.max_batch or batch_size)

    def preprocess(self, images: Sequence[np.ndarray], calibs: Sequence[np.ndarray | None] | None = None) -> dict[str, np.ndarray]:
        """BGR uint8 images (and 3D: their ``[3, 4]`` cameras) -> the graph's inputs by name."""
        inputs, trans = [], []
        for image in images:
            network_input, meta = self.spec.inference_input(image)
            inputs.append(network_input)
            trans.append(output_to_image_transform(meta))
        feeds = {"images": np.stack(inputs), "trans": np.stack(trans)}
        if calibs is not None:
            feeds["calib"] = np.stack([np.asarray(c, np.float32).reshape(3, 4) for c in calibs])
        return {name: feeds[name] for name in self.input_names}

    def _raw_heads(self, inputs: torch.Tensor) -> HeadOutputs:
        """The raw graph as a network: ``[B, 3, H, W]`` -> head maps (what ``Predictor`` calls)."""
        batch = inputs.cpu().numpy()
        step = self.max_batch or len(batch)
        chunks = [self.session.run(list(self.metadata.heads), {"images": batch[i : i + step]}) for i in range(0, len(batch), step)]
        return {name: torch.from_numpy(np.concatenate([c[h] for c in chunks])) for h, name in enumerate(self.metadata.heads)}

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 8,
                calib: Sequence[np.ndarray] | None = None) -> list[Results]:
        """Detect objects in BGR uint8 images ``[H, W, 3]`` of any sizes.

        Args:
            images: the images.
            batch_size: images per graph call (a graph exported with a fixed batch takes its own).
            calib: 3D graphs: each image's ``[3, 4]`` camera matrix (KITTI ``P2``), in image order.

        Returns:
            One ``Results`` per image in its pixels, as ``Predictor.detect`` (the PyTorch path) gives.
        """
        images = list(images)
        predictor = self.predictor(batch_size)
        calibs = predictor._calibs(calib, [None] * len(images), len(images))
        if not self.metadata.decoded:
            return predictor.detect(images, calibs)
        results = []
        for start in range(0, len(images), predictor.batch_size):
            chunk, chunk_calibs = images[start : start + predictor.batch_size], calibs[start : start + predictor.batch_size]
            feeds = self.preprocess(chunk, chunk_calibs if "calib" in self.input_names else None)
            outputs = dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
            for row, (image, camera) in enumerate(zip(chunk, chunk_calibs)):
                processed = self.task.from_export({name: value[row] for name, value in outputs.items()})
                results.append(predictor.finish([processed], image, calib=camera))
        return results
