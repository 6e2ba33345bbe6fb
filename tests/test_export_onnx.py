"""ONNX export: every registered network, decoded and raw graphs, dynamic batch, metadata, OnnxDetector.

Random weights as initialised by the original give almost constant head maps (many exactly tied
scores, whose top-K order is arbitrary), so the networks here are re-drawn with variance-preserving
weights and unit-variance head outputs: every score is distinct and the decoders' outputs can be
compared one to one.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from centernet.cli import main as cli_main
from centernet.models.detector import CenterNet
from centernet.export.onnx import ExportMetadata, OnnxDetector, export_onnx, output_to_image_transform, read_metadata
from centernet.models import list_models
from centernet.models.dcn import DeformConv
from centernet.tasks.base import final_stack
from tests.helpers import assert_close

CLASS_NAMES = ("cat", "dog", "kite")
K = 20
# Hourglass-104 needs 128 px to reach its innermost level; the others run at stride-32 sizes.
INPUT_HW = {"hourglass": (128, 128)}
DEFAULT_INPUT_HW = (64, 96)
# (height, width) of the images whose letterbox the trans inputs describe: one exactly fills the
# input, one is letterboxed.
IMAGE_SIZES = ((320, 480), (200, 160))
# onnxruntime vs PyTorch kernels on unit-variance head outputs; boxes get the same tolerance in
# output-map pixels. With these random weights DLA-34's deepest level grows to ~100 while its head
# input is ~0.1: float32 rounding relative to the large intermediate values (base, DLAUp and IDAUp
# each agree to ~1e-6 of their magnitude on their own) reaches 6e-4 on the rescaled logits.
ATOL = {"dla_34": 1e-3}
DEFAULT_ATOL = 1e-4


def randomize(network: nn.Module, heads: dict[str, int], seed: int, input_hw: tuple[int, int]) -> None:
    """Variance-preserving random weights, fixed random deformable offsets, every head output channel
    then rescaled to zero mean and unit variance on a noise image."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()  # mean 0, variance 1: an affine map in eval mode
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                continue
            for param in module.parameters(recurse=False):
                scale = math.sqrt(2 / param[0].numel()) if param.dim() > 1 else 0.1
                param.copy_(scale * torch.randn(param.shape, generator=generator))
            if isinstance(module, DeformConv):
                # Fixed fractional offsets per tap: offsets predicted from random features would
                # turn float rounding into chaotic sampling differences between the two runtimes.
                module.conv_offset_mask.weight.zero_()
                module.conv_offset_mask.bias.copy_(torch.randn(module.conv_offset_mask.bias.shape, generator=generator))
        network.eval()
        outputs = final_stack(network(torch.randn(1, 3, *input_hw, generator=generator)))
        for name in heads:
            final_conv = [m for m in getattr(network, name).modules() if isinstance(m, nn.Conv2d)][-1]
            mean = outputs[name].mean(dim=(0, 2, 3))
            std = outputs[name].std(dim=(0, 2, 3))
            final_conv.weight.div_(std.view(-1, 1, 1, 1))
            final_conv.bias.sub_(mean).div_(std)


def input_hw_of(arch: str) -> tuple[int, int]:
    return INPUT_HW.get(arch, DEFAULT_INPUT_HW)


def make_detector(arch: str, seed: int = 0) -> CenterNet:
    input_hw = input_hw_of(arch)
    detector = CenterNet(
        arch,
        class_names=CLASS_NAMES,
        input_size=input_hw,
        head_conv=16,
        mean=(0.5, 0.45, 0.4),
        std=(0.25, 0.3, 0.35),
        channel_order="rgb",
        K=K,
    )
    randomize(detector.network, detector.task.heads, seed, input_hw)
    return detector.eval()


def pytorch_detections(detector: CenterNet, inputs: torch.Tensor, metas) -> list[dict[str, np.ndarray]]:
    """The PyTorch path from network inputs: task decode, post-process to image pixels, score order."""
    with torch.no_grad():
        dets = detector.task.decode(detector.network(inputs), K=K)
    results = []
    for image_dets, meta in zip(dets, metas):
        found = detector.task.detections(detector.task.post_process(image_dets, meta))
        order = np.argsort(-found["scores"], kind="stable")
        results.append({key: value[order] for key, value in found.items()})
    return results


def score_atol(arch: str) -> float:
    return ATOL.get(arch, DEFAULT_ATOL)


def box_atol(arch: str, meta) -> float:
    """``score_atol`` in output-map pixels converted to image pixels, plus float32 rounding of
    coordinates that large."""
    pixels_per_output_px = float(np.max(meta.scale)) / meta.output_hw[1]
    return score_atol(arch) * pixels_per_output_px + 1e-6 * max(meta.image_hw)


def noise_images(seed: int = 0) -> list[np.ndarray]:
    """BGR uint8 noise images of ``IMAGE_SIZES`` (noise: no two input windows alike, no tied scores)."""
    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0) for h, w in IMAGE_SIZES]


# The deepest networks take most of this file's time (export is tracing-bound): marked slow, still run in CI.
SLOW_ARCHS = {"hourglass", "res_101", "resdcn_101"}
ARCH_PARAMS = [pytest.param(arch, marks=pytest.mark.slow) if arch in SLOW_ARCHS else arch for arch in list_models()]


@pytest.fixture(scope="module", params=ARCH_PARAMS)
def exported(request, tmp_path_factory) -> tuple[CenterNet, Path]:
    """A randomised detector of each architecture and its decoded graph (dynamic batch)."""
    arch = request.param
    detector = make_detector(arch)
    path = export_onnx(detector, tmp_path_factory.mktemp(arch) / f"{arch}.onnx", K=K)
    yield detector, path
    path.unlink()  # Hourglass-104 graphs weigh 750 MB


