"""Architecture registry: a name maps to a tiny builder function (timm style)."""
from __future__ import annotations

from typing import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}

# Default 3x3 head width per architecture family, as the original's opts.py chose it.
# ``timm`` (``timm_<model>``, heads on the 64-channel aggregation map): 64, as for ResNets.
DEFAULT_HEAD_CONV = {"res": 64, "resdcn": 64, "dla": 256, "dlav0": 256, "hourglass": 256, "timm": 64}
TIMM_PREFIX = "timm_"


# Architectures whose CPU inference is faster in channels-last (NHWC) memory format, as
# benchmarks/RESULTS_channels_last.md measured; ``build_model`` marks their networks.
_CHANNELS_LAST: set[str] = set()


def register_model(name: str, channels_last: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(heads, head_conv) -> nn.Module`` under ``name``.

    ``channels_last``: the architecture's CPU inference is faster in NHWC memory format (the
    default of ``test.channels_last: auto``); say so only where the inference benchmark shows it.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"architecture {name!r} is registered twice")
        _BUILDERS[name] = fn
        if channels_last:
            _CHANNELS_LAST.add(name)
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return sorted(_BUILDERS)


def architecture_family(arch: str) -> str:
    """``res``, ``resdcn``, ``dla``, ``dlav0``, ``hourglass`` or ``timm``: the name without its depth
    (``timm`` for every ``timm_<model>``)."""
    if arch.startswith(TIMM_PREFIX):
        return "timm"
    return arch.rsplit("_", 1)[0] if arch != "hourglass" else "hourglass"


def prefers_channels_last(arch: str) -> bool:
    """Whether ``arch`` runs CPU inference faster in channels-last memory format (its registration says)."""
    return arch in _CHANNELS_LAST


def default_head_conv(arch: str) -> int:
    return DEFAULT_HEAD_CONV[architecture_family(arch)]


def build_model(arch: str, heads: dict[str, int], head_conv: int | None = None) -> nn.Module:
    """Build a raw CenterNet network.

    Args:
        arch: a registered name (``res_18``, ``resdcn_101``, ``dla_34``, ``dlav0_34``, ``hourglass``...).
        heads: head name -> output channels, e.g. ``{"hm": 80, "wh": 2, "reg": 2}``.
        head_conv: channels of each head's 3x3 conv; ``None`` picks the original's default
            (64 for ResNets, 256 for DLA; Hourglass-104 ignores it).

    Returns:
        A module (its ``prefers_channels_last`` attribute set from the registration) whose ``forward(x)`` with ``x`` a normalised ``[B, 3, H, W]`` tensor returns the
        raw (pre-sigmoid) head maps at stride 4: a dict name -> ``[B, C, H/4, W/4]``, or for
        Hourglass a list with one such dict per stack.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(list_models())}")
    if head_conv is None:
        head_conv = default_head_conv(arch)
    network = _BUILDERS[arch](heads=dict(heads), head_conv=head_conv)
    # Read by the Predictor for ``test.channels_last: auto`` (a network knows its architecture's default).
    network.prefers_channels_last = prefers_channels_last(arch)
    return network
