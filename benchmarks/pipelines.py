"""The pipelines the inference benchmark times: CenterNet through its one ``Predictor``, and its peers.

Every pipeline is a ``Variant``: a model run one way (eager, channels_last, compiled, autocast,
onnxruntime), at one input size and batch, whose stages are zero-argument callables that
``timing.interleaved`` runs. All networks have random weights: nothing is downloaded.

- CenterNet (``centernet_variants``): the stages are the predictor's own steps, each fed the
  previous stage's cached output: ``preprocess`` (the letterbox warp of each image and the
  normalisation, ``Predictor.network_inputs``: on a GPU uint8 upload then normalisation on the
  device), ``network`` (``Predictor.forward``: eval mode, precision, float32 maps), ``decode``
  (``Predictor.decode``: sigmoid, 3x3 peaks, top-K, to the host) and ``postprocess`` (boxes to image
  pixels, ``Results``); ``end_to_end`` is ``Predictor.detect`` on the uint8 images.
- onnxruntime on the graph ``export_onnx`` writes (decoding inside the graph), float32 or INT8
  (``export --int8``: the network quantised statically, QDQ; the decoder stays float).
- torchvision's RetinaNet-R50-FPN, Faster R-CNN MobileNetV3-FPN and SSDlite320, end to end with
  their own resizing and post-processing, with score threshold 0 so that their NMS sees every
  candidate, as it would with trained weights (random weights score below the default thresholds),
  and 100 detections per image as CenterNet's ``K``.
- Ultralytics YOLOv8n and YOLO11n built from their yamls (the ``bench`` extra; skipped with a printed
  reason when ultralytics is missing), fused as Ultralytics' inference fuses them, eager and in
  onnxruntime (exported by ``torch.onnx.export``): CenterNet's letterbox (RGB, 0..1), the network,
  Ultralytics' NMS with confidence threshold 0 and 100 boxes per image.

Also the training input pipeline (decode, augmentation, ctdet targets) and the res_18 training step.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timing import failure_note

from centernet.data.check import load_dataset
from centernet.data.image_io import load_image
from centernet.data.transforms import InputSpec
from centernet.data.augment import NumpyAugmentRandom, TrainAugmentation
from centernet.models.detector import CenterNet
from centernet.models.predictor import Predictor
from centernet.export.onnx import export_onnx, output_to_image_transform
from centernet.models import build_model
from centernet.tasks.base import DEBUG_ONLY_KEYS
from centernet.tasks.ctdet import CtdetTask

DATA_DIR = Path(os.environ.get("CENTERNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
COCO_MINI = DATA_DIR / "coco_mini"
NUM_CLASSES = 80
K = 100
CALIBRATION_IMAGES = 16  # coco_mini train images calibrating the INT8 graph (random weights: speed only)
CENTERNET_STAGES = ("preprocess", "network", "decode", "postprocess", "end_to_end")


@dataclass
class Variant:
    """One way of running one model at one size and batch: its stages to time."""

    model: str
    variant: str
    size: int
    batch: int
    stages: dict[str, Callable[[], Any]] = field(default_factory=dict)
    note: str = ""


def batch_of(images: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    return [images[i % len(images)] for i in range(batch)]


def failed_variant(model: str, variant: str, size: int, batch: int, exc: BaseException) -> Variant:
    return Variant(model, variant, size, batch, note=failure_note(f"{model} {variant}", exc))


# ---------------------------------------------------------------------------------------------
# CenterNet
# ---------------------------------------------------------------------------------------------


def predictor_stages(predictor: Predictor, images: Sequence[np.ndarray]) -> dict[str, Callable[[], Any]]:
    """The predictor's steps on ``images`` (one size, fix-res), each fed the previous step's cached output."""
    spec, task = predictor.spec, predictor.task
    prepared = [spec.warped_input(image) for image in images]
    metas = [meta for _, meta in prepared]

    def preprocess() -> torch.Tensor:
        return predictor.network_inputs([spec.warped_input(image)[0] for image in images])

    with torch.inference_mode():
        inputs = predictor.network_inputs([warped for warped, _ in prepared])
        # Cloned: a CUDA-graph replay overwrites its outputs on the next call.
        outputs = {name: value.clone() for name, value in predictor.forward(inputs).items()}
        dets = predictor.decode(outputs)

    def inference(run: Callable[[], Any]) -> Callable[[], Any]:
        def wrapped() -> Any:
            with torch.inference_mode():
                return run()

        return wrapped

    return {
        "preprocess": inference(preprocess),
        "network": inference(lambda: predictor.forward(inputs)),
        "decode": inference(lambda: predictor.decode(outputs)),
        "postprocess": lambda: [predictor.finish([task.post_process(dets[i], meta)]) for i, meta in enumerate(metas)],
        "end_to_end": inference(lambda: predictor.detect(images, keep_images=False)),
    }


class OnnxPipeline:
    """The exported graph (network + decoder + affine) in onnxruntime, CPU pre-processing."""

    def __init__(self, path: Path, spec: InputSpec, device: torch.device) -> None:
        import onnxruntime as ort

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.spec = spec

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        prepared = [self.spec.inference_input(im) for im in images]
        inputs = np.stack([p[0] for p in prepared])
        trans = np.stack([output_to_image_transform(p[1]) for p in prepared])
        return inputs, trans

    def network_and_decode(self, inputs: np.ndarray, trans: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": inputs, "trans": trans})

    @staticmethod
    def postprocess(outputs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        boxes, scores, labels = outputs
        return [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]

    def stages(self, images: Sequence[np.ndarray]) -> dict[str, Callable[[], Any]]:
        inputs, trans = self.preprocess(images)
        outputs = self.network_and_decode(inputs, trans)
        return {
            "preprocess": lambda: self.preprocess(images),
            "network": lambda: self.network_and_decode(inputs, trans),
            "postprocess": lambda: self.postprocess(outputs),
            "end_to_end": lambda: self.postprocess(self.network_and_decode(*self.preprocess(images))),
        }


def centernet_variants(
    arch: str,
    size: int,
    batch: int,
    images: Sequence[np.ndarray],
    device: torch.device,
    variants: Sequence[str],
    amp: str,
    workdir: Path,
    threads: int | str = "auto",
) -> list[Variant]:
    """Every requested variant of one (architecture, size, batch); eager first (the ratios' base).

    ``variants``: any of ``channels_last``, ``compile`` (on CUDA: CUDA graphs through
    ``mode="reduce-overhead"``), ``onnx``, ``int8`` (onnxruntime on ``export_onnx(..., int8=True)``'s
    graph, calibrated on coco_mini training images); ``amp`` (CUDA): ``fp16``, ``bf16`` or ``none``.
    ``threads``: the Predictor's ``test.threads`` (the benchmark's ``--threads``, so that every
    pipeline of a run uses the same count; ``auto``: chosen from the free cores).
    """
    torch.manual_seed(0)
    detector = CenterNet(arch, num_classes=NUM_CLASSES, input_size=(size, size), K=K).eval()
    batch_images = batch_of(images, batch)

    def predictor(network: torch.nn.Module, **options: Any) -> Predictor:
        # NCHW unless a variant asks (the Predictor converts a network in place, and they share one).
        options.setdefault("channels_last", False)
        options.setdefault("threads", threads)
        return Predictor(network, detector.task, detector.spec, detector.class_names, K=K, device=device, batch_size=batch, **options)

    builders: list[tuple[str, Callable[[], dict[str, Callable[[], Any]]], str]] = [
        ("eager", lambda: predictor_stages(predictor(detector.network), batch_images), ""),
    ]
    if "channels_last" in variants:
        builders.append((
            "channels_last",
            lambda: predictor_stages(predictor(copy.deepcopy(detector.network), channels_last=True), batch_images),
            "",
        ))
    precision = {"fp16": "float16", "bf16": "bfloat16"}[amp] if device.type == "cuda" and amp != "none" else "float32"
    if precision != "float32":
        builders.append((f"autocast {amp}", lambda: predictor_stages(predictor(detector.network, precision=precision), batch_images), ""))
    if "compile" in variants:
        # On CUDA: CUDA graphs, under the autocast precision (the GPU's deployment setting).
        name = f"compile (CUDA graphs) {precision}" if device.type == "cuda" else "torch.compile"
        builders.append((
            name, lambda: predictor_stages(predictor(detector.network, compile=True, precision=precision), batch_images), "test.compile=true",
        ))
    if "onnx" in variants:

        def onnx_stages() -> dict[str, Callable[[], Any]]:
            path = workdir / f"{arch}_{size}.onnx"
            if not path.exists():
                export_onnx(copy.deepcopy(detector).cpu(), path, input_size=(size, size), K=K)
            return OnnxPipeline(path, detector.spec, device).stages(batch_images)

        builders.append(("onnxruntime", onnx_stages, "network includes decoding (in the graph)"))
    if "int8" in variants:

        def int8_stages() -> dict[str, Callable[[], Any]]:
            path = workdir / f"{arch}_{size}_int8.onnx"
            if not path.exists():
                export_onnx(copy.deepcopy(detector).cpu(), path, input_size=(size, size), K=K, int8=True,
                            calibration_images=COCO_MINI / "train2017", calibration_count=CALIBRATION_IMAGES)
            return OnnxPipeline(path, detector.spec, device).stages(batch_images)

        builders.append(("onnxruntime int8", int8_stages, "INT8 QDQ network (export --int8), decoding in the graph (float)"))

    out = []
    for name, build, note in builders:
        print(f"  preparing {arch} {size} b{batch}: {name} ...", file=sys.stderr, flush=True)
        try:
            out.append(Variant(arch, name, size, batch, build(), note))
        except Exception as exc:  # compile / export back-ends fail in many ways: report, go on
            out.append(failed_variant(arch, name, size, batch, exc))
    return out


# ---------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------


def torchvision_variants(size: int, batch: int, images: Sequence[np.ndarray], device: torch.device) -> list[Variant]:
    """torchvision detectors end to end (own transform, heads, NMS) on the same images, score threshold 0."""
    from torchvision.models import detection

    common = {"weights": None, "weights_backbone": None, "detections_per_img": K}
    builders = {
        # min/max size set to the benchmark size so that they see as many pixels as CenterNet.
        "retinanet_resnet50_fpn": (
            lambda: detection.retinanet_resnet50_fpn(**common, min_size=size, max_size=size, score_thresh=0.0), ""),
        "fasterrcnn_mobilenet_v3_large_fpn": (
            lambda: detection.fasterrcnn_mobilenet_v3_large_fpn(**common, min_size=size, max_size=size, box_score_thresh=0.0), ""),
        "ssdlite320_mobilenet_v3_large": (
            lambda: detection.ssdlite320_mobilenet_v3_large(**common, score_thresh=0.0), "own resize to 320, score threshold 0"),
    }
    batch_images = batch_of(images, batch)
    out = []
    for name, (build, note) in builders.items():
        try:
            torch.manual_seed(0)
            model = build().eval().to(device)

            def run(model: torch.nn.Module = model) -> list[dict[str, np.ndarray]]:
                with torch.inference_mode():
                    tensors = [torch.from_numpy(im).to(device).flip(-1).permute(2, 0, 1).float().div_(255) for im in batch_images]
                    return [{k: v.cpu().numpy() for k, v in found.items()} for found in model(tensors)]

            out.append(Variant(name, "eager", size, batch, {"end_to_end": run}, note or "score threshold 0"))
        except Exception as exc:
            out.append(failed_variant(name, "eager", size, batch, exc))
    return out


YOLO_MODELS = ("yolov8n", "yolo11n")


class YoloPipeline:
    """An Ultralytics YOLO network end to end: CenterNet's letterbox (RGB, 0..1), the network, Ultralytics' NMS.

    ``run`` is the network: the eager module, or an onnxruntime session on the graph that
    ``torch.onnx.export`` writes (never Ultralytics' exporter, which may download tools).
    """

    def __init__(self, size: int, run: Callable[[np.ndarray], torch.Tensor], nms: Callable[..., list[torch.Tensor]]) -> None:
        self.spec = InputSpec(input_hw=(size, size), pad=31, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="rgb")
        self.run, self.nms = run, nms

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.spec.inference_input(im)[0] for im in images])

    def postprocess(self, prediction: torch.Tensor) -> list[np.ndarray]:
        return [d.cpu().numpy() for d in self.nms(prediction, conf_thres=0.0, max_det=K)]

    def stages(self, images: Sequence[np.ndarray]) -> dict[str, Callable[[], Any]]:
        inputs = self.preprocess(images)
        prediction = self.run(inputs)
        return {
            "preprocess": lambda: self.preprocess(images),
            "network": lambda: self.run(inputs),
            "postprocess": lambda: self.postprocess(prediction),
            "end_to_end": lambda: self.postprocess(self.run(self.preprocess(images))),
        }


def export_yolo_onnx(model: torch.nn.Module, path: Path, size: int, batch: int) -> Path:
    """``model`` (an Ultralytics ``DetectionModel``) as ONNX through ``torch.onnx.export``: ``images [batch, 3, size, size]``
    -> ``[batch, 4 + C, N]``."""
    model = copy.deepcopy(model).cpu().eval()
    model.model[-1].export = True  # the head returns its decoded boxes and scores alone
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(model, (torch.zeros(batch, 3, size, size),), None, input_names=["images"],
                                    output_names=["predictions"], opset_version=19, dynamo=True, verbose=False)
    program.save(str(path))
    return path


def yolo_variants(
    size: int, batch: int, images: Sequence[np.ndarray], device: torch.device, variants: Sequence[str], workdir: Path,
) -> list[Variant]:
    """YOLOv8n and YOLO11n from their yamls (no weights), eager and, with ``onnx`` in ``variants``, onnxruntime.

    Each is fused (convolution + batch norm) as Ultralytics' own inference does. Skipped with a
    printed reason when ultralytics (the ``bench`` extra) is missing.
    """
    try:
        from ultralytics import YOLO
        from ultralytics.utils.nms import non_max_suppression
    except ImportError as exc:
        print(f"  YOLO skipped: ultralytics is not installed (pip install -e '.[bench]'): {exc}", file=sys.stderr)
        return []
    batch_images = batch_of(images, batch)
    note = "letterbox + network + NMS, conf 0"
    out = []
    for name in YOLO_MODELS:
        print(f"  preparing {name} {size} b{batch} ...", file=sys.stderr, flush=True)
        try:
            torch.manual_seed(0)
            model = YOLO(f"{name}.yaml").model.eval().fuse(verbose=False).to(device)
        except Exception as exc:
            out.append(failed_variant(name, "eager", size, batch, exc))
            continue

        def eager(inputs: np.ndarray, model: torch.nn.Module = model) -> torch.Tensor:
            with torch.inference_mode():
                return model(torch.from_numpy(inputs).to(device))[0]

        out.append(Variant(name, "eager", size, batch, YoloPipeline(size, eager, non_max_suppression).stages(batch_images), note))
        if "onnx" not in variants:
            continue
        try:
            import onnxruntime as ort

            path = export_yolo_onnx(model, workdir / f"{name}_{size}_b{batch}.onnx", size, batch)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            def onnx_run(inputs: np.ndarray, session: Any = session) -> torch.Tensor:
                return torch.from_numpy(session.run(None, {"images": inputs})[0])

            out.append(Variant(name, "onnxruntime", size, batch,
                               YoloPipeline(size, onnx_run, non_max_suppression).stages(batch_images), note))
        except Exception as exc:
            out.append(failed_variant(name, "onnxruntime", size, batch, exc))
    return out


# ---------------------------------------------------------------------------------------------
# Training input pipeline and training step
# ---------------------------------------------------------------------------------------------


def training_sample_rates(size: int, num_images: int, seed: int = 0) -> tuple[dict[str, float], list[dict[str, np.ndarray]], int]:
    """Per-stage and total images/s of one worker on coco_mini train images.

    Returns:
        ``({stage: ms per image, "images/s": rate}, the samples produced, number of classes)``.
    """
    dataset = load_dataset(COCO_MINI, split="train")
    task = CtdetTask(dataset.num_classes)
    augment = TrainAugmentation(spec=InputSpec(input_hw=(size, size)))
    rng = NumpyAugmentRandom(np.random.default_rng(seed))
    spent = {"decode": 0.0, "augment": 0.0, "targets": 0.0}
    samples = []
    for i in range(num_images):
        record = dataset.records[i % len(dataset)]
        start = time.perf_counter()
        image = load_image(record.path)
        decoded = time.perf_counter()
        sample = task.augment(image, augment, rng)
        augmented = time.perf_counter()
        targets = task.encode(record.annotations(), sample.meta)
        done = time.perf_counter()
        spent["decode"] += decoded - start
        spent["augment"] += augmented - decoded
        spent["targets"] += done - augmented
        samples.append({"input": sample.input, **{k: v for k, v in targets.items() if k not in DEBUG_ONLY_KEYS}})
    rates = {f"{stage} ms": 1000 * seconds / num_images for stage, seconds in spent.items()}
    rates["images/s"] = num_images / sum(spent.values())
    return rates, samples, dataset.num_classes


def training_step_rate(samples: list[dict[str, np.ndarray]], num_classes: int, batch: int, steps: int, device: torch.device) -> float:
    """res_18 training steps (forward, ctdet loss, backward, Adam) per second, in images/s."""
    torch.manual_seed(0)
    task = CtdetTask(num_classes)
    model = build_model("res_18", task.heads).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.25e-4)
    batches = [
        {key: torch.from_numpy(np.stack([samples[(s * batch + i) % len(samples)][key] for i in range(batch)])).to(device) for key in samples[0]}
        for s in range(steps + 1)
    ]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(data: dict[str, torch.Tensor]) -> None:
        loss, _ = task.loss(model(data["input"]), data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up: allocator, Adam state
    sync()
    start = time.perf_counter()
    for data in batches[1:]:
        step(data)
    sync()
    return steps * batch / (time.perf_counter() - start)