def test_decoded_graph_matches_pytorch_for_any_batch(exported) -> None:
    detector, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "trans"]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    input_hw = input_hw_of(detector.arch)
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3):  # exported with a batch of 2
        inputs = torch.randn(batch, 3, *input_hw, generator=generator)
        metas = [detector.spec.meta(*IMAGE_SIZES[i % len(IMAGE_SIZES)]) for i in range(batch)]
        trans = np.stack([output_to_image_transform(meta) for meta in metas])
        boxes, scores, labels = session.run(None, {"images": inputs.numpy(), "trans": trans})
        assert boxes.shape == (batch, K, 4) and scores.shape == (batch, K) and labels.shape == (batch, K)
        assert labels.dtype == np.int64
        for i, expected in enumerate(pytorch_detections(detector, inputs, metas)):
            assert np.unique(expected["scores"]).size == K, "test input gives tied scores"
            np.testing.assert_array_equal(labels[i], expected["labels"], err_msg=f"labels of image {i}")
            assert_close(scores[i], expected["scores"], f"scores of image {i}", atol=score_atol(detector.arch), rtol=0)
            assert_close(boxes[i], expected["boxes"], f"boxes of image {i}", atol=box_atol(detector.arch, metas[i]), rtol=0)


def test_metadata_round_trip(exported) -> None:
    detector, path = exported
    expected = ExportMetadata(
        task="ctdet",
        arch=detector.arch,
        class_names=CLASS_NAMES,
        heads=detector.task.heads,
        input_hw=input_hw_of(detector.arch),
        mean=(0.5, 0.45, 0.4),
        std=(0.25, 0.3, 0.35),
        channel_order="rgb",
        down_ratio=4,
        K=K,
        decoded=True,
    )
    assert read_metadata(path) == expected
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert ExportMetadata.from_props(session.get_modelmeta().custom_metadata_map) == expected


def test_onnx_detector_equals_pytorch_detector(exported) -> None:
    detector, path = exported
    images = noise_images()
    onnx_results = OnnxDetector(path).predict(images)
    rgb = [torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1])).permute(2, 0, 1).float() / 255 for im in images]
    torch_results = detector(rgb)
    assert len(onnx_results) == len(images)
    for i, (got, expected) in enumerate(zip(onnx_results, torch_results)):
        meta = detector.spec.meta(*images[i].shape[:2])
        assert tuple(got.names) == CLASS_NAMES and got.image is images[i]
        np.testing.assert_array_equal(got.labels, expected["labels"].numpy(), err_msg=f"labels of image {i}")
        assert_close(got.scores, expected["scores"], f"scores of image {i}", atol=score_atol(detector.arch), rtol=0)
        assert_close(got.boxes, expected["boxes"], f"boxes of image {i}", atol=box_atol(detector.arch, meta), rtol=0)
        assert np.unique(got.scores).size == len(got), "test image gives tied scores"

    threshold = float(np.median(onnx_results[0].scores))
    kept = OnnxDetector(path, score_thresh=threshold).predict(images[:1])[0]
    np.testing.assert_array_equal(kept.scores, onnx_results[0].scores[onnx_results[0].scores >= threshold])
    assert 0 < len(kept) < K


def test_cli_exports_raw_heads_of_the_last_stack(tmp_path) -> None:
    detector = make_detector("res_18", seed=3)
    weights = tmp_path / "model.pt"
    detector.save(weights)
    output = tmp_path / "raw.onnx"
    height, width = DEFAULT_INPUT_HW
    argv = ["export", "--weights", str(weights), "--output", str(output), "--input-size", str(height), str(width)]
    assert cli_main([*argv, "--K", "7", "--raw-heads"]) == 0

    metadata = read_metadata(output)
    assert not metadata.decoded and metadata.K == 7 and metadata.class_names == CLASS_NAMES
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == list(detector.task.heads)
    inputs = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = final_stack(detector.network(inputs))
    for name, value in zip(detector.task.heads, session.run(None, {"images": inputs.numpy()})):
        assert_close(value, expected[name], f"head {name}", atol=score_atol(detector.arch), rtol=0)

    # A raw graph is decoded on the host by OnnxDetector, with the same results.
    images = noise_images(seed=5)
    detector.K = 7
    onnx_results = OnnxDetector(output).predict(images, batch_size=1)
    rgb = [torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1])).permute(2, 0, 1).float() / 255 for im in images]
    for i, (got, expected_dets) in enumerate(zip(onnx_results, detector(rgb))):
        meta = detector.spec.meta(*images[i].shape[:2])
        assert len(got) == 7
        np.testing.assert_array_equal(got.labels, expected_dets["labels"].numpy())
        assert_close(got.scores, expected_dets["scores"], f"scores of image {i}", atol=score_atol(detector.arch), rtol=0)
        assert_close(got.boxes, expected_dets["boxes"], f"boxes of image {i}", atol=box_atol(detector.arch, meta), rtol=0)


def test_k_beyond_the_output_map_is_refused(tmp_path) -> None:
    detector = CenterNet("res_18", num_classes=2, input_size=(32, 32), head_conv=8)
    with pytest.raises(ValueError, match="K=200"):
        export_onnx(detector, tmp_path / "k.onnx", K=200)  # 2 classes x 8 x 8 output pixels = 128


def test_metadata_from_other_exporters_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a CenterNet ONNX export"):
        ExportMetadata.from_props({"producer": "someone else"})
