"""The one inference path: every caller gives the same detections; every ``test.*`` field matters.

``centernet val``, ``centernet predict``, the Python API (``centernet.predict`` / ``evaluate``,
``CenterNet.detect``) and the validation pass of training all run ``models.predictor.Predictor``;
here they are run on the same images with the same options and must agree row for row.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import centernet
from centernet.cli import main
from centernet import config as config_module
from centernet.config import Config
from centernet.data.check import load_dataset
from centernet.data.image_io import load_image
from centernet.data.transforms import InputSpec
from centernet.models.detector import CenterNet
from centernet.engine.evaluate import evaluate_network
from centernet.models.predictor import Predictor, resolve_device

INPUT = [128, 128]
FILES = ["000000011813.jpg", "000000000139.jpg", "000000000802.jpg"]  # sizes differ (keep-res batches)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, reference_dir) -> Path:
    """An original-format ctdet checkpoint whose heads are calibrated to a detector's score spread.

    The first ctdet case of the end-to-end fixtures, rebuilt with their ``build_checkpoint.py``.
    """
    e2e = reference_dir / "e2e"
    cases = json.loads((e2e / "cases.json").read_text())["cases"]
    name = next(n for n, c in cases.items() if c["task"] == "ctdet" and c["num_classes"] == 80)
    spec = importlib.util.spec_from_file_location("e2e_build_checkpoint", e2e / "build_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("weights") / f"{name}.pth"
    assert module.main([str(e2e), name, str(out)]) == 0
    return out


def _detector(weights: Path) -> CenterNet:
    return CenterNet.from_checkpoint(weights, input_size=tuple(INPUT), K=20).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir, weights):
    """A checkpoint and a 3-image COCO split (annotation order = ``FILES``)."""
    folder = tmp_path_factory.mktemp("predictor")
    _detector(weights).save(folder / "model.pt")
    source = json.loads((data_dir / "coco_mini" / "annotations" / "instances_val2017.json").read_text())
    images = [next(im for im in source["images"] if im["file_name"] == name) for name in FILES]
    ids = {im["id"] for im in images}
    subset = {**source, "images": images, "annotations": [a for a in source["annotations"] if a["image_id"] in ids]}
    (folder / "annotations").mkdir()
    (folder / "annotations" / "instances_val.json").write_text(json.dumps(subset))
    (folder / "val").mkdir()
    for name in FILES:
        (folder / "val" / name).symlink_to(data_dir / "coco_mini" / "val2017" / name)
    return SimpleNamespace(folder=folder, weights=folder / "model.pt", json=folder / "annotations" / "instances_val.json",
                           images=[folder / "val" / name for name in FILES], ids=[im["id"] for im in images])


OPTIONS = ["test.flip=true", "test.scales=[0.75, 1.0]", "test.K=20", f"data.input_size={INPUT}", "test.device=cpu"]


def _by_image(rows: list[dict]) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    for r in rows:
        out.setdefault(int(r["image_id"]), []).append((r["category_id"], r["score"], *r["bbox"]))
    return {k: sorted(v) for k, v in out.items()}


def test_val_predict_api_and_training_validation_agree(setup, tmp_path):
    # centernet val
    val_json = tmp_path / "val.json"
    assert main(["val", f"data.source={setup.json}", *OPTIONS, "--weights", str(setup.weights), "--save-json", str(val_json)]) == 0
    val_rows = _by_image(json.loads(val_json.read_text()))
    assert sorted(val_rows) == sorted(setup.ids) and all(len(rows) == 40 for rows in val_rows.values())  # 2 scales x K

    # centernet predict (JSON lines, image_id = position in the source)
    out = tmp_path / "predicted"
    assert main(["predict", *OPTIONS, "--weights", str(setup.weights), "--source", str(setup.images[0].parent / "*.jpg"),
                 "--output", str(out), "--conf", "0"]) == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_file = {Path(line["file"]).name: line["detections"] for line in lines}
    for name, image_id in zip(FILES, setup.ids):
        rows = [{**r, "image_id": image_id} for r in by_file[name]]
        assert _by_image(rows)[image_id] == val_rows[image_id], f"predict differs from val on {name}"

    # Python API: centernet.predict (lazy) and centernet.evaluate
    api = centernet.predict(setup.weights, setup.images[0], *OPTIONS)
    assert not isinstance(api, list)
    (result,) = list(api)
    from centernet.tasks.registry import get_task

    rows = get_task("ctdet", 80).coco_rows(result, setup.ids[0], load_dataset(setup.json).category_ids)
    assert _by_image(rows)[setup.ids[0]] == val_rows[setup.ids[0]]
    report = centernet.evaluate(setup.weights, None, f"data.source={setup.json}", *OPTIONS)
    assert _by_image(report.detections) == val_rows

    # The validation pass of training (the trainer's evaluate_network), from the same experiment
    cfg = Config.from_dict({"data": {"source": str(setup.json), "input_size": INPUT},
                            "test": {"flip": True, "scales": [0.75, 1.0], "K": 20}})
    detector = CenterNet.from_checkpoint(setup.weights)
    data = load_dataset(setup.json)
    training = evaluate_network(detector, SimpleNamespace(data=data), cfg)
    assert _by_image(training.detections) == val_rows


def test_detector_detect_is_the_predictor(setup):
    """``CenterNet.detect`` (tensors in, tensors out) = the predictor on the 8-bit images."""
    detector = CenterNet.from_checkpoint(setup.weights, flip_test=True, K=20).eval()
    bgr = [load_image(p) for p in setup.images]
    rgb = [torch.from_numpy(im[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255 for im in bgr]
    found = detector.detect(rgb)
    expected = Predictor.for_detector(detector).detect(bgr)
    for got, want in zip(found, expected):
        np.testing.assert_array_equal(got["boxes"].numpy(), want.boxes)
        np.testing.assert_array_equal(got["scores"].numpy(), want.scores)
        np.testing.assert_array_equal(got["labels"].numpy(), want.labels)


def test_keep_res_images_of_different_sizes_never_share_a_canvas(setup, weights):
    detector = _detector(weights)
    spec = dataclasses.replace(detector.spec, input_hw=None)
    bgr = [cv2.resize(load_image(p), None, fx=0.5, fy=0.5) for p in setup.images]  # 3 sizes, small
    together = Predictor(detector.network, detector.task, spec, detector.class_names, K=20, batch_size=3).detect(bgr)
    alone = [Predictor(detector.network, detector.task, spec, detector.class_names, K=20).detect([im])[0] for im in bgr]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


# Each test.* field, a value that must change the detections of the baseline TestConfig().
VARIANTS = {
    "K": {"K": 5},
    "score_thresh": {"score_thresh": None},  # the median score of the baseline
    "flip": {"flip": True},
    "scales": {"scales": [0.75]},
    "nms": {"nms": True},
    "precision": {"precision": "bfloat16"},
    "device": {"device": "cuda"},
    "compile": {"compile": True},  # the same detections: tests/test_device_paths.py, tests/test_cuda.py
    "channels_last": {"channels_last": True},  # the same detections within float rounding, NHWC network
    "threads": {"threads": 1},  # the same detections, on one thread
}


def test_every_test_field_changes_the_output(data_dir, weights):
    assert set(VARIANTS) == {f.name for f in dataclasses.fields(config_module.TestConfig)}, "a test.* field without a check"
    detector = _detector(weights)
    spec = InputSpec(input_hw=tuple(INPUT))
    image = load_image(data_dir / "coco_mini" / "val2017" / FILES[0])

    def run(**changes):
        test = dataclasses.replace(config_module.TestConfig(device="cpu"), **changes)
        (result,) = Predictor.from_config(detector.network, detector.task, spec, detector.class_names, None, test).detect([image])
        return result

    base = run()
    median = float(np.median(base.scores))
    assert len(base) == 100 and base.scores.max() > median > base.scores.min()
    for field, change in VARIANTS.items():
        change = {field: median} if field == "score_thresh" else change
        if field == "compile":  # read, and compiled lazily (equality to eager is tested on a small network)
            test = dataclasses.replace(config_module.TestConfig(device="cpu"), **change)
            predictor = Predictor.from_config(detector.network, detector.task, spec, detector.class_names, None, test)
            assert predictor.compiled and isinstance(predictor.network, torch._dynamo.eval_frame.OptimizedModule)
            continue
        if field in ("channels_last", "threads"):  # read and applied; the detections stay (within float rounding)
            test = dataclasses.replace(config_module.TestConfig(device="cpu"), **change)
            network, threads = copy.deepcopy(detector.network), torch.get_num_threads()
            predictor = Predictor.from_config(network, detector.task, spec, detector.class_names, None, test)
            try:
                (other,) = predictor.detect([image])
                used = torch.get_num_threads()
            finally:
                torch.set_num_threads(threads)
            np.testing.assert_allclose(other.scores, base.scores, atol=1e-4)
            np.testing.assert_allclose(other.boxes, base.boxes, atol=1e-2)
            if field == "channels_last":
                kernels = [p for p in network.parameters() if p.dim() == 4 and p.shape[-1] > 1]
                assert predictor.channels_last and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
            else:
                assert predictor.threads.choice.threads == used == 1
            continue
        if field == "device" and not torch.cuda.is_available():
            with pytest.raises(ValueError, match="no CUDA GPU"):
                run(**change)
            continue
        other = run(**change)
        same = len(other) == len(base) and np.array_equal(other.scores, base.scores) and np.array_equal(other.boxes, base.boxes)
        if field == "device":  # on a GPU: the same detections within float noise
            np.testing.assert_allclose(other.scores, base.scores, atol=1e-4)
            continue
        assert not same, f"test.{field}={change[field]} did not change the detections"
    assert len(run(K=5)) == 5 and run(score_thresh=median).scores.min() >= median
    # K above 100: the original's cut keeps the 100 best rows per image (all of them tied at the cut).
    many = run(K=150)
    assert len(many) >= 100 and np.sum(many.scores >= np.sort(many.scores)[-100]) == len(many)


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")


def test_cuda_without_a_gpu_is_one_clear_error_line(setup, capsys):
    code = main(["val", f"data.source={setup.json}", "--weights", str(setup.weights), "--device", "cuda"])
    if torch.cuda.is_available():
        assert code == 0
        return
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]


def test_predict_writes_each_image_as_made_and_counts_skipped_files(setup, tmp_path, monkeypatch):
    from centernet.engine import predict as predict_module

    folder = tmp_path / "images"
    folder.mkdir()
    for p in setup.images[:2]:
        (folder / p.name).symlink_to(p)
    (folder / "broken.jpg").write_bytes(b"not an image")
    summary = predict_module.predict_to_folder(setup.weights, folder, tmp_path / "out", overrides=OPTIONS[2:])
    assert summary.images == 2 and [Path(p).name for p, _ in summary.skipped] == ["broken.jpg"]
    assert "1 files skipped" in str(summary)
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2

    # Interrupted after the first image: its line is already on disk.
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(predict_module, "_write_outputs", fail_second)
    with pytest.raises(KeyboardInterrupt):
        predict_module.predict_to_folder(setup.weights, folder, tmp_path / "cut", overrides=OPTIONS[2:])
    lines = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["detections"]  # both images detected, both lines flushed


def test_channels_last_auto_is_the_architectures_default_and_exact():
    """``test.channels_last: auto`` takes the registered default (dlav0_34 on, res_18 off); the NHWC
    network's maps equal the NCHW network's within 1e-4."""
    from centernet.models import build_model
    from centernet.tasks.registry import get_task

    image = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    for arch, expected in (("dlav0_34", True), ("res_18", False)):
        torch.manual_seed(0)
        network = build_model(arch, {"hm": 3, "wh": 2, "reg": 2}, head_conv=16).eval()
        assert network.prefers_channels_last is expected

        def predictor(net, setting):
            return Predictor(net, get_task("ctdet", 3), InputSpec(input_hw=(64, 64)), ["a", "b", "c"], device="cpu",
                             channels_last=setting, threads=1)

        auto, nchw, nhwc = predictor(copy.deepcopy(network), "auto"), predictor(network, False), predictor(copy.deepcopy(network), True)
        assert (auto.channels_last, nchw.channels_last, nhwc.channels_last) == (expected, False, True)
        inputs = nchw.network_inputs([nchw.spec.warped_input(image, 1.0)[0]])
        want, got = nchw.forward(inputs), nhwc.forward(inputs)
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=0)
        a, b = nhwc.detect([image])[0], nchw.detect([image])[0]
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    with pytest.raises(ValueError, match="test.channels_last"):
        predictor(network, "yes")
