"""ctdet decoding, flip test and post-processing against the original detector (``decode/ctdet.npz``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from centernet.data.geometry import ImageMeta
from centernet.tasks.ctdet import CtdetTask
from tests.helpers import assert_close


@pytest.fixture(scope="module")
def ref(reference_dir: Path) -> np.lib.npyio.NpzFile:
    return np.load(reference_dir / "decode" / "ctdet.npz")


@pytest.fixture(scope="module")
def info(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "decode" / "decode.json").read_text())["ctdet"]


def raw_outputs(ref, prefix: str) -> dict[str, torch.Tensor]:
    return {head: torch.from_numpy(ref[f"{prefix}raw__{head}"]) for head in ("hm", "wh", "reg")}


def meta_from(ref, prefix: str) -> ImageMeta:
    """The original's meta in whatever form the fixture holds ``s``: scalar, 0-d or ``[w, h]`` (keep-res)."""
    return ImageMeta.from_original({key: ref[f"{prefix}meta__{key}"] for key in ("c", "s", "out_hw")})


def rows_by_class(results: dict[int, np.ndarray]) -> np.ndarray:
    """The fixture's layout of post-processed results: ``[x1, y1, x2, y2, score, class1]`` by class."""
    return np.concatenate(
        [np.concatenate([rows, np.full((len(rows), 1), cls, np.float32)], axis=1) for cls, rows in sorted(results.items())]
    )


def assert_dets_equal(actual: torch.Tensor, expected: np.ndarray, name: str) -> None:
    actual = actual.numpy()
    assert actual.shape == expected.shape, f"{name}: {actual.shape} != {expected.shape}"
    np.testing.assert_array_equal(actual[..., 5], expected[..., 5], err_msg=f"{name} classes")
    assert_close(actual[..., :5], expected[..., :5], name, atol=1e-5, rtol=1e-6)


def test_decode(ref, info) -> None:
    task = CtdetTask(info["num_classes"])
    outputs = raw_outputs(ref, "")
    assert ref["raw__hm"].shape[1] == info["num_classes"]
    assert_dets_equal(task.decode(outputs, K=info["K"]), ref["decode__dets"], "decode K")
    k_small = ref["decode__dets_K20"].shape[1]
    assert_dets_equal(task.decode(outputs, K=k_small), ref["decode__dets_K20"], f"decode K={k_small}")
    # Hourglass gives one output set per stack and only the last is decoded: a first stack of
    # other values (whose own detections differ from the reference) must not change the result.
    generator = torch.Generator().manual_seed(int(info["K"]))
    first = {name: torch.randn(value.shape, generator=generator, dtype=value.dtype) for name, value in outputs.items()}
    assert not np.array_equal(task.decode(first, K=info["K"]).numpy(), ref["decode__dets"])
    assert_dets_equal(task.decode([first, outputs], K=info["K"]), ref["decode__dets"], "decode, last stack")


def test_post_process(ref, info) -> None:
    task = CtdetTask(info["num_classes"])
    dets = task.decode(raw_outputs(ref, ""), K=info["K"])
    results = task.post_process(dets[0], meta_from(ref, ""))
    assert sorted(results) == list(range(1, info["num_classes"] + 1))
    rows = rows_by_class(results)
    assert rows.shape[0] == info["num_post"]
    np.testing.assert_array_equal(rows[:, 5], ref["post__dets"][:, 5])
    assert_close(rows[:, :5], ref["post__dets"][:, :5], "post", atol=1e-4, rtol=1e-6)
    # One scale, no soft-NMS, K <= 100 per image: the original's merge keeps every row.
    assert_close(rows, ref["merged__dets"], "merged", atol=1e-4, rtol=1e-6)


def test_flip(ref, info) -> None:
    flip_info = info["flip"]
    task = CtdetTask(flip_info["num_classes"])
    outputs = raw_outputs(ref, "flip__")
    assert outputs["hm"].shape[0] == 2
    dets = task.decode(outputs, K=info["K"], flip=True)
    assert_dets_equal(dets, ref["flip__decode__dets"], "flip decode")

    # The merged maps the detections came from.
    hm = outputs["hm"].sigmoid()
    assert_close((hm[0:1] + hm[1:2].flip(3)) / 2, ref["flip__merged_hm"], "flip merged hm", atol=1e-7, rtol=1e-6)
    results = task.post_process(dets[0], meta_from(ref, "flip__"))
    rows = rows_by_class(results)
    np.testing.assert_array_equal(rows[:, 5], ref["flip__post__dets"][:, 5])
    assert_close(rows[:, :5], ref["flip__post__dets"][:, :5], "flip post", atol=1e-4, rtol=1e-6)
    assert_close(rows, ref["flip__merged__dets"], "flip merged", atol=1e-4, rtol=1e-6)


def test_flip_batch_of_two_images(ref) -> None:
    """A flip batch ``[a, b, mirror(a), mirror(b)]`` decodes each image as its own pair would."""
    outputs = raw_outputs(ref, "flip__")
    task = CtdetTask(outputs["hm"].shape[1])
    single = task.decode(outputs, K=50, flip=True)
    swapped = {k: v.flip(0) for k, v in outputs.items()}  # the mirror's maps as a second "image"
    batch = {k: torch.cat([v[0:1], swapped[k][0:1], v[1:2], swapped[k][1:2]]) for k, v in outputs.items()}
    both = task.decode(batch, K=50, flip=True)
    assert both.shape == (2, 50, 6)
    torch.testing.assert_close(both[0:1], single, rtol=0, atol=0)
