"""Inference and training-input benchmark: CenterNet per stage, against torchvision detectors.

One command, one table per run::

    python benchmarks/bench_inference.py --quick            # smoke run (res_18, 512, batch 1)
    python benchmarks/bench_inference.py                    # res_18 and dla_34 at 512, batch 1 and 8
    python benchmarks/bench_inference.py --device cuda --amp bf16 --archs dla_34 --batches 1 8 32

For every architecture, input size and batch: the latency of each stage (pre-processing: letterbox
warp + normalisation; network; decoding: sigmoid, 3x3 max-pool peaks, top-K; post-processing:
boxes to image pixels, per-image arrays), end-to-end images/s and peak memory, for several ways of
running the network: eager, channels_last, torch.compile (reported as failed where it fails),
autocast fp16/bf16 (CUDA), CUDA graphs via torch.compile ``reduce-overhead`` (CUDA), and ONNX
Runtime on the graph ``export_onnx`` writes (decoding inside the graph). Ratios are against the
eager network time of the same run. torchvision's RetinaNet-R50-FPN, Faster R-CNN
MobileNetV3-FPN and SSDlite320 run end to end (their own resizing and post-processing) on the same
images, and Ultralytics YOLOv8n (built from its yaml, when ``ultralytics`` is installed) on the same
letterboxed input as CenterNet, with its own NMS. A peer table then ranks the eager end-to-end times
of one size and batch against the mobile CenterNet (``timm_tf_efficientnet_lite0``) of the same run. All networks have random weights: nothing is downloaded; speed does not depend on the
weights except through the number of boxes the torchvision detectors' NMS sees.

Then the training input pipeline on the real COCO images of ``coco_mini`` (decode, the original's
random-crop / flip / colour augmentation, ctdet target generation) in images/s for one worker, and
the res_18 training-step throughput (forward, ctdet loss, backward, Adam) on such batches.

Medians over ``--repeats`` runs after ``--warmup`` runs. On CUDA the pipeline makes no host
synchronisation between stages (stages are timed with CUDA events; the end-to-end time ends
with the detections on the host), pre-processing is batched on the GPU (``CenterNet(warp="torch")``).
Peak memory: process RSS high-water mark since the variant started (Linux ``/proc/self/clear_refs``;
else the process maximum) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from centernet.data.check import load_dataset
from centernet.engine.predictor import Predictor
from centernet.data.image_io import load_image
from centernet.data.transforms import InputSpec, TrainAugmentation
from centernet.detector import CenterNet
from centernet.export.onnx import export_onnx, output_to_image_transform
from centernet.models import build_model
from centernet.tasks.ctdet import CtdetTask

DATA_DIR = Path(os.environ.get("CENTERNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
COCO_MINI = DATA_DIR / "coco_mini"
NUM_CLASSES = 80
K = 100
MOBILE_CENTERNET = "timm_tf_efficientnet_lite0"  # the peer table's baseline
DECODE_BUDGET = 0.05  # decoding <= 5 % of the network time (res_18, 512, CPU)
END_TO_END_BUDGET = 1.15  # end to end <= 1.15 x the network alone


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------


class Clock:
    """Wall-clock timer of one device: ``perf_counter`` on the CPU, CUDA events on a GPU.

    CUDA events are recorded on the stream without waiting; ``elapsed`` synchronises once, at
    the end, so timing adds no host synchronisation inside the measured pipeline.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed(self, start: Any, end: Any) -> float:
        """Seconds between two marks."""
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        return end - start


