"""Deformable convolution on the CPU: torchvision's kernel against ``deform_conv2d_gather``.

One command, one table::

    python benchmarks/bench_dcn.py                              # dla_34 vs dlav0_34 at 512
    python benchmarks/bench_dcn.py --arch resdcn_18             # resdcn_18 vs res_18
    python benchmarks/bench_dcn.py --output benchmarks/RESULTS_dcn.md

Two comparisons, eager, float32, batch 1, under ``torch.no_grad``:

* one layer: a ``--channels``-channel 3x3 modulated deformable convolution at ``--layer-size``
  (torchvision's op, the gather path, and a plain 3x3 ``Conv2d`` of the same shape for scale);
* the whole network at ``--size``: the deformable network with each implementation, and the same
  network without deformable convolutions (``dla_34`` -> ``dlav0_34``, ``resdcn_N`` -> ``res_N``);
  both networks again in channels_last memory format (a variant: the headline ratio is NCHW
  against NCHW, the eager default).

All weights are random; each ``conv_offset_mask`` gets small random weights and biases, so the
offsets are non-zero, fractional and differ per pixel (zero offsets would sample the grid exactly
and flatter any implementation that special-cased them). Variants run interleaved (one run of
each per round) and the table gives medians over ``--repeats`` rounds after ``--warmup`` rounds;
the 1-minute load average is read before every round and its range printed, since on a shared
machine absolute times move with the load and only ratios within one run are comparable. The
largest output difference between the two implementations is printed beside the times.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from centernet.models import build_model
from centernet.models.dcn import DeformConv, dcn_implementation, deform_conv2d_gather

HEADS = {"hm": 80, "wh": 2, "reg": 2}


def plain_counterpart(arch: str) -> str:
    """The registered network that is ``arch`` without deformable convolutions."""
    if arch == "dla_34":
        return "dlav0_34"
    if arch.startswith("resdcn_"):
        return "res_" + arch.removeprefix("resdcn_")
    raise SystemExit(f"error: --arch {arch}: no deformable network with a plain counterpart (dla_34, resdcn_N)")


def load_average() -> float:
    """The 1-minute load average (Linux ``/proc/loadavg``; NaN elsewhere)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def randomize_offsets(network: nn.Module, generator: torch.Generator) -> None:
    """Small random ``conv_offset_mask`` weights: non-zero offsets that vary per pixel."""
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, DeformConv):
                conv = module.conv_offset_mask
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / fan_in)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))


