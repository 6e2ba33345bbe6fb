"""Checkpoints: the original CenterNet ``.pth`` files, and this project's own self-describing format.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint can never run code.

Original checkpoints (``model_last.pth``, the released ``ctdet_coco_dla_2x.pth``...) are
``{"epoch", "state_dict", "optimizer"}`` or a bare state dict, possibly legacy (pre-zip) pickles
and with ``module.`` prefixes from ``DataParallel``. :func:`load_original_checkpoint` infers the
architecture, heads and class count from the keys and returns a ready network.

The project's format is a plain dict written atomically by :func:`save_checkpoint`: ``arch``,
``heads``, ``head_conv``, class names, input size, mean/std, channel order, ``state_dict`` and
optionally optimizer / scheduler / epoch / RNG states. Only tensors, numbers, strings, booleans,
``None``, lists, tuples and dicts are allowed, so that ``weights_only`` loading always works.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from centernet.models.registry import architecture_family, build_model, list_models

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointWriteError",
    "infer_arch",
    "load_checkpoint",
    "load_original_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 1
#: Versions :func:`load_checkpoint` reads; any other value (a newer file, a hand-edited one) is refused.
SUPPORTED_FORMAT_VERSIONS: tuple[int, ...] = (1,)
_MISMATCH_SHOWN = 5  # keys listed per kind in an error message
# Released DLA checkpoints carry the backbone's ImageNet classifier, which the detector never builds.
IMAGENET_CLASSIFIER = "base.fc."


class CheckpointError(RuntimeError):
    """A file is not a readable checkpoint, or does not fit the network it should describe."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`load_original_checkpoint` read and inferred.

    Attributes:
        path: the checkpoint file.
        arch: registered architecture name, e.g. ``"res_18"``, ``"dla_34"``, ``"hourglass"``.
        heads: head name -> output channels, in checkpoint key order.
        head_conv: channels of each head's 3x3 conv (0 when heads are a single 1x1 conv).
        num_classes: channels of the ``hm`` head, or ``None`` without one.
        epoch: training epoch stored by the original trainer, ``None`` for a bare state dict.
        dropped_keys: checkpoint entries the network has no use for (``base.fc.*``).
    """

    path: Path
    arch: str
    heads: dict[str, int]
    head_conv: int
    num_classes: int | None
    epoch: int | None
    dropped_keys: tuple[str, ...] = field(default=())


def _torch_load(path: str | PathLike[str]) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except IsADirectoryError as exc:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file") from exc
    except PermissionError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint (permission denied)") from exc
    except Exception as exc:  # torch raises pickle, zip, EOF and runtime errors for damaged files
        if str(path).lower().endswith(".onnx"):
            raise CheckpointError(
                f"{path}: an ONNX model, not a PyTorch checkpoint: val, predict and training read the .pt "
                "(or original .pth) it was exported from; run the ONNX file with "
                "centernet.export.onnx.OnnxDetector(path).predict(images)"
            ) from exc
        raise CheckpointError(f"{path}: {_load_failure(str(exc), type(exc).__name__)}") from exc


def _load_failure(text: str, kind: str) -> str:
    """Why ``torch.load`` refused a file, without torch's advice to retry with ``weights_only=False``
    (which would run whatever code the file holds)."""
    if "weights only load failed" in text.lower():
        blocked = re.search(r"GLOBAL ([\w.]+)", text)
        if blocked:
            return (
                f"refused: it holds pickled Python objects ({blocked.group(1)}) other than tensors and plain "
                "data, and loading those could run code; only data-only checkpoints are read"
            )
        reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        detail = reason.group(1).strip() if reason else "not a pickle of tensors and plain data"
        return f"not a readable PyTorch checkpoint (damaged, truncated or another kind of file: {detail})"
    lines = text.strip().splitlines()
    detail = lines[0][:200] if lines else "no detail"
    return f"not a readable PyTorch checkpoint (damaged, truncated or another kind of file: {kind}: {detail})"


def _check_format_version(payload: Mapping[str, Any], path: str | PathLike[str]) -> None:
    """Refuses a project checkpoint of a format version this code does not know."""
    version = payload.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is not supported "
            f"(this code reads version{'s' if len(SUPPORTED_FORMAT_VERSIONS) > 1 else ''} "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); its metadata (classes, input size...) "
            "cannot be trusted"
        )


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel prefixes every key with "module."; the original strips it the same way.
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _unwrap_state_dict(payload: Any, path: str | PathLike[str]) -> dict[str, torch.Tensor]:
    if isinstance(payload, Mapping) and ("format_version" in payload or payload.get("format") == "centernet"):
        # One of ours: its version decides, whichever reader is asked (the original checkpoints have none).
        _check_format_version(payload, path)
    state_dict = payload.get("state_dict") if isinstance(payload, Mapping) and "state_dict" in payload else payload
    if not _is_state_dict(state_dict):
        raise CheckpointError(
            f"{path}: no model weights found; expected a state dict (name -> tensor) "
            "or a dict holding one under 'state_dict'"
        )
    return _strip_module_prefix(state_dict)


def read_state_dict(path: str | PathLike[str]) -> dict[str, torch.Tensor]:
    """Weights of a ``.pth`` file: a bare state dict or the one under ``"state_dict"``.

    ``module.`` prefixes are stripped. Raises :class:`CheckpointError` naming the file when it is not
    a checkpoint.
    """
    return _unwrap_state_dict(_torch_load(path), path)


def _top_level(key: str) -> str:
    return key.split(".", 1)[0]


def _backbone_keys(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``arch`` without heads, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = build_model(arch, {})
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _fits_backbone(arch: str, state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the checkpoint holds exactly ``arch``'s backbone keys and shapes (``base.fc.*`` aside)."""
    backbone = {k: shape for k, shape in _backbone_keys(arch).items() if not k.startswith(IMAGENET_CLASSIFIER)}
    modules = {_top_level(k) for k in backbone}
    present = {
        k: tuple(v.shape) for k, v in state_dict.items() if _top_level(k) in modules and not k.startswith(IMAGENET_CLASSIFIER)
    }
    return present == backbone


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Registered architecture of an original state dict (``module.`` prefixes already stripped).

    ResNets are told apart by block type and block counts (depth = 2 or 3 convs per block x blocks + 2)
    and by deformable convs in the neck; DLA-34 (``pose_dla_dcn``) from DLAv0 by its deformable
    convs; Hourglass by its ``pre`` / ``kps`` modules; ``timm_<model>`` by its ``backbone`` / ``neck``
    modules. Among several registered variants of a family
    the one whose backbone keys and shapes match is chosen.

    Raises:
        CheckpointError: no registered architecture fits.
    """
    keys = set(state_dict)
    deformable = any("conv_offset_mask" in k for k in keys)
    # ``kind`` is a registered name (``res_18``) or a family prefix (``dla`` for ``dla_34``...).
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("neck.") for k in keys):
        kind = "timm"  # a timm_<model> network's state dict: the preset is the one whose backbone fits
    elif any(k.startswith("pre.") for k in keys) and any(k.startswith("kps.") for k in keys):
        kind = "hourglass"
    elif "layer1.0.conv1.weight" in keys:
        convs_per_block = 3 if "layer1.0.conv3.weight" in keys else 2
        num_blocks = len({m.group(1, 2) for k in keys if (m := re.match(r"layer([1-4])\.(\d+)\.", k))})
        kind = f"{'resdcn' if deformable else 'res'}_{convs_per_block * num_blocks + 2}"
    elif any(k.startswith("base.") for k in keys):
        kind = "dla" if deformable else "dlav0"
    else:
        raise CheckpointError("cannot infer the architecture from the checkpoint keys")
    registered = [name for name in list_models() if kind in (name, architecture_family(name))]
    if len(registered) > 1:
        registered = [name for name in registered if _fits_backbone(name, state_dict)]
    if len(registered) != 1:
        raise CheckpointError(f"the checkpoint keys look like a {kind} network, but no registered architecture fits")
    return registered[0]


def _heads_outside(state_dict: Mapping[str, torch.Tensor], backbone_modules: set[str]) -> tuple[dict[str, int], int]:
    conv_weights: dict[str, list[torch.Tensor]] = {}
    for key, value in state_dict.items():
        name = _top_level(key)
        if name not in backbone_modules and key.endswith(".weight") and value.ndim == 4:
            conv_weights.setdefault(name, []).append(value)
    heads = {name: int(weights[-1].shape[0]) for name, weights in conv_weights.items()}
    first_head = next(iter(conv_weights.values()), [])
    head_conv = int(first_head[0].shape[0]) if len(first_head) > 1 else 0
    return heads, head_conv


def _describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return None
    parts = [
        f"{label} ({len(items)}): {', '.join(items[:_MISMATCH_SHOWN])}{', ...' if len(items) > _MISMATCH_SHOWN else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if items
    ]
    return "; ".join(parts)


def load_original_checkpoint(
    path: str | PathLike[str], arch: str | None = None, heads: dict[str, int] | None = None
) -> tuple[nn.Module, CheckpointInfo]:
    """Build the network an original CenterNet checkpoint describes and load it with ``strict=True``.

    Args:
        path: ``.pth`` file: ``{"epoch", "state_dict", "optimizer"}`` or a bare state dict, zip or
            legacy format, ``module.`` prefixes allowed.
        arch: registered architecture; inferred from the keys when ``None``.
        heads: head name -> channels; inferred from the keys when ``None``.

    Returns:
        The network in eval mode, on the CPU, and what was inferred.

    Raises:
        CheckpointError: the file is not a checkpoint, or does not fit the network (the message names
            the file and lists missing, unexpected and shape-mismatched keys).
    """
    payload = _torch_load(path)
    state_dict = _unwrap_state_dict(payload, path)
    try:
        arch = arch or infer_arch(state_dict)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    backbone_keys = _backbone_keys(arch)
    dropped = tuple(k for k in state_dict if k.startswith(IMAGENET_CLASSIFIER) and k not in backbone_keys)
    state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    inferred_heads, head_conv = _heads_outside(state_dict, {_top_level(k) for k in backbone_keys})
    heads = dict(heads) if heads is not None else inferred_heads
    model = build_model(arch, heads, head_conv)
    problem = _describe_mismatch(model, state_dict)
    if problem:
        raise CheckpointError(f"{path}: checkpoint does not fit {arch} with heads {heads}: {problem}")
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    epoch = payload.get("epoch") if isinstance(payload, Mapping) and "state_dict" in payload else None
    info = CheckpointInfo(
        path=Path(path),
        arch=arch,
        heads=heads,
        head_conv=head_conv,
        num_classes=heads.get("hm"),
        epoch=int(epoch) if isinstance(epoch, (int, float)) else None,
        dropped_keys=dropped,
    )
    return model, info


_PLAIN_TYPES = (torch.Tensor, str, bytes, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` at the first entry ``weights_only`` loading could not read back."""
    if isinstance(value, _PLAIN_TYPES):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}[{key!r}] must be a str or int, not {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
    else:
        raise TypeError(
            f"checkpoint entry {where} is a {type(value).__name__}; only tensors, numbers, strings, "
            "None, lists, tuples and dicts can be saved"
        )


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, file-size limit, read-only folder...); the
    previous file, if any, is intact. ``errno`` is the system's; ``filename`` the target."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class _RecordingWriter(io.RawIOBase):
    """A file for ``torch.save`` that keeps the system error of a failed write: torch itself reports
    one as an unrelated ``RuntimeError`` (``unexpected pos ...``)."""

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream, self.error = stream, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.stream.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.stream.flush()