class PeakMemory:
    """Peak memory of the code run since ``reset``, in MiB (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_seconds(run: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``run()`` (``sync`` after each run so the work is finished)."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# CenterNet pipelines
# ---------------------------------------------------------------------------------------------


@dataclass
class StageTimes:
    """Median seconds per batch of each stage and of the whole pipeline."""

    preprocess: float = float("nan")
    network: float = float("nan")
    decode: float = float("nan")
    postprocess: float = float("nan")
    end_to_end: float = float("nan")
    peak_mib: float = float("nan")
    note: str = ""


@dataclass
class Row:
    """One line of the result table."""

    model: str
    variant: str
    size: int
    batch: int
    times: StageTimes
    network_ratio: float = float("nan")  # this variant's network time / eager network time
    extra: dict[str, float] = field(default_factory=dict)


class TorchPipeline:
    """CenterNet in PyTorch, the library's one ``Predictor``, timed stage by stage.

    The stages are the predictor's own steps: pre-processing (on the CPU the original's
    ``cv2.warpAffine`` per image, BGR uint8; on CUDA the images are uploaded as uint8 and warped
    together with ``grid_sample``, ``CenterNet(warp="torch")``), the network under the predictor's
    precision, the task's decoding, and the predictor's merge / conversion to ``Results``.
    End to end is ``Predictor.run_inputs`` then ``Predictor.finish`` per image.

    Args:
        detector: the detector (its network is used as given, or replaced by ``network``).
        device: where the network runs.
        network: the callable to run instead of ``detector.network`` (compiled, ...).
        channels_last: feed NHWC-strided inputs.
        amp_dtype: autocast dtype, ``None`` for float32.
    """

    PRECISION = {None: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}

    def __init__(
        self,
        detector: CenterNet,
        device: torch.device,
        network: Callable[[torch.Tensor], Any] | None = None,
        channels_last: bool = False,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        self.detector = detector
        self.device = device
        self.channels_last = channels_last
        self.predictor = Predictor(
            network if network is not None else detector.network, detector.task, detector.spec, detector.class_names,
            K=detector.K, device=device, precision=self.PRECISION[amp_dtype], batch_size=1 << 16,
        )

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list]:
        if self.device.type == "cuda":
            # uint8 upload (4x less traffic than float), conversion and warp on the GPU.
            gpu = [torch.from_numpy(im).pin_memory().to(self.device, non_blocking=True) for im in images]
            rgb = [im.flip(-1).permute(2, 0, 1).float().div_(255) for im in gpu]
            inputs, metas = self.detector.preprocess(rgb)
        else:
            prepared = [self.detector.spec.inference_input(im) for im in images]
            inputs = torch.from_numpy(np.stack([p[0] for p in prepared]))
            metas = [p[1] for p in prepared]
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, metas

    def network(self, inputs: torch.Tensor) -> Any:
        with self.predictor.autocast():
            outputs = self.predictor.network(inputs)
        final = outputs[-1] if isinstance(outputs, list) else outputs
        return {name: value.float() for name, value in final.items()}

    def decode(self, outputs: Any) -> torch.Tensor:
        return self.detector.task.decode(outputs, K=self.predictor.K)

    def postprocess(self, dets: torch.Tensor, metas: list) -> list:
        dets = dets.cpu()  # the one device -> host copy of the pipeline
        task = self.detector.task
        return [self.predictor.finish([task.post_process(d, meta)]) for d, meta in zip(dets, metas)]

    def run(self, images: Sequence[np.ndarray]) -> list:
        inputs, metas = self.preprocess(images)
        return [self.predictor.finish([found]) for found in self.predictor.run_inputs(inputs, metas)]


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

    def run(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.postprocess(self.network_and_decode(*self.preprocess(images)))


def time_torch_pipeline(pipeline: TorchPipeline, images: Sequence[np.ndarray], args: argparse.Namespace) -> StageTimes:
    """Per-stage medians (each stage fed the previous stage's cached output) and end to end."""
    clock = Clock(pipeline.device)
    memory = PeakMemory(pipeline.device)
    sync = torch.cuda.synchronize if pipeline.device.type == "cuda" else (lambda: None)
    memory.reset()
    with torch.inference_mode():
        inputs, metas = pipeline.preprocess(images)
        # Cloned: CUDA-graph runs (compile reduce-overhead) overwrite their outputs on the next call.
        outputs = {name: value.clone() for name, value in pipeline.network(inputs).items()}
        dets = pipeline.decode(outputs)
        stages = {
            "preprocess": lambda: pipeline.preprocess(images),
            "network": lambda: pipeline.network(inputs),
            "decode": lambda: pipeline.decode(outputs),
            "postprocess": lambda: pipeline.postprocess(dets, metas),
        }
        times = StageTimes()
        for name, stage in stages.items():
            for _ in range(args.warmup):
                stage()
            samples = []
            for _ in range(args.repeats):
                start = clock.mark()
                stage()
                samples.append(clock.elapsed(start, clock.mark()))
            setattr(times, name, statistics.median(samples))
        times.end_to_end = median_seconds(lambda: pipeline.run(images), args.warmup, args.repeats, sync)
    times.peak_mib = memory.peak_mib()
    return times


def time_onnx_pipeline(pipeline: OnnxPipeline, images: Sequence[np.ndarray], args: argparse.Namespace) -> StageTimes:
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    inputs, trans = pipeline.preprocess(images)
    outputs = pipeline.network_and_decode(inputs, trans)
    no_sync = lambda: None  # noqa: E731  (onnxruntime returns host arrays: already synchronous)
    times = StageTimes(
        preprocess=median_seconds(lambda: pipeline.preprocess(images), args.warmup, args.repeats, no_sync),
        network=median_seconds(lambda: pipeline.network_and_decode(inputs, trans), args.warmup, args.repeats, no_sync),
        postprocess=median_seconds(lambda: pipeline.postprocess(outputs), args.warmup, args.repeats, no_sync),
        end_to_end=median_seconds(lambda: pipeline.run(images), args.warmup, args.repeats, no_sync),
        note="network includes decoding (in the graph)",
    )
    times.peak_mib = memory.peak_mib()
    return times


def guarded(name: str, measure: Callable[[], StageTimes]) -> StageTimes:
    """Run one variant; a failure becomes a table note instead of ending the benchmark."""
    try:
        return measure()
    except Exception as exc:  # compile / export back-ends fail in many ways; report, go on
        print(f"[{name}] failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        return StageTimes(note=f"failed: {type(exc).__name__}")


def centernet_rows(
    arch: str, size: int, batch: int, images: Sequence[np.ndarray], device: torch.device, args: argparse.Namespace, workdir: Path
) -> list[Row]:
    """Every variant of one (architecture, size, batch)."""
    torch.manual_seed(0)
    warp = "torch" if device.type == "cuda" else "cv2"
    detector = CenterNet(arch, num_classes=NUM_CLASSES, input_size=(size, size), K=K, warp=warp).eval().to(device)
    batch_images = [images[i % len(images)] for i in range(batch)]
    variants: list[tuple[str, Callable[[], StageTimes]]] = [
        ("eager", lambda: time_torch_pipeline(TorchPipeline(detector, device), batch_images, args)),
    ]
    if "channels_last" in args.variants:

        def channels_last() -> StageTimes:
            detector.network.to(memory_format=torch.channels_last)
            try:
                return time_torch_pipeline(TorchPipeline(detector, device, channels_last=True), batch_images, args)
            finally:
                detector.network.to(memory_format=torch.contiguous_format)

        variants.append(("channels_last", channels_last))
    if device.type == "cuda" and args.amp != "none":
        amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.amp]
        variants.append((f"autocast {args.amp}", lambda: time_torch_pipeline(TorchPipeline(detector, device, amp_dtype=amp_dtype), batch_images, args)))
    if "compile" in args.variants:

        def compiled(mode: str | None) -> StageTimes:
            torch._dynamo.reset()  # a fresh cache, so that each mode compiles its own graph
            network = torch.compile(detector.network, mode=mode, dynamic=False)
            return time_torch_pipeline(TorchPipeline(detector, device, network=network), batch_images, args)

        variants.append(("torch.compile", lambda: compiled(None)))
        if device.type == "cuda":
            variants.append(("compile reduce-overhead (CUDA graphs)", lambda: compiled("reduce-overhead")))
    if "onnx" in args.variants:

        def onnxruntime() -> StageTimes:
            path = workdir / f"{arch}_{size}.onnx"
            if not path.exists():
                export_onnx(detector.cpu(), path, input_size=(size, size), K=K)
                detector.to(device)
            return time_onnx_pipeline(OnnxPipeline(path, detector.spec, device), batch_images, args)

        variants.append(("onnxruntime", onnxruntime))

    rows = []
    for name, measure in variants:
        print(f"  {arch} {size} b{batch}: {name} ...", file=sys.stderr, flush=True)
        rows.append(Row(arch, name, size, batch, guarded(name, measure)))
    eager_network = rows[0].times.network
    for row in rows:
        row.network_ratio = row.times.network / eager_network
    return rows


# ---------------------------------------------------------------------------------------------
# torchvision detectors
# ---------------------------------------------------------------------------------------------


def torchvision_rows(size: int, batch: int, images: Sequence[np.ndarray], device: torch.device, args: argparse.Namespace) -> list[Row]:
    """torchvision detectors end to end (own transform, heads, NMS) on the same images, random weights."""
    from torchvision.models import detection

    builders = {
        # min/max size set to the benchmark size so that they see as many pixels as CenterNet.
        "retinanet_resnet50_fpn": lambda: detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=size, max_size=size),
        "fasterrcnn_mobilenet_v3_large_fpn": lambda: detection.fasterrcnn_mobilenet_v3_large_fpn(
            weights=None, weights_backbone=None, min_size=size, max_size=size
        ),
        "ssdlite320_mobilenet_v3_large": lambda: detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None),
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    memory = PeakMemory(device)
    batch_images = [images[i % len(images)] for i in range(batch)]
    rows = []
    for name, build in builders.items():
        print(f"  {name} {size} b{batch} ...", file=sys.stderr, flush=True)

        def measure() -> StageTimes:
            torch.manual_seed(0)
            model = build().eval().to(device)
            memory.reset()

            def run() -> list[dict[str, np.ndarray]]:
                tensors = [torch.from_numpy(im).to(device).flip(-1).permute(2, 0, 1).float().div_(255) for im in batch_images]
                return [{k: v.cpu().numpy() for k, v in out.items()} for out in model(tensors)]

            with torch.inference_mode():
                seconds = median_seconds(run, args.warmup, args.repeats, sync)
            note = "own resize to 320" if name.startswith("ssdlite") else ""
            return StageTimes(end_to_end=seconds, peak_mib=memory.peak_mib(), note=note)

        rows.append(Row(name, "eager", size, batch, guarded(name, measure)))
    return rows


