"""INT8 export: static QDQ quantisation of the network, float decoder, calibration inputs and errors.

The network is a ResNet-18 at 128x128 with ``test_export_onnx``'s variance-preserving random
weights and unit-variance head outputs (distinct scores), its sizes then shifted to 8 +- 1
output pixels so that boxes have areas to compare; calibrated on 4 raccoon photos. What the INT8 cost is on a trained model is measured by
``benchmarks/bench_int8.py`` (``benchmarks/RESULTS_int8.md``).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from centernet.cli import main as cli_main
from centernet.data.image_io import ImageReadError, load_image
from centernet.models.detector import CenterNet
from centernet.export.int8 import DECODER_PREFIX, calibration_files
from centernet.export.onnx import OnnxDetector, export_onnx, read_metadata
from centernet.tasks.base import final_stack
from tests.test_export_onnx import randomize

RACCOON = Path(__file__).resolve().parents[2] / "shared" / "data" / "raccoon" / "images"
CALIBRATION = ("raccoon-1.jpg", "raccoon-10.jpg", "raccoon-100.jpg", "raccoon-101.jpg")
TEST_IMAGES = ("raccoon-105.jpg", "raccoon-106.jpg", "raccoon-110.jpg")
INPUT_HW = (128, 128)
K = 20
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# INT8 against float32 on these photos, measured: heat maps within 0.039 (max |sigmoid difference|),
# sorted top-K scores within 0.011, float's top box found with IoU 0.98+. Random peaks lie close
# together, so two neighbours may swap places: float's top box is looked for among INT8's first TOP_N.
HEAT_ATOL = 0.08
SCORE_ATOL = 0.03
TOP_N = 3
TOP_BOX_IOU = 0.9
SIZE_OUTPUT_PX = 8.0


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``[4]`` xyxy boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for name in CALIBRATION:
        shutil.copy(RACCOON / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def detector() -> CenterNet:
    detector = CenterNet("res_18", class_names=("raccoon",), input_size=INPUT_HW, head_conv=16, K=K)
    randomize(detector.network, detector.task.heads, seed=0, input_hw=INPUT_HW)
    size_conv = [m for m in detector.network.wh.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        size_conv.bias.add_(SIZE_OUTPUT_PX)
    return detector.eval()


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "centernet.cli", *argv], check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def weights(detector, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    detector.save(path)
    return path


@pytest.fixture(scope="module")
def cli_raw_export(weights, calibration_dir) -> subprocess.CompletedProcess:
    """``centernet export --int8 --raw-heads`` of ``weights`` (writes ``model_int8.onnx`` beside it)."""
    return _cli("export", "--weights", str(weights), "--K", str(K), "--raw-heads", "--int8",
                "--calibration-images", str(calibration_dir))


@pytest.fixture(scope="module")
def exported(detector, calibration_dir, weights, cli_raw_export, tmp_path_factory) -> dict[str, Path]:
    """The float32 decoded graph and the INT8 decoded graph of ``detector``, and the CLI's INT8 raw graph."""
    folder = tmp_path_factory.mktemp("int8")
    assert cli_raw_export.returncode == 0, cli_raw_export.stderr
    return {
        "float32": export_onnx(detector, folder / "float32.onnx", K=K),
        "int8": export_onnx(detector, folder / "int8.onnx", K=K, int8=True, calibration_images=calibration_dir),
        "int8_raw": weights.with_name("model_int8.onnx"),
    }


def test_int8_graph_quantises_the_network_and_keeps_the_decoder_float(exported) -> None:
    graph = onnx.load(str(exported["int8"]))
    network = [node for node in graph.graph.node if not node.name.startswith(DECODER_PREFIX)]
    decoder = [node for node in graph.graph.node if node.name.startswith(DECODER_PREFIX)]
    convs = [node for node in network if node.op_type == "Conv"]
    # Every convolution but the three heads' last ones reads de-quantised weights.
    dequantized = {out for node in network if node.op_type == "DequantizeLinear" for out in node.output}
    quantized_convs = [conv for conv in convs if conv.input[1] in dequantized]
    assert len(quantized_convs) == len(convs) - 3
    # The decoder (sigmoid, max-pool peak filter, top-K, gathers) holds no QDQ pair.
    decoder_ops = {node.op_type for node in decoder}
    assert {"Sigmoid", "MaxPool", "TopK", "GatherElements"} <= decoder_ops and not decoder_ops & QDQ_OPS
    assert [i.name for i in graph.graph.input] == ["images", "trans"]
    assert [o.name for o in graph.graph.output] == ["boxes", "scores", "labels"]
    assert read_metadata(exported["int8"]).precision == "int8"
    assert read_metadata(exported["float32"]).precision == "float32"
    assert not {node.op_type for node in onnx.load(str(exported["float32"])).graph.node} & QDQ_OPS


