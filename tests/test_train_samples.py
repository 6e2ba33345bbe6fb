"""Training samples as the data set hands them to the trainer (``TrainingDataset``), per task."""
from __future__ import annotations

import numpy as np
import pytest

from centernet.config import KITTI_MEAN, load_config
from centernet.data.augment import NumpyAugmentRandom
from centernet.data.transforms import prepare_inference_input
from centernet.engine.dataset import TrainingDataset


@pytest.fixture(scope="module")
def kitti_set(data_dir):
    # flip 1 and colour on: the 3D pipeline must ignore both, as the original's KITTI data set.
    cfg = load_config(
        None,
        [
            "task=ddd",
            f"data.source={data_dir / 'kitti_mini'}",
            "data.train_split=all",  # no ImageSets/: every frame
            "data.input_size=[96, 320]",
            "augment.flip=1.0",
            "augment.color=true",
        ],
    )
    return cfg, TrainingDataset.from_config(cfg, "train")


def test_3d_samples_turn_reg_mask_off_on_exactly_the_augmented_ones(kitti_set) -> None:
    cfg, dataset = kitti_set
    assert cfg.data.mean == list(KITTI_MEAN) and cfg.augment.aug_ddd == 0.5  # task=ddd picks the KITTI defaults
    augmented_seen = plain_seen = 0
    for epoch in (1, 2):
        for index in range(len(dataset)):
            sample = dataset[(epoch, index)]
            # The first draw of a 3D sample is the aug_ddd test.
            augmented = NumpyAugmentRandom(np.random.default_rng([cfg.train.seed, epoch, index])).random() < cfg.augment.aug_ddd
            objects = int(sample["rot_mask"].sum())
            if objects == 0:
                continue
            if augmented:
                augmented_seen += 1
                assert sample["reg_mask"].sum() == 0, f"frame {index}, epoch {epoch}: augmented but depth/size trained"
            else:
                plain_seen += 1
                np.testing.assert_array_equal(sample["reg_mask"], sample["rot_mask"])
                # Not augmented: exactly the letterboxed frame, not mirrored and not colour-jittered.
                letterbox, _ = prepare_inference_input(dataset.data.load_image(index), cfg)
                np.testing.assert_allclose(sample["input"], letterbox, atol=1e-5)
    assert augmented_seen >= 3 and plain_seen >= 3, (augmented_seen, plain_seen)


def test_3d_augmentation_shifts_by_width_and_height(kitti_set) -> None:
    """Augmented frames move by at most 2 * shift of the image's width and height, never by its longer side."""
    cfg, dataset = kitti_set
    image = dataset.data.load_image(0)
    height, width = image.shape[:2]
    task, augmentation = dataset.task, dataset.augmentation
    shifts = []
    for seed in range(40):
        meta = task.augment(image, augmentation, NumpyAugmentRandom(seed)).meta
        assert not meta.flipped and meta.rot == 0
        if meta.augmented:
            shifts.append(np.abs(meta.center - [width / 2, height / 2]) / [width, height])
        else:
            np.testing.assert_array_equal(meta.scale, [width, height])
    shifts = np.array(shifts)
    assert len(shifts) > 10
    assert (shifts <= 2 * cfg.augment.shift + 1e-9).all()
    assert shifts[:, 1].max() > cfg.augment.shift  # the y shift reaches beyond one sigma of the height


def test_pose_samples_rotate_and_mask_as_the_original(data_dir) -> None:
    """With rotation always on, every pose sample has the ignore heat map and no centre regression."""
    cfg = load_config(
        None,
        [
            "task=multi_pose",
            f"data.source={data_dir / 'coco_mini' / 'annotations' / 'person_keypoints_train2017.json'}",
            "data.train_split=train2017",
            "data.input_size=[128, 128]",
            "data.max_images=4",
            "augment.rotate=30",
            "augment.rotate_prob=1.0",
        ],
    )
    dataset = TrainingDataset.from_config(cfg, "train")
    joints = 0
    for index in range(len(dataset)):
        sample = dataset[(1, index)]
        assert (sample["hm"] == np.float32(0.9999)).all()
        assert not sample["reg_mask"].any() and not sample["hps_mask"].any()
        joints += int(sample["hp_mask"].sum())
    assert joints > 0  # the joint heat maps still train


def test_3d_recipe_and_a_bare_ddd_config_share_the_original_defaults() -> None:
    recipe = load_config("ddd_dla34_kitti")
    bare = load_config(None, ["task=ddd"])
    for cfg in (recipe, bare):
        assert cfg.data.input_size == [384, 1280] and cfg.data.mean == list(KITTI_MEAN)
        assert (cfg.augment.aug_ddd, cfg.augment.flip, cfg.augment.color) == (0.5, 0.0, False)
    assert recipe.augment == bare.augment
    assert load_config(None, ["task=ddd", "data.input_size=[320, 1024]"]).data.input_size == [320, 1024]
    assert load_config().data.input_size == [512, 512]  # 2D keeps COCO's
    pose = load_config("pose_dla34_coco")
    assert pose.augment.rotate_probability() == 0.0 and pose.task_options["hm_hp"] and pose.augment.color