def yolov8n_rows(size: int, batch: int, images: Sequence[np.ndarray], device: torch.device, args: argparse.Namespace) -> list[Row]:
    """Ultralytics YOLOv8n from ``yolov8n.yaml`` (random weights, nothing downloaded), end to end:
    CenterNet's letterbox to ``size`` (RGB, 0..1), the network, Ultralytics' NMS (max 100 boxes)."""
    try:
        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        print("  yolov8n: ultralytics is not installed, skipped", file=sys.stderr)
        return []
    print(f"  yolov8n {size} b{batch} ...", file=sys.stderr, flush=True)
    spec = InputSpec(input_hw=(size, size), pad=31, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="rgb")
    batch_images = [images[i % len(images)] for i in range(batch)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    memory = PeakMemory(device)

    def measure() -> StageTimes:
        torch.manual_seed(0)
        model = DetectionModel("yolov8n.yaml", nc=NUM_CLASSES, verbose=False).eval().to(device)
        memory.reset()

        def run() -> list[np.ndarray]:
            inputs = np.stack([spec.inference_input(im)[0] for im in batch_images])
            prediction = model(torch.from_numpy(inputs).to(device))[0]
            return [d.cpu().numpy() for d in non_max_suppression(prediction, conf_thres=0.25, max_det=K)]

        with torch.inference_mode():
            seconds = median_seconds(run, args.warmup, args.repeats, sync)
        return StageTimes(end_to_end=seconds, peak_mib=memory.peak_mib(), note="letterbox + network + NMS")

    return [Row("yolov8n", "eager", size, batch, guarded("yolov8n", measure))]


def peer_lines(rows: list[Row]) -> list[str]:
    """Eager end-to-end times of each (size, batch) against the mobile CenterNet's of the same run."""
    lines = []
    for size, batch in dict.fromkeys((row.size, row.batch) for row in rows):
        group = [r for r in rows if (r.size, r.batch) == (size, batch) and r.variant == "eager" and not np.isnan(r.times.end_to_end)]
        base = next((r for r in group if r.model == MOBILE_CENTERNET), None)
        if base is None:
            continue
        lines += [f"\n### Peers at {size}, batch {batch}: end to end against {MOBILE_CENTERNET}\n", "| model | end-to-end ms | vs mobile CenterNet |", "|---|---|---|"]
        for row in sorted(group, key=lambda r: r.times.end_to_end):
            lines.append(f"| {row.model} | {ms(row.times.end_to_end)} | {row.times.end_to_end / base.times.end_to_end:.2f}x |")
    return lines


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
    rng = np.random.default_rng(seed)
    spent = {"decode": 0.0, "augment": 0.0, "targets": 0.0}
    samples = []
    for i in range(num_images):
        record = dataset.records[i % len(dataset)]
        start = time.perf_counter()
        image = load_image(record.path)
        decoded = time.perf_counter()
        network_input, meta = augment(image, rng)
        augmented = time.perf_counter()
        targets = task.encode(record.annotations(), meta)
        done = time.perf_counter()
        spent["decode"] += decoded - start
        spent["augment"] += augmented - decoded
        spent["targets"] += done - augmented
        samples.append({"input": network_input, **targets})
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


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "-" if np.isnan(seconds) else f"{1000 * seconds:.1f}"


def format_table(rows: list[Row]) -> str:
    header = "| model | variant | size | batch | preprocess ms | network ms | decode ms | postprocess ms | end-to-end ms | images/s | network vs eager | peak MiB | note |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        t = row.times
        fps = "-" if np.isnan(t.end_to_end) else f"{row.batch / t.end_to_end:.2f}"
        ratio = "-" if np.isnan(row.network_ratio) else f"{row.network_ratio:.2f}x"
        peak = "-" if np.isnan(t.peak_mib) else f"{t.peak_mib:.0f}"
        lines.append(
            f"| {row.model} | {row.variant} | {row.size} | {row.batch} | {ms(t.preprocess)} | {ms(t.network)} | "
            f"{ms(t.decode)} | {ms(t.postprocess)} | {ms(t.end_to_end)} | {fps} | {ratio} | {peak} | {t.note} |"
        )
    return "\n".join(lines)


def budget_lines(rows: list[Row]) -> list[str]:
    """The decoding / end-to-end requirements, checked on every eager CenterNet row."""
    lines = []
    for row in rows:
        t = row.times
        if row.variant != "eager" or np.isnan(t.decode):
            continue
        decode_share = t.decode / t.network
        overhead = t.end_to_end / t.network
        lines.append(
            f"- {row.model} {row.size} b{row.batch}: decode = {100 * decode_share:.1f}% of the network "
            f"({'ok' if decode_share <= DECODE_BUDGET else 'OVER'} <= {100 * DECODE_BUDGET:.0f}%), "
            f"end to end = {overhead:.3f}x the network ({'ok' if overhead <= END_TO_END_BUDGET else 'OVER'} <= {END_TO_END_BUDGET}x)"
        )
    return lines


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    parts = [
        f"{cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, load average {load}",
        f"python {platform.python_version()}, torch {torch.__version__}",
    ]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--archs", nargs="+", default=None, help=f"default res_18 dla_34 {MOBILE_CENTERNET} (--quick: res_18 {MOBILE_CENTERNET})"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[512])
    parser.add_argument("--batches", nargs="+", type=int, default=None, help="default 1 8 (--quick: 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), default="fp16", help="autocast variant on CUDA")
    parser.add_argument(
        "--variants", nargs="+", default=["channels_last", "compile", "onnx"], choices=("channels_last", "compile", "onnx"),
        help="variants besides eager",
    )
    parser.add_argument("--no-torchvision", action="store_true", help="skip the torchvision detectors and YOLOv8n")
    parser.add_argument("--no-training", action="store_true", help="skip the training input / step throughput")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=80, help="coco_mini images for the input pipeline")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: res_18, batch 1, few repeats, small training runs")
    args = parser.parse_args(argv)
    args.archs = args.archs or (["res_18", MOBILE_CENTERNET] if args.quick else ["res_18", "dla_34", MOBILE_CENTERNET])
    args.batches = args.batches or ([1] if args.quick else [1, 8])
    if args.quick:
        args.warmup, args.repeats = 1, 5
        args.train_images, args.train_batch, args.train_steps = 16, 2, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    image_paths = sorted((COCO_MINI / "val2017").glob("*.jpg"))[:8]
    if not image_paths:
        raise SystemExit(f"no images under {COCO_MINI / 'val2017'}; set CENTERNET_DATA_DIR")
    images = [load_image(p) for p in image_paths]

    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for size in args.sizes:
            for batch in args.batches:
                for arch in args.archs:
                    rows += centernet_rows(arch, size, batch, images, device, args, Path(workdir))
                if not args.no_torchvision:
                    rows += torchvision_rows(size, batch, images, device, args)
                    rows += yolov8n_rows(size, batch, images, device, args)

    print(f"\n## Inference ({args.device}; medians of {args.repeats} after {args.warmup} warm-up; COCO val images {images[0].shape[1]}x{images[0].shape[0]}...)\n")
    print(f"Machine: {machine_description(device)}\n")
    print(format_table(rows))
    print("\nRequirements (eager CenterNet):")
    print("\n".join(budget_lines(rows)))
    print("\n".join(peer_lines(rows)))

    if not args.no_training:
        size = args.sizes[0]
        rates, samples, num_classes = training_sample_rates(size, args.train_images)
        step_rate = training_step_rate(samples, num_classes, args.train_batch, args.train_steps, device)
        print(f"\n## Training input and step throughput ({size}x{size}, coco_mini train, one worker)\n")
        print("| stage | value |\n|---|---|")
        for name, value in rates.items():
            print(f"| {name} | {value:.2f} |")
        print(f"| res_18 training step (batch {args.train_batch}, {args.train_steps} steps) images/s | {step_rate:.2f} |")
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