def interleaved_medians(
    variants: dict[str, Callable[[], object]], warmup: int, repeats: int, loads: list[float]
) -> dict[str, float]:
    """Median seconds per variant; one call of every variant per round, the load read per round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(warmup + repeats):
        loads.append(load_average())
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def layer_rows(args: argparse.Namespace, loads: list[float]) -> tuple[list[tuple[str, float]], float]:
    generator = torch.Generator().manual_seed(0)
    c, s = args.channels, args.layer_size
    x = torch.randn(1, c, s, s, generator=generator)
    offset = torch.randn(1, 18, s, s, generator=generator)
    mask = torch.rand(1, 9, s, s, generator=generator)
    weight = torch.randn(c, c, 3, 3, generator=generator) / (3 * c**0.5)
    bias = torch.randn(c, generator=generator)
    conv = nn.Conv2d(c, c, 3, padding=1)
    variants = {
        "torchvision deform_conv2d": lambda: deform_conv2d(x, offset, weight, bias, padding=1, mask=mask),
        "gather (centernet)": lambda: deform_conv2d_gather(x, offset, weight, bias, padding=1, mask=mask),
        "plain Conv2d 3x3": lambda: conv(x),
    }
    with torch.no_grad():
        diff = (variants["torchvision deform_conv2d"]() - variants["gather (centernet)"]()).abs().max().item()
        medians = interleaved_medians(variants, args.warmup, args.repeats, loads)
    return list(medians.items()), diff


def network_rows(args: argparse.Namespace, loads: list[float]) -> tuple[list[tuple[str, float]], float, str]:
    plain_arch = plain_counterpart(args.arch)
    torch.manual_seed(0)
    deformable = build_model(args.arch, HEADS, head_conv=None).eval()
    plain = build_model(plain_arch, HEADS, head_conv=None).eval()
    randomize_offsets(deformable, torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(2))

    def with_implementation(name: str) -> Callable[[], object]:
        def run() -> object:
            with dcn_implementation(name):
                return deformable(x)

        return run

    # The same weights in channels-last memory (NHWC): the gather's table is then a pad of a
    # contiguous view and its output keeps that layout; plain convolutions gain as well.
    deformable_nhwc = copy.deepcopy(deformable).to(memory_format=torch.channels_last)
    plain_nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)

    def nhwc_gather() -> object:
        with dcn_implementation("gather"):
            return deformable_nhwc(x_nhwc)

    variants = {
        f"{args.arch}, torchvision DCN": with_implementation("torchvision"),
        f"{args.arch}, gather DCN": with_implementation("gather"),
        f"{plain_arch} (no DCN)": lambda: plain(x),
        f"{args.arch}, gather DCN, channels_last": nhwc_gather,
        f"{plain_arch} (no DCN), channels_last": lambda: plain_nhwc(x_nhwc),
    }
    with torch.no_grad():
        reference, fast = variants[f"{args.arch}, torchvision DCN"](), variants[f"{args.arch}, gather DCN"]()
        diff = max((reference[k] - fast[k]).abs().max().item() for k in reference)
        medians = interleaved_medians(variants, args.warmup, args.repeats, loads)
    return list(medians.items()), diff, plain_arch


def table(rows: list[tuple[str, float]], baseline: float, baseline_name: str) -> list[str]:
    lines = [f"| variant | median ms | / {baseline_name} |", "|---|---|---|"]
    lines += [f"| {name} | {seconds * 1000:.1f} | {seconds / baseline:.2f} |" for name, seconds in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="dla_34", help="deformable network: dla_34 or resdcn_N")
    parser.add_argument("--size", type=int, default=512, help="network input height and width")
    parser.add_argument("--layer-size", type=int, default=128, help="single layer's map height and width")
    parser.add_argument("--channels", type=int, default=64, help="single layer's input and output channels")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("error: --repeats must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)

    loads: list[float] = []
    layer, layer_diff = layer_rows(args, loads)
    network, network_diff, plain_arch = network_rows(args, loads)
    layer_base = dict(layer)["plain Conv2d 3x3"]
    network_base = dict(network)[f"{plain_arch} (no DCN)"]
    ratio = dict(network)[f"{args.arch}, gather DCN"] / network_base
    nhwc_ratio = dict(network)[f"{args.arch}, gather DCN, channels_last"] / dict(network)[f"{plain_arch} (no DCN), channels_last"]
    lines = [
        f"# Deformable convolution on the CPU ({args.arch} vs {plain_arch})",
        "",
        (f"`python benchmarks/bench_dcn.py --arch {args.arch} --size {args.size} --threads {args.threads} "
        f"--repeats {args.repeats}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
        f"eager, float32, batch 1, no_grad, medians of {args.repeats} interleaved rounds after {args.warmup} "
        f"warm-up rounds; 1-minute load average {min(loads):.2f} to {max(loads):.2f} during the run."),
        "",
        f"## One {args.channels}-channel 3x3 layer at {args.layer_size}x{args.layer_size}",
        "",
        *table(layer, layer_base, "plain conv"),
        "",
        f"Largest difference, gather vs torchvision: {layer_diff:.1e}.",
        "",
        f"## Whole network at {args.size}x{args.size}",
        "",
        *table(network, network_base, plain_arch),
        "",
        f"Largest head-output difference, gather vs torchvision: {network_diff:.1e}.",
        f"**{args.arch} network / {plain_arch} network: {ratio:.2f}** (gather DCN, the default on the CPU).",
        f"Both in channels_last: {nhwc_ratio:.2f}.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.output is not None:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
