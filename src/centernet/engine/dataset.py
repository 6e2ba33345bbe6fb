"""Torch side of the data flow: records -> augmented input + task targets, deterministic per (seed, epoch, index)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from centernet.config import Config, ConfigError
from centernet.data.augment import NumpyAugmentRandom, TrainAugmentation
from centernet.data.check import SYNTHETIC, load_dataset
from centernet.data.records import WHOLE_SET, DataFormatError, DetectionDataset, ImageRecord
from centernet.data.transforms import prepare_inference_input
from centernet.tasks.base import DEBUG_ONLY_KEYS, Task
from centernet.tasks.registry import task_class

logger = logging.getLogger("centernet.data")


def load_split(cfg: Config, which: str, split: str | None = None) -> DetectionDataset:
    """Read the ``"train"`` or ``"val"`` split an experiment names (``data.*``).

    A split that is not found is an error naming the splits there are (never every image in its
    place); ``all`` takes the whole source, and a warning says so, since validating on the whole
    of a training source scores the training images. ``split`` (``val --split``) replaces the
    experiment's own. A json file is itself one split: it is read whole, unless a split is asked
    for by ``split`` (then its name must say it) or ``all`` is said.
    """
    d = cfg.data
    if d.source == SYNTHETIC:
        source = SYNTHETIC
        data = load_dataset(SYNTHETIC, split or which, num_images=d.synthetic_images[which], image_size=d.synthetic_image_size)
    else:
        source = d.val_source if which == "val" and d.val_source else d.source
        configured = d.train_split if which == "train" else d.val_split
        if split is None and _is_json_file(source):
            split = configured if configured == WHOLE_SET else None  # the file is the split
        elif split is None:
            split = configured
        data = load_dataset(source, split)
    if d.max_images is not None:
        data.records = data.records[: d.max_images]
    if split == WHOLE_SET:
        logger.warning(
            "data.%s_split=all: %s uses every image of %s (%d images)%s",
            which,
            "training" if which == "train" else "validation",
            source,
            len(data.records),
            ", the training images included" if which == "val" and source == d.source else "",
        )
    return data


def _is_json_file(source: str) -> bool:
    return str(source).lower().endswith(".json") and Path(source).is_file()


def task_for(cfg: Config, num_classes: int) -> Task:
    """The experiment's task object: its ``task_options``, ``train.max_objects`` and ``train.loss_weights`` applied."""
    try:
        cls = task_class(cfg.task)
    except ValueError as err:
        raise ConfigError(f"task: {err}") from None
    return cls.from_config(num_classes, cfg.task_options, cfg.train.max_objects, cfg.train.loss_weights)


class EpochSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` pairs: a fresh permutation per epoch from ``seed + epoch``.

    Each rank takes every ``world_size``-th batch of the same permutation; incomplete final batches
    are dropped, as the original's loader does. ``skip_batches`` resumes inside an epoch.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if size < batch_size * world_size:
            raise ValueError(f"{size} training images cannot fill one batch of {batch_size} per process x {world_size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    @property
    def steps_per_epoch(self) -> int:
        """Batches in a whole epoch (per rank), before any ``skip_batches``."""
        return self.size // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        return self.steps_per_epoch - self.skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        per_step = self.batch_size * self.world_size
        for step in range(self.skip, self.steps_per_epoch):
            start = step * per_step + self.rank * self.batch_size
            yield [(self.epoch, i) for i in order[start : start + self.batch_size]]


class TrainingDataset(Dataset):
    """A data set's records turned into network inputs (and, in training, targets).

    In training ``dataset[(epoch, index)]`` returns ``input`` ``[3, H, W]`` float32 plus the task's
    target arrays: the task's own training-sample pipeline (``Task.training_sample``) draws from a
    generator seeded by ``(seed, epoch, index)``. In evaluation
    ``dataset[index]`` returns the letterboxed ``input`` and the ``index``.
    """

    def __init__(self, data: DetectionDataset, cfg: Config, train: bool) -> None:
        self.data = data
        self.cfg = cfg
        self.train = train
        self.task = task_for(cfg, len(data.class_names))
        self.augmentation = TrainAugmentation.from_config(cfg) if train else None

    @classmethod
    def from_config(cls, cfg: Config, which: str) -> TrainingDataset:
        """The ``"train"`` (augmented, with targets) or ``"val"`` data set of an experiment.

        Raises:
            DataFormatError: Validation would read the training json itself (a json file is one
                split) without ``data.val_split=all`` saying so.
        """
        d = cfg.data
        if which == "val" and not d.val_source and _is_json_file(d.source) and d.val_split != WHOLE_SET:
            raise DataFormatError(
                f"{d.source}: validation would score the training file itself (a json file is one split); "
                f"give the validation json as data.val_source=..., or say data.val_split={WHOLE_SET} "
                "to validate on the training images knowingly"
            )
        return cls(load_split(cfg, which), cfg, train=which == "train")

    @property
    def class_names(self) -> Sequence[str]:
        return self.data.class_names

    @property
    def category_ids(self) -> Sequence[int]:
        return self.data.category_ids

    @property
    def records(self) -> Sequence[ImageRecord]:
        return self.data.records

    def __len__(self) -> int:
        return len(self.data.records)

    def __getitem__(self, key) -> dict[str, np.ndarray]:
        if not self.train:
            image = self.data.load_image(int(key))
            inp, _ = prepare_inference_input(image, self.cfg)
            return {"input": inp, "index": np.int64(key)}
        epoch, index = key
        record = self.data.records[index]
        rng = NumpyAugmentRandom(np.random.default_rng([self.cfg.train.seed, epoch, index]))
        image = self.data.load_image(index)
        return self.task.training_sample(image, record.annotations(), self.augmentation, rng)


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack every fixed-size key of the samples into a batch tensor."""
    return {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in samples[0] if key not in DEBUG_ONLY_KEYS}
