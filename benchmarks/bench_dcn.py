"""Deformable convolution on the CPU: torchvision's kernel against ``deform_conv2d_gather``, quiet and contended.

One command, one report::

    python benchmarks/bench_dcn.py --contend 2                  # dla_34 vs dlav0_34 at 512, quiet then 2 busy processes
    python benchmarks/bench_dcn.py --arch resdcn_18             # resdcn_18 vs res_18
    python benchmarks/bench_dcn.py --contend 2 --output benchmarks/RESULTS_dcn_run.md

Each condition (quiet; then, with ``--contend N``, N busy processes this script starts and stops)
times, eager, float32, batch 1:

* one layer under ``torch.no_grad``: a ``--channels``-channel 3x3 modulated deformable convolution
  at ``--layer-size`` (torchvision's op, the gather path, and a plain 3x3 ``Conv2d`` of the same
  shape for scale);
* the whole network at ``--size`` under ``torch.no_grad``: the deformable network (gather, the CPU
  default; torchvision's op with ``--torchvision``) and the same network without deformable
  convolutions (``dla_34`` -> ``dlav0_34``, ``resdcn_N`` -> ``res_N``); both again in channels_last;
* one training step of both networks at ``--train-size`` (forward, loss, backward, Adam step), with
  the forward alone timed beside it: training runs torchvision's op (its backward is the reference).

``--threads``: the intra-op threads, default all the cores (PyTorch's own default, what a script
that sets nothing runs with); ``auto`` uses ``centernet.threads.choose_threads``, the choice
``val`` and ``predict`` make, re-chosen at the start of each condition.

All weights are random; each ``conv_offset_mask`` gets small random weights and biases, so the
offsets are non-zero, fractional and differ per pixel (zero offsets would sample the grid exactly
and flatter any implementation that special-cased them). Variants run interleaved (one run of
each per round) and the tables give medians over ``--repeats`` rounds after ``--warmup`` rounds;
the 1-minute load average is read before every round and its range printed, since on a shared
machine absolute times move with the load and only ratios within one condition are comparable.
The largest output difference between the two implementations is printed beside the times.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from centernet.models import build_model
from centernet.models.dcn import DeformConv, dcn_implementation, deform_conv2d_gather
from centernet.threads import apply_threads, choose_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import contention  # noqa: E402  (benchmarks/ is a script folder)

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


def network_rows(args: argparse.Namespace, loads: list[float], nets: dict) -> list[tuple[str, float]]:
    arch, plain_arch = args.arch, nets["plain_arch"]
    deformable, plain, x = nets["deformable"], nets["plain"], nets["x"]
    deformable_nhwc, plain_nhwc, x_nhwc = nets["deformable_nhwc"], nets["plain_nhwc"], nets["x_nhwc"]

    def run(network: nn.Module, inputs: torch.Tensor, implementation: str) -> Callable[[], object]:
        def call() -> object:
            with dcn_implementation(implementation):
                return network(inputs)

        return call

    variants = {f"{arch}, gather DCN": run(deformable, x, "gather"), f"{plain_arch} (no DCN)": run(plain, x, "auto")}
    if args.torchvision:
        variants[f"{arch}, torchvision DCN"] = run(deformable, x, "torchvision")
    variants[f"{arch}, gather DCN, channels_last"] = run(deformable_nhwc, x_nhwc, "gather")
    variants[f"{plain_arch} (no DCN), channels_last"] = run(plain_nhwc, x_nhwc, "auto")
    with torch.no_grad():
        medians = interleaved_medians(variants, args.warmup, args.repeats, loads)
    return list(medians.items())


def build_networks(args: argparse.Namespace) -> dict:
    plain_arch = plain_counterpart(args.arch)
    torch.manual_seed(0)
    deformable = build_model(args.arch, HEADS, head_conv=None).eval()
    plain = build_model(plain_arch, HEADS, head_conv=None).eval()
    randomize_offsets(deformable, torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with dcn_implementation("torchvision"):
            reference = deformable(x)
        with dcn_implementation("gather"):
            fast = deformable(x)
    # The same weights in channels-last memory (NHWC): the gather's table is then a pad of a
    # contiguous view and its output keeps that layout; plain convolutions gain as well.
    return {
        "plain_arch": plain_arch,
        "deformable": deformable,
        "plain": plain,
        "x": x,
        "deformable_nhwc": copy.deepcopy(deformable).to(memory_format=torch.channels_last),
        "plain_nhwc": copy.deepcopy(plain).to(memory_format=torch.channels_last),
        "x_nhwc": x.contiguous(memory_format=torch.channels_last),
        "diff": max((reference[k] - fast[k]).abs().max().item() for k in reference),
    }


def training_rows(args: argparse.Namespace, loads: list[float], nets: dict) -> list[tuple[str, float]]:
    """One training step (forward, a sum-of-squares loss, backward, Adam) of both networks, and
    the forward alone (with grad, as in training: the deformable layers run torchvision's op)."""
    arch, plain_arch = args.arch, nets["plain_arch"]
    x = torch.randn(args.train_batch, 3, args.train_size, args.train_size, generator=torch.Generator().manual_seed(3))
    networks = {arch: copy.deepcopy(nets["deformable"]).train(), plain_arch: copy.deepcopy(nets["plain"]).train()}
    optimizers = {name: torch.optim.Adam(network.parameters(), lr=1e-6) for name, network in networks.items()}

    def step(name: str) -> Callable[[], object]:
        def call() -> object:
            outputs = networks[name](x)
            loss = sum(value.float().square().mean() for value in outputs.values())
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            return loss

        return call

    def forward(name: str) -> Callable[[], object]:
        return lambda: networks[name](x)

    variants = {}
    for name in networks:
        variants[f"{name} training step"] = step(name)
        variants[f"{name} forward alone (with grad)"] = forward(name)
    return list(interleaved_medians(variants, args.warmup, max(3, args.repeats // 2), loads).items())


def table(rows: list[tuple[str, float]], baseline: float, baseline_name: str) -> list[str]:
    lines = [f"| variant | median ms | / {baseline_name} |", "|---|---|---|"]
    lines += [f"| {name} | {seconds * 1000:.1f} | {seconds / baseline:.2f} |" for name, seconds in rows]
    return lines


def set_threads(args: argparse.Namespace) -> str:
    """Applies ``--threads`` (a count, or ``auto``: the inference choice now); returns what was set and why."""
    if args.threads == "auto":
        choice = apply_threads(choose_threads("auto", field="--threads"))
        return f"{choice.threads} ({choice.reason})"
    torch.set_num_threads(int(args.threads))
    return f"{args.threads} (--threads)"


def condition_report(args: argparse.Namespace, nets: dict, busy: int) -> tuple[list[str], float]:
    """The tables of one condition (``busy`` competing processes running) and its network ratio."""
    loads: list[float] = []
    threads = set_threads(args)
    layer, layer_diff = layer_rows(args, loads)
    network = network_rows(args, loads, nets)
    training = training_rows(args, loads, nets) if args.train_size else []
    arch, plain_arch = args.arch, nets["plain_arch"]
    network_times = dict(network)
    ratio = network_times[f"{arch}, gather DCN"] / network_times[f"{plain_arch} (no DCN)"]
    nhwc_ratio = network_times[f"{arch}, gather DCN, channels_last"] / network_times[f"{plain_arch} (no DCN), channels_last"]
    title = "quiet (no busy process started)" if not busy else f"contended: {busy} busy process(es) started by the script"
    lines = [
        f"## {title}",
        "",
        f"Threads: {threads}. 1-minute load average {min(loads):.2f} to {max(loads):.2f} during this condition.",
        "",
        f"### One {args.channels}-channel 3x3 layer at {args.layer_size}x{args.layer_size}",
        "",
        *table(layer, dict(layer)["plain Conv2d 3x3"], "plain conv"),
        "",
        f"Largest difference, gather vs torchvision: {layer_diff:.1e}.",
        "",
        f"### Whole network at {args.size}x{args.size}, no_grad",
        "",
        *table(network, network_times[f"{plain_arch} (no DCN)"], plain_arch),
        "",
        f"**{arch} network / {plain_arch} network: {ratio:.2f}** (gather DCN, the default on the CPU); both in channels_last: {nhwc_ratio:.2f}.",
    ]
    if training:
        times = dict(training)
        lines += [
            "",
            f"### Training step at {args.train_size}x{args.train_size}, batch {args.train_batch} (torchvision DCN forward and backward)",
            "",
            *table(training, times[f"{plain_arch} training step"], f"{plain_arch} step"),
            "",
            f"{arch} step / {plain_arch} step: {times[f'{arch} training step'] / times[f'{plain_arch} training step']:.2f}; "
            f"the forward is {times[f'{arch} forward alone (with grad)'] / times[f'{arch} training step']:.0%} of the {arch} step "
            f"({times[f'{arch} forward alone (with grad)'] / times[f'{plain_arch} forward alone (with grad)']:.2f}x the {plain_arch} forward).",
        ]
    return lines, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="dla_34", help="deformable network: dla_34 or resdcn_N")
    parser.add_argument("--size", type=int, default=512, help="network input height and width")
    parser.add_argument("--layer-size", type=int, default=128, help="single layer's map height and width")
    parser.add_argument("--channels", type=int, default=64, help="single layer's input and output channels")
    parser.add_argument("--threads", default=str(torch.get_num_threads()),
                        help="intra-op threads: a count, or auto (centernet's inference choice) (default: PyTorch's, %(default)s)")
    parser.add_argument("--contend", type=int, default=0, metavar="N",
                        help="also time with N busy processes competing (started and stopped here; default: quiet only)")
    parser.add_argument("--torchvision", action="store_true", help="also time the whole network with torchvision's op (slow)")
    parser.add_argument("--train-size", type=int, default=256, help="training step input size (0: no training step)")
    parser.add_argument("--train-batch", type=int, default=2, help="training step batch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.contend < 0:
        raise SystemExit("error: --repeats must be >= 1, --warmup and --contend >= 0")
    if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) > 0):
        raise SystemExit(f"error: --threads {args.threads}: expected a positive count or auto")

    nets = build_networks(args)
    sections, ratios = [], {}
    for busy in [0] + ([args.contend] if args.contend else []):
        with contention(busy):
            lines, ratios[busy] = condition_report(args, nets, busy)
        sections += ["", *lines]
    command = " ".join(["python benchmarks/bench_dcn.py", *sys.argv[1:]])
    summary = f"**{args.arch} / {nets['plain_arch']} (gather DCN, no_grad): quiet {ratios[0]:.2f}"
    if args.contend:
        summary += f", with {args.contend} busy processes {ratios[args.contend]:.2f}"
    lines = [
        f"# Deformable convolution on the CPU ({args.arch} vs {nets['plain_arch']})",
        "",
        (f"`{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
         f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; eager, float32, "
         f"medians of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds "
         f"({max(3, args.repeats // 2)} for training steps)."),
        "",
        summary + "**.",
        f"Largest head-output difference, gather vs torchvision: {nets['diff']:.1e}.",
        *sections,
    ]
    report = "\n".join(lines)
    print(report)
    if args.output is not None:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
