"""The one inference path: a loaded network with its input spec and task, run as the original's test.

``Predictor`` owns everything between a uint8 BGR image and its ``Results``: the device and the
precision, batching, fix-res or keep-res input (keep-res images of different sizes never share a
canvas: each runs at its own size, as in the original, which tests one image at a time), the flip
test, the test scales, the task's merge (Gaussian soft-NMS and the 100-per-image cut for 2D boxes,
the 3D ``peak_thresh``), ``K`` and the score threshold. ``centernet val``, the validation pass of
training, ``centernet predict``, ``CenterNet.detect``, ``centernet.predict`` / ``evaluate`` and the
inference benchmark are thin callers of it; ``Predictor.from_config`` is the one place that reads the
``test.*`` fields of an experiment.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from centernet.config import TestConfig
from centernet.data.geometry import ImageMeta
from centernet.data.transforms import InputSpec
from centernet.data.results import Results
from centernet.tasks.tta import MAX_PER_IMAGE
from centernet.tasks.base import Task, final_stack
from centernet.tasks.tta import to_source_pixels
from centernet.threads import ThreadTuner

PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device | None, network: torch.nn.Module | None = None, fallback: str = "--device cpu") -> torch.device:
    """``auto`` (a CUDA GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    ``None`` keeps the device of ``network``'s parameters (the CPU for a network without any).

    Raises:
        ValueError: a CUDA device is asked for and none is available, or the name is unknown.
    """
    if device is None:
        parameter = next(network.parameters(), None) if isinstance(network, torch.nn.Module) else None
        return parameter.device if parameter is not None else torch.device("cpu")
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA GPU is available (torch.cuda.is_available() is False); use {fallback}")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    elif resolved.type != "cpu":
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    return resolved


def _wants_channels_last(network: torch.nn.Module, setting: bool | str) -> bool:
    """``test.channels_last`` for a module: ``True`` / ``False``, or ``"auto"``: the flag
    ``build_model`` gave the network (its architecture's measured default; off for other modules)."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"test.channels_last: {setting!r}: expected true, false or auto")
    return bool(getattr(network, "prefers_channels_last", False))


class Predictor:
    """A network, its input pre-processing and its task, run as the original's ``Detector.run``.

    Args:
        network: a module (or any callable) that maps a normalised ``[B, 3, H, W]`` batch to raw head maps (a dict, or a list of
            dicts for multi-stack networks); put in ``eval()`` mode while it runs.
        task: decodes, post-processes, merges and converts the detections.
        spec: the input pre-processing (fix-res ``input_hw`` or keep-res, normalisation).
        class_names: name of each 0-based label; category_ids: its data-set id (COCO results).
        K: peaks decoded per image and scale (the original's ``--K``).
        score_thresh: rows scoring below it are dropped after the merge (0 keeps every row).
        flip: flip test (the mirrored input's maps averaged in, the original's ``--flip_test``).
        scales: test scales (``--test_scales``); several scales merge with Gaussian soft-NMS.
        nms: soft-NMS also for a single scale (``--nms``).
        max_per_image: 2D rows kept per image after the merge (the original's 100; ties kept).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, or ``None`` for the network's own device.
        precision: ``float32``, or ``float16`` / ``bfloat16`` autocast of the network.
        batch_size: images per network call (inputs of different sizes never share one).
        eval_mode: run a module in ``eval()`` mode (restored afterwards); ``False`` runs it in the
            mode it is in (``CenterNet.detect``, whose caller chooses, as with torchvision models).
        compile: run the network through ``torch.compile`` (on CUDA ``mode="reduce-overhead"``,
            which replays CUDA graphs); its first call of each input shape compiles.
        preprocess_on_device: upload each warped image as uint8 and normalise it on the device
            (bit-equal to the CPU normalisation, a quarter of the host-to-device traffic);
            ``None``: on a GPU only.
        channels_last: run a module network in NHWC memory format on the CPU (converted in place);
            ``"auto"``: the architecture's default (``models.registry.prefers_channels_last``, on
            where the inference benchmark measured it faster). Outputs equal NCHW's within float
            rounding.
        threads: intra-op threads on the CPU: a count, or ``"auto"`` / ``0`` to choose from the
            free cores before each batch (``centernet.threads``; re-chosen every few seconds).
            Threads are a process-wide setting: the choice stays in force after a call.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        task: Task,
        spec: InputSpec,
        class_names: Sequence[str],
        category_ids: Sequence[int] | None = None,
        *,
        K: int = 100,
        score_thresh: float = 0.0,
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
        nms: bool = False,
        max_per_image: int = MAX_PER_IMAGE,
        device: str | torch.device | None = None,
        precision: str = "float32",
        batch_size: int = 8,
        eval_mode: bool = True,
        compile: bool = False,
        preprocess_on_device: bool | None = None,
        channels_last: bool | str = "auto",
        threads: int | str | None = "auto",
    ) -> None:
        scales = [float(s) for s in scales]
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(f"test scales must be positive numbers, got {scales}")
        if int(K) < 1:
            raise ValueError(f"K must be at least 1, got {K}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if flip and not task.flip_test:
            raise ValueError(f"{task.name} has no flip test (the original defines none)")
        if (len(scales) > 1 or scales != [1.0] or nms) and not task.multi_scale:
            raise ValueError(f"{task.name} is tested at scale 1 only, without soft-NMS (the original defines no multi-scale test for it)")
        self.device = resolve_device(device, network)
        self.network = network.to(self.device) if (device is not None and isinstance(network, torch.nn.Module)) else network
        self.channels_last = self.device.type == "cpu" and isinstance(network, torch.nn.Module) and _wants_channels_last(network, channels_last)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.threads = ThreadTuner(threads, "test.threads", enabled=self.device.type == "cpu")
        if compile:
            # Outputs of a CUDA-graph replay are overwritten by the next replay: run_inputs copies
            # the detections to the host before the network runs again.
            self.network = torch.compile(self.network, mode="reduce-overhead" if self.device.type == "cuda" else None)
        self.compiled = bool(compile)
        self.preprocess_on_device = self.device.type == "cuda" if preprocess_on_device is None else bool(preprocess_on_device)
        self.task, self.spec = task, spec
        self.class_names = list(class_names)
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(self.class_names) + 1))
        self.K, self.score_thresh, self.flip = int(K), float(score_thresh), bool(flip)
        self.scales, self.nms, self.max_per_image = scales, bool(nms), int(max_per_image)
        self.precision, self.batch_size = precision, int(batch_size)
        self.eval_mode = eval_mode

    @classmethod
    def from_config(
        cls,
        network: torch.nn.Module,
        task: Task,
        spec: InputSpec,
        class_names: Sequence[str],
        category_ids: Sequence[int] | None,
        test: TestConfig,
        **overrides: Any,
    ) -> Predictor:
        """A predictor with an experiment's ``test.*`` options (the one place that reads them).

        ``overrides`` replace single options (``device=None`` keeps the network where it is, as the
        validation pass of training does; ``batch_size``).
        """
        options = {
            "K": test.K,
            "score_thresh": test.score_thresh,
            "flip": test.flip,
            "scales": test.scales,
            "nms": test.nms,
            "device": test.device,
            "precision": test.precision,
            "compile": test.compile,
            "channels_last": test.channels_last,
            "threads": test.threads,
        }
        return cls(network, task, spec, class_names, category_ids, **{**options, **overrides})

    @classmethod
    def for_detector(cls, detector, test: TestConfig | None = None, **overrides: Any) -> Predictor:
        """The predictor of a ``CenterNet``: its network, spec and classes; ``test`` options or its own."""
        if test is not None:
            return cls.from_config(detector.network, detector.task, detector.spec, detector.class_names, detector.category_ids, test, **overrides)
        options = {"K": detector.K, "score_thresh": detector.score_thresh, "flip": detector.flip_test, **overrides}
        return cls(detector.network, detector.task, detector.spec, detector.class_names, detector.category_ids, **options)

    # ------------------------------------------------------------------ running
    def autocast(self):
        """The network's precision: a no-op for float32, else ``torch.autocast`` on the device."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def network_inputs(self, warped: Sequence[np.ndarray]) -> torch.Tensor:
        """The normalised batch ``[B, 3, h, w]`` float32 on the device of warped uint8 BGR images ``[h, w, 3]`` of one size."""
        if self.preprocess_on_device:
            return self.spec.normalize_uint8_tensor(torch.from_numpy(np.stack(warped)).to(self.device))
        return torch.from_numpy(np.stack([self.spec.normalize_uint8(image) for image in warped])).to(self.device)

    @torch.no_grad()
    def run_inputs(self, inputs: torch.Tensor, metas: Sequence[ImageMeta]) -> list[Any]:
        """Network, decoding and ``post_process`` of one normalised batch ``[B, 3, H, W]`` (one size).

        Returns each image's ``task.post_process`` output in the pixels its meta refers to; a 3D
        task reads each meta's ``calib``.
        """
        dets = self.decode(self.forward(inputs))
        return [self.task.post_process(dets[row], meta) for row, meta in enumerate(metas)]

    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The task's detections of the network's float32 maps, copied to the host."""
        return self.task.decode(outputs, K=self.K, flip=self.flip).cpu()

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's final-stack maps (float32) of a normalised batch, in eval mode and the predictor's precision."""
        inputs = inputs.to(self.device)
        if self.flip:  # the original's [image, mirror] pair, for the whole batch at once
            inputs = torch.cat([inputs, inputs.flip(3)])
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        self.threads.update()
        module = self.network if (self.eval_mode and isinstance(self.network, torch.nn.Module)) else None
        was_training = module is not None and module.training
        if module is not None:
            module.eval()
        try:
            with self.autocast():
                outputs = final_stack(self.network(inputs))
        finally:
            if module is not None:
                module.train(was_training)
        return {name: value.float() for name, value in outputs.items()}

    def finish(self, per_scale: Sequence[Any], image: np.ndarray | None = None, path: Path | None = None,
               calib: np.ndarray | None = None) -> Results:
        """One image's ``Results`` from its per-scale post-processed detections (source pixels)."""
        merged = self.task.merge_outputs(list(per_scale), nms=self.nms, max_per_image=self.max_per_image)
        result = self.task.to_results(merged, self.class_names, image, path, calib)
        return result.filter(self.score_thresh) if self.score_thresh > 0 else result

    def detect(
        self,
        images: Sequence[np.ndarray],
        calibs: Sequence[np.ndarray | None] | None = None,
        paths: Sequence[Path | None] | None = None,
        keep_images: bool = True,
    ) -> list[Results]:
        """``Results`` of uint8 BGR images ``[H, W, 3]`` (any sizes), each in its own pixels.

        ``calibs`` give a 3D task each image's ``[3, 4]`` camera matrix; ``keep_images`` keeps the
        image in its ``Results`` (for drawing).
        """
        images = list(images)
        paths = list(paths) if paths is not None else [None] * len(images)
        calibs = self._calibs(calibs, paths, len(images))
        results: list[Results] = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            per_scale = self.detect_scales(images[chunk], calibs[chunk])
            for image, path, calib, found in zip(images[chunk], paths[chunk], calibs[chunk], per_scale):
                results.append(self.finish(found, image if keep_images else None, path, calib))
        return results

    def detect_scales(self, images: Sequence[np.ndarray], calibs: Sequence[np.ndarray | None] | None = None) -> list[list[Any]]:
        """Per image, its ``post_process`` output at each test scale in source pixels, before the merge.

        All images go through the network together where their inputs have one size (fix-res, or
        keep-res images of equal size); others run on their own, unpadded.
        """
        calibs = list(calibs) if calibs is not None else [None] * len(images)
        per_scale: list[list[Any]] = [[] for _ in images]
        for scale in self.scales:
            prepared = [self.spec.warped_input(image, scale) for image in images]
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, (warped, _) in enumerate(prepared):
                groups.setdefault(warped.shape, []).append(i)
            for members in groups.values():
                metas = [prepared[i][1] if calibs[i] is None else dataclasses.replace(prepared[i][1], calib=calibs[i]) for i in members]
                batch = self.network_inputs([prepared[i][0] for i in members])
                for i, processed in zip(members, self.run_inputs(batch, metas)):
                    per_scale[i].append(processed if scale == 1.0 else to_source_pixels(processed, scale))
        return per_scale

    def _calibs(self, calibs, paths, count: int) -> list[np.ndarray | None]:
        calibs = list(calibs) if calibs is not None else [None] * count
        if not self.task.needs_calib:
            return [None] * count
        missing = [str(p) if p is not None else f"image {i}" for i, (p, c) in enumerate(zip(paths, calibs)) if c is None]
        if missing:
            raise ValueError(f"{self.task.name} detection needs each image's camera calibration (--calib); missing for {', '.join(missing[:3])}")
        return [np.asarray(c, np.float32).reshape(3, 4) for c in calibs]

    def stream(self, frames: Iterable[Any], calib_of=None) -> Iterator[tuple[Any, Results]]:
        """``(frame, Results)`` for every frame of an iterable, lazily, ``batch_size`` frames at a time.

        Frames are ``engine.sources.Frame`` (``image``, ``path``); ``calib_of(frame)`` gives a 3D
        task each frame's camera matrix.
        """
        batch: list[Any] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == self.batch_size:
                yield from self._stream_batch(batch, calib_of)
                batch = []
        if batch:
            yield from self._stream_batch(batch, calib_of)

    def _stream_batch(self, batch: list[Any], calib_of) -> Iterator[tuple[Any, Results]]:
        calibs = [calib_of(frame) for frame in batch] if (calib_of is not None and self.task.needs_calib) else None
        for frame, result in zip(batch, self.detect([f.image for f in batch], calibs, [f.path for f in batch])):
            result.frame = getattr(frame, "frame_index", None)  # a video's frame index, None for an image
            yield frame, result

    def detect_dataset(self, data, indices: Iterable[int], keep_images: bool = False, progress: str | None = None) -> dict[int, Results]:
        """``Results`` of the records ``indices`` of a ``DetectionDataset``, keyed by record index.

        ``progress``: a label for a tqdm bar on stderr counting images out of ``len(indices)``
        (``None``: silent), so a long ``val`` or validation pass is never minutes without a sign.
        """
        indices = list(indices)
        out: dict[int, Results] = {}
        with tqdm(total=len(indices), desc=progress, unit="image", disable=progress is None, dynamic_ncols=True) as bar:
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                images = [data.load_image(i) for i in chunk]
                calibs = [data.records[i].calib for i in chunk]
                paths = [data.records[i].path for i in chunk]
                found = self.detect(images, calibs, paths, keep_images=keep_images)
                out.update(zip(chunk, found))
                bar.update(len(chunk))
        return out