def test_int8_heat_maps_are_close_to_float(detector, exported) -> None:
    session = ort.InferenceSession(str(exported["int8_raw"]), providers=["CPUExecutionProvider"])
    spec = read_metadata(exported["int8_raw"]).input_spec()
    inputs = np.stack([spec.inference_input(load_image(RACCOON / name))[0] for name in TEST_IMAGES])
    int8_hm = session.run(["hm"], {"images": inputs})[0]
    with torch.no_grad():
        float_hm = final_stack(detector.network(torch.from_numpy(inputs)))["hm"].numpy()
    difference = np.abs(1 / (1 + np.exp(-int8_hm)) - 1 / (1 + np.exp(-float_hm)))
    assert difference.max() < HEAT_ATOL, f"max |sigmoid difference| {difference.max():.3f}"
    assert difference.max() > 0  # quantised for real


def test_int8_detections_are_close_to_float(exported) -> None:
    images = [load_image(RACCOON / name) for name in TEST_IMAGES]
    float_results = OnnxDetector(exported["float32"]).predict(images)
    int8_results = OnnxDetector(exported["int8"]).predict(images)
    raw_results = OnnxDetector(exported["int8_raw"]).predict(images)  # decoded on the host by the Predictor
    for name, expected, got, raw in zip(TEST_IMAGES, float_results, int8_results, raw_results):
        assert len(got) == K
        score_difference = np.abs(got.scores - expected.scores).max()
        assert score_difference < SCORE_ATOL, f"{name}: top-{K} scores differ by {score_difference:.3f}"
        iou = max(box_iou(box, expected.boxes[0]) for box in got.boxes[:TOP_N])
        assert iou > TOP_BOX_IOU, f"{name}: float's top box has IoU {iou:.3f} with INT8's first {TOP_N}"
        np.testing.assert_allclose(raw.scores, got.scores, atol=1e-6, err_msg=name)


def test_calibration_folder_errors(detector, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="calibration image folder not found"):
        calibration_files(tmp_path / "missing", 4)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=f"{tmp_path}: no images to calibrate INT8 on"):
        calibration_files(tmp_path, 4)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        export_onnx(detector, tmp_path / "x.onnx", int8=True, calibration_images=tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        calibration_files(tmp_path, 0)
    with pytest.raises(ValueError, match="needs calibration images"):
        export_onnx(detector, tmp_path / "x.onnx", int8=True)
    with pytest.raises(ValueError, match="only read by an INT8 export"):
        export_onnx(detector, tmp_path / "x.onnx", calibration_images=tmp_path)
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_images_are_evenly_spaced_by_name(calibration_dir) -> None:
    assert [p.name for p in calibration_files(calibration_dir, 2)] == [CALIBRATION[0], CALIBRATION[3]]
    assert len(calibration_files(calibration_dir, 10)) == len(CALIBRATION)


def test_cli_int8_export_and_its_errors(weights, cli_raw_export, tmp_path) -> None:
    assert cli_raw_export.returncode == 0, cli_raw_export.stderr
    written = weights.with_name("model_int8.onnx")
    assert cli_raw_export.stdout.strip() == f"exported {written}"
    metadata = read_metadata(written)
    assert metadata.precision == "int8" and not metadata.decoded and metadata.K == K

    empty = tmp_path / "empty"
    empty.mkdir()
    failed = _cli("export", "--weights", str(weights), "--int8", "--calibration-images", str(empty))
    assert failed.returncode == 2
    suffixes = ".bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp"
    assert failed.stderr.strip().splitlines() == [f"error: {empty}: no images to calibrate INT8 on (looked for {suffixes})"]


def test_cli_refuses_an_unknown_export_format_with_one_error_line(tmp_path, capsys) -> None:
    assert cli_main(["export", "--weights", str(tmp_path / "model.pt"), "--format", "tflite"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: unsupported export format 'tflite'; only 'onnx' is available"
    ]
