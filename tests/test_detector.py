"""The ``CenterNet`` detector object: torchvision-style train/eval contract, checkpoints, pre-processing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from centernet.data.transforms import InputSpec
from centernet.models.detector import CenterNet
from centernet.tasks.registry import get_task

INPUT = (96, 96)


def make_detector(**kwargs) -> CenterNet:
    torch.manual_seed(0)
    options = {"arch": "res_18", "num_classes": 3, "input_size": INPUT, **kwargs}
    return CenterNet(**options)


def random_image(height: int, width: int, seed: int) -> torch.Tensor:
    """An 8-bit image as a float RGB tensor in 0..1 (what torchvision's ``to_tensor`` gives)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=generator).float() / 255


@pytest.fixture(scope="module")
def detector() -> CenterNet:
    return make_detector().eval()


def test_eval_contract_with_images_of_different_sizes(detector) -> None:
    images = [random_image(90, 150, 0), random_image(200, 120, 1), random_image(64, 64, 2)]
    results = detector(images)
    assert len(results) == 3
    for result, image in zip(results, images):
        assert set(result) == {"boxes", "scores", "labels"}
        n = len(result["scores"])
        assert n == detector.K  # score_thresh 0 keeps all K, as the original's evaluation
        assert result["boxes"].shape == (n, 4) and result["boxes"].dtype == torch.float32
        assert result["labels"].dtype == torch.int64
        assert ((result["labels"] >= 0) & (result["labels"] < 3)).all()
        assert (result["scores"][:-1] >= result["scores"][1:]).all()  # by decreasing score
        assert torch.isfinite(result["boxes"]).all()
        # Box centres lie on the letterboxed image (possibly in its black border), in image pixels.
        centres = (result["boxes"][:, :2] + result["boxes"][:, 2:]) / 2
        side = max(image.shape[1:])
        assert (centres > -side).all() and (centres < 2 * side).all()


def test_each_image_is_processed_as_if_alone(detector) -> None:
    images = [random_image(90, 150, 0), random_image(200, 120, 1)]
    batched = detector(images)
    alone = detector(images[1:])
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(batched[1][key], alone[0][key], rtol=1e-4, atol=1e-3)


# The original's COCO statistics, per channel in BGR order (its ctdet dataset's mean / std, float32).
ORIGINAL_MEAN_BGR = np.array([0.40789654, 0.44719302, 0.47026115], dtype=np.float32)
ORIGINAL_STD_BGR = np.array([0.28863828, 0.27408164, 0.27809835], dtype=np.float32)


def original_preprocess(bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """The original detector's test-time input at scale 1, written out here independently of the package.

    Its ``pre_process``: centre ``c = (w / 2, h / 2)`` and window ``s = max(h, w)``; the affine
    transform maps the points c, c + (0, -s/2) and c + (-s/2, -s/2) (float32) onto the input's
    centre, centre + (0, -W/2) and centre + (-W/2, -W/2); ``cv2.warpAffine`` bilinear with a black
    border; then ``(img / 255 - mean) / std`` in float64, cast to float32, HWC -> CHW.
    """
    height, width = bgr.shape[:2]
    inp_h, inp_w = input_hw
    c = np.array([width / 2.0, height / 2.0], dtype=np.float32)
    s = np.float32(max(height, width))
    src = np.array([c, c + [0, -s / 2], c + [-s / 2, -s / 2]], dtype=np.float32)
    centre = np.array([inp_w / 2.0, inp_h / 2.0], dtype=np.float32)
    dst = np.array([centre, centre + [0, -inp_w / 2], centre + [-inp_w / 2, -inp_w / 2]], dtype=np.float32)
    trans = cv2.getAffineTransform(src, dst)
    warped = cv2.warpAffine(bgr, trans, (inp_w, inp_h), flags=cv2.INTER_LINEAR)
    normalised = ((warped / 255.0 - ORIGINAL_MEAN_BGR) / ORIGINAL_STD_BGR).astype(np.float32)
    return normalised.transpose(2, 0, 1), c, float(s)


def test_cv2_preprocessing_is_the_originals(detector) -> None:
    for image in (random_image(91, 151, 3), random_image(150, 93, 4), random_image(96, 96, 5)):  # odd sides: half-pixel centres
        inputs, metas = detector.preprocess([image])
        # The 8-bit BGR image the float RGB tensor stands for (its values are exact multiples of 1/255).
        bgr = np.ascontiguousarray((image.numpy() * 255).round().astype(np.uint8)[::-1].transpose(1, 2, 0))
        expected, center, window = original_preprocess(bgr, INPUT)
        np.testing.assert_array_equal(inputs[0].numpy(), expected)
        np.testing.assert_array_equal(metas[0].center, center)
        assert metas[0].scale == window


def test_torch_warp_is_close_to_cv2() -> None:
    images = [random_image(90, 150, 4), random_image(130, 70, 5)]
    for keep_res in (False, True):
        reference, _ = make_detector(keep_res=keep_res).preprocess(images)
        batched, _ = make_detector(keep_res=keep_res, warp="torch").preprocess(images)
        assert batched.shape == reference.shape
        # 8-bit fixed-point bilinear (cv2) vs float bilinear: about one grey level apart.
        assert (batched - reference).abs().max() < 2.5 / 255 / min(InputSpec().std)
        assert (batched - reference).abs().mean() < 0.5 / 255 / min(InputSpec().std)


def test_keep_res_batch_shares_one_canvas() -> None:
    detector = make_detector(keep_res=True).eval()
    images = [random_image(70, 100, 6), random_image(40, 150, 7)]
    inputs, metas = detector.preprocess(images)
    assert inputs.shape == (2, 3, 96, 160)
    assert [m.image_hw for m in metas] == [(70, 100), (40, 150)]
    single = InputSpec(input_hw=None).meta(70, 100)
    alone = detector.preprocess(images[:1])[1][0]
    assert alone.input_hw == single.input_hw and np.array_equal(alone.scale, single.scale)
    results = detector(images)
    assert [len(r["boxes"]) for r in results] == [detector.K, detector.K]


def test_score_threshold_and_empty_results() -> None:
    detector = make_detector(score_thresh=0.3).eval()
    with torch.no_grad():
        detector.network.hm[-1].bias.fill_(-10.0)  # a network that is sure there is nothing
    results = detector([random_image(80, 80, 8), torch.zeros(3, 50, 70)])
    for result in results:
        assert result["boxes"].shape == (0, 4) and result["scores"].shape == (0,) and result["labels"].shape == (0,)


def test_flip_test_runs_and_keeps_the_contract() -> None:
    detector = make_detector(flip_test=True).eval()
    results = detector([random_image(90, 150, 9), random_image(60, 60, 10)])
    assert [len(r["scores"]) for r in results] == [detector.K, detector.K]


def test_train_contract() -> None:
    detector = make_detector().train()
    images = [random_image(90, 150, 11), random_image(120, 100, 12)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [0.0, 0.0, 150.0, 90.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # no object
    ]
    losses = detector(images, targets)
    assert set(losses) == {"hm_loss", "wh_loss", "off_loss"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in detector.network.hm.parameters())
    with pytest.raises(ValueError, match="targets"):
        detector(images)


def test_losses_match_the_task_on_the_same_batch() -> None:
    detector = make_detector().train()
    images = [random_image(90, 150, 13)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([1])}]
    losses = detector(images, targets)
    inputs, metas = detector.preprocess(images)
    encoded = detector.task.encode({k: v.numpy() for k, v in targets[0].items()}, metas[0])
    batch = {k: torch.from_numpy(v[None]) for k, v in encoded.items()}
    total, _ = detector.task.loss(detector.network(inputs), batch)
    torch.testing.assert_close(sum(losses.values()), total)


def test_overfits_one_image() -> None:
    detector = make_detector(num_classes=2, input_size=(64, 64)).train()
    image = torch.zeros(3, 64, 64)
    image[:, 8:36, 6:30] = torch.tensor([1.0, 0.2, 0.2]).view(3, 1, 1)
    image[:, 34:60, 36:60] = torch.tensor([0.1, 0.3, 1.0]).view(3, 1, 1)
    targets = [{"boxes": torch.tensor([[6.0, 8.0, 30.0, 36.0], [36.0, 34.0, 60.0, 60.0]]), "labels": torch.tensor([0, 1])}]
    # Only the heads learn, which keeps the test fast on a CPU (backward stops at the heads).
    heads = [p for name, p in detector.network.named_parameters() if name.split(".")[0] in detector.task.heads]
    for p in detector.network.parameters():
        p.requires_grad_(False)
    for p in heads:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(heads, lr=3e-3)
    history = []
    for _ in range(15):
        loss = sum(detector([image], targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0], history

    # Detections with the batch statistics the heads were fitted to (batch norms still in training mode).
    result = detector.detect([image])[0]
    assert set(result["labels"][:2].tolist()) == {0, 1}  # the two best detections are the two objects


def test_save_and_load_round_trip(tmp_path, detector) -> None:
    named = make_detector(class_names=["cat", "dog", "fox"], K=20, score_thresh=0.01).eval()
    path = tmp_path / "model.pt"
    named.save(path)
    loaded = CenterNet.from_checkpoint(path).eval()
    assert loaded.class_names == ["cat", "dog", "fox"] and loaded.K == 20 and loaded.score_thresh == 0.01
    assert loaded.spec == named.spec and loaded.arch == "res_18"
    image = [random_image(90, 150, 14)]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(loaded(image)[0][key], named(image)[0][key], rtol=0, atol=0)


def test_loads_an_original_checkpoint(tmp_path, detector) -> None:
    path = tmp_path / "model_last.pth"
    state = {f"module.{k}": v for k, v in detector.network.state_dict().items()}  # DataParallel prefixes
    torch.save({"epoch": 7, "state_dict": state}, path)
    loaded = CenterNet.from_checkpoint(path, input_size=INPUT).eval()
    assert loaded.task.name == "ctdet" and loaded.num_classes == 3 and loaded.arch == "res_18"
    image = [random_image(90, 150, 15)]
    torch.testing.assert_close(loaded(image)[0]["boxes"], detector(image)[0]["boxes"], rtol=0, atol=0)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="num_classes or class_names"):
        CenterNet("res_18")
    with pytest.raises(ValueError, match="class names"):
        CenterNet("res_18", num_classes=2, class_names=["a"])
    assert CenterNet("res_18", task=get_task("ctdet", 4), input_size=INPUT).num_classes == 4


def test_other_tasks_through_the_same_contract() -> None:
    pose = make_detector(task="multi_pose", num_classes=1, K=10).eval()
    result = pose([random_image(90, 150, 16)])[0]
    assert result["keypoints"].shape == (len(result["scores"]), 17, 3)

    ddd = make_detector(task="ddd", num_classes=3, K=10, input_size=(64, 192)).eval()
    image = [random_image(60, 200, 17)]
    calib = np.array([[700.0, 0.0, 100.0, 40.0], [0.0, 700.0, 30.0, 0.2], [0.0, 0.0, 1.0, 0.003]], np.float32)
    result = ddd.detect(image, calibs=[calib])[0]
    assert result["locations"].shape == (len(result["scores"]), 3)
    with pytest.raises(ValueError, match="calib"):
        ddd(image)


# ---------------------------------------------------------------- robustness at the model level
def test_an_empty_batch_gives_no_detections_and_no_losses() -> None:
    detector = make_detector().eval()
    assert detector([]) == []
    detector.train()
    with pytest.raises(ValueError, match="at least one image"):
        detector([], [])


@pytest.mark.parametrize("warp", ["cv2", "torch"])
def test_an_image_smaller_than_the_stride_is_letterboxed_like_any_other(warp) -> None:
    detector = make_detector(warp=warp).eval()
    image = random_image(3, 2, 9)  # 3 x 2 pixels, under the stride of 4
    (result,) = detector([image])
    assert result["boxes"].shape == (detector.K, 4) and torch.isfinite(result["boxes"]).all()
    centres = (result["boxes"][:, :2] + result["boxes"][:, 2:]) / 2
    assert (centres > -3).all() and (centres < 6).all()  # on the image's letterbox window, in its pixels
    detector.train()
    losses = detector([image], [{"boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0]]), "labels": torch.tensor([1])}])
    assert set(losses) == {"hm_loss", "wh_loss", "off_loss"}
    assert all(torch.isfinite(value) and value >= 0 for value in losses.values()), losses


@pytest.mark.parametrize("warp", ["cv2", "torch"])
def test_nan_or_infinite_pixels_are_refused_naming_the_image(warp) -> None:
    detector = make_detector(warp=warp).eval()
    good = random_image(40, 50, 10)
    for value in (float("nan"), float("inf"), float("-inf")):
        bad = good.clone()
        bad[1, 5, 7] = value
        with pytest.raises(ValueError, match="image 1: it holds NaN or infinite values"):
            detector([good, bad])
        detector.train()
        with pytest.raises(ValueError, match="image 1: it holds NaN or infinite values"):
            detector([good, bad], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2)
        detector.eval()
    with pytest.raises(ValueError, match=r"image 0: it has no pixels \(0x5\)"):
        detector([torch.zeros(3, 0, 5)])