def _write_failure(target: Path, err: BaseException) -> CheckpointWriteError:
    code = getattr(err, "errno", None)
    reason = os.strerror(code) if code else f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else 'no detail'}"
    failure = CheckpointWriteError(code or 0, f"{target}: cannot write the checkpoint ({reason})")
    failure.filename = str(target)
    return failure


def save_checkpoint(path: str | PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a temporary file in the same folder, fsync, then ``os.replace``.

    A crash or a failed write leaves the previous file intact. ``format_version`` is set to
    :data:`CHECKPOINT_FORMAT_VERSION` unless the payload already carries one.

    Raises:
        TypeError: the payload holds something ``weights_only`` loading could not read back.
        CheckpointWriteError: the file could not be written (an ``OSError`` naming the file and the
            system's reason: no space left, file too large, permission denied...).
    """
    payload = {"format_version": CHECKPOINT_FORMAT_VERSION, **payload}
    _check_plain(payload, "payload")
    target = Path(path)
    temp_name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as stream:
            # mkstemp makes the file private (0600); a checkpoint gets a plain file's permissions.
            os.fchmod(stream.fileno(), 0o666 & ~_umask())
            writer = _RecordingWriter(stream)
            try:
                torch.save(payload, writer)
            except RuntimeError as err:
                raise (writer.error or err) from err
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException as err:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, CheckpointWriteError):
            raise _write_failure(target, err) from err
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, onto the CPU).

    Raises:
        CheckpointError: the file is unreadable, not a dict, or of a format version not in
            :data:`SUPPORTED_FORMAT_VERSIONS`.
    """
    payload = _torch_load(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(payload).__name__}")
    _check_format_version(payload, path)
    return payload
