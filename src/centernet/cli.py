"""Command line: ``centernet train | val | predict | export | data check | demo``.

Every verb takes an optional YAML recipe and ``section.field=value`` overrides, e.g.
``centernet train configs/ctdet_res18_voc_70e.yaml train.epochs=10 data.source=my_voc/``.
"""
from __future__ import annotations

import argparse
import json
import sys

from centernet.config import ConfigError, load_config


def _split_config(items: list[str]) -> tuple[str | None, list[str]]:
    """The first item is a recipe file unless it is an override (contains '=')."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from centernet.engine.trainer import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # epoch and validation lines
    path, overrides = _split_config(args.config)
    cfg = load_config(path, overrides)
    summary = train(cfg, resume=args.resume)
    print(json.dumps(summary, indent=2))
    return 0


def _test_overrides(args: argparse.Namespace) -> list[str]:
    """The shared test flags of ``val`` and ``predict`` as ``test.*`` overrides (applied after the others)."""
    out = []
    if args.flip:
        out.append("test.flip=true")
    if args.scales is not None:
        out.append(f"test.scales=[{', '.join(str(s) for s in args.scales)}]")
    if args.nms:
        out.append("test.nms=true")
    if args.K is not None:
        out.append(f"test.K={args.K}")
    if args.score_thresh is not None:
        out.append(f"test.score_thresh={args.score_thresh}")
    if args.device is not None:
        out.append(f"test.device={args.device}")
    precision = "float16" if args.half else "bfloat16" if args.bf16 else args.precision
    if precision is not None:
        out.append(f"test.precision={precision}")
    if args.compile:
        out.append("test.compile=true")
    return out


def _cmd_val(args: argparse.Namespace) -> int:
    from centernet.engine.evaluate import evaluate_checkpoint

    path, overrides = _split_config(args.config)
    report = evaluate_checkpoint(
        args.weights,
        path,
        overrides + _test_overrides(args),
        split=args.split,
        save_json=args.save_json,
        save_kitti=args.save_kitti,
        batch_size=args.batch,
    )
    print(report.table)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from centernet.engine.predict import predict_to_folder

    path, overrides = _split_config(args.config)
    summary = predict_to_folder(
        args.weights,
        args.source,
        args.output,
        score_thresh=args.conf,
        batch_size=args.batch,
        save_txt=args.save_txt,
        calib=args.calib,
        recipe=path,
        overrides=overrides + _test_overrides(args),
    )
    print(summary)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from centernet.export.onnx import export_onnx

    if args.format != "onnx":
        raise SystemExit(f"unsupported export format {args.format!r}; only 'onnx' is available")
    path = export_onnx(args.weights, args.output, input_size=args.input_size, K=args.K, decode=not args.raw_heads)
    print(f"exported {path}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    """Prints the summary; exit code 1 when images are bad (training would refuse them), else 0."""
    from centernet.data.check import inspect_dataset

    summary, bad_images = inspect_dataset(args.path, split=args.split, verify_images=not args.no_decode, workers=args.workers)
    print(summary)
    return 1 if bad_images else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from centernet.engine.demo import run_demo

    summary = run_demo(args.output, overrides=args.overrides)
    print(json.dumps(summary, indent=2))
    return 0


def _add_test_options(p: argparse.ArgumentParser) -> None:
    """The test options ``val`` and ``predict`` share (shorthands of the ``test.*`` overrides)."""
    g = p.add_argument_group("test options (shorthands of test.* overrides)")
    g.add_argument("--flip", action="store_true", help="flip test (test.flip=true)")
    g.add_argument("--scales", type=float, nargs="+", default=None, help="multi-scale test, e.g. 0.5 0.75 1 1.25 1.5 (test.scales)")
    g.add_argument("--nms", action="store_true", help="Gaussian soft-NMS also for one scale (test.nms=true)")
    g.add_argument("--K", type=int, default=None, help="peaks decoded per image and scale (test.K)")
    g.add_argument("--score-thresh", type=float, default=None, help="drop detections below this score (test.score_thresh)")
    g.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (test.device)")
    g.add_argument("--precision", choices=("float32", "float16", "bfloat16"), default=None, help="network precision (test.precision)")
    g.add_argument("--half", action="store_true", help="float16 autocast (test.precision=float16)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (test.precision=bfloat16)")
    g.add_argument("--compile", action="store_true", help="torch.compile the network, CUDA graphs on a GPU (test.compile=true)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="centernet", description="CenterNet: Objects as Points")
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("train", help="train a model from a recipe")
    p.add_argument("config", nargs="*", help="recipe YAML then section.field=value overrides")
    p.add_argument("--resume", action="store_true", help="continue the run folder's last.pt exactly")
    p.set_defaults(func=_cmd_train)

    p = verbs.add_parser("val", help="evaluate a checkpoint (COCO AP, OKS AP or KITTI AP)")
    p.add_argument("config", nargs="*", help="optional recipe (YAML or shipped name) and overrides (default: the checkpoint's own)")
    p.add_argument("--weights", required=True, help="our checkpoint (.pt) or an original CenterNet .pth")
    p.add_argument("--split", default=None, help="data split (default: the recipe's val split)")
    p.add_argument("--save-json", default=None, help="write the COCO results list (the original's results.json) here")
    p.add_argument("--save-kitti", default=None, help="3D: write one KITTI <frame>.txt per frame into this folder")
    p.add_argument("--batch", type=int, default=8)
    _add_test_options(p)
    p.set_defaults(func=_cmd_val)

    p = verbs.add_parser("predict", help="detect on an image, folder, glob or video")
    p.add_argument("config", nargs="*", help="optional recipe (YAML or shipped name) and data.* / test.* overrides")
    p.add_argument("--weights", required=True)
    p.add_argument("--source", required=True, help="image, folder, glob pattern or video")
    p.add_argument("--output", default="runs/predict", help="folder for drawn images/video and results")
    p.add_argument("--conf", type=float, default=0.3, help="score threshold for drawing and txt output")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--save-txt", action="store_true", help="also write YOLO txt labels")
    p.add_argument("--calib", default=None, help="KITTI calib file or folder (3D models need one)")
    _add_test_options(p)
    p.set_defaults(func=_cmd_predict)

    p = verbs.add_parser("export", help="export to ONNX with decoding in the graph")
    p.add_argument("--weights", required=True)
    p.add_argument("--format", default="onnx")
    p.add_argument("--output", default=None)
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--K", type=int, default=100)
    p.add_argument("--raw-heads", action="store_true", help="export the raw head maps without decoding")
    p.set_defaults(func=_cmd_export)

    p = verbs.add_parser("data", help="data set tools")
    data_verbs = p.add_subparsers(dest="data_verb", required=True)
    q = data_verbs.add_parser("check", help="summarise and validate a data set before training")
    q.add_argument("path", help="COCO json, VOC folder, YOLO data yaml, KITTI folder or 'synthetic'")
    q.add_argument("--split", default=None)
    q.add_argument("--workers", type=int, default=None, help="decoding threads (default: one per CPU)")
    q.add_argument("--no-decode", action="store_true", help="annotations only: skip decoding every image")
    q.set_defaults(func=_cmd_data_check)

    p = verbs.add_parser("demo", help="train res_18 on the built-in synthetic shapes, evaluate, predict")
    p.add_argument("--output", default="runs/demo")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides of the demo recipe")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one verb; a bad input (config, data, image, checkpoint, run folder) ends in one ``error:`` line, exit 2."""
    from centernet.models.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, OSError) as err:
        # DataFormatError is a ValueError, ImageReadError and the run folder's errors are OSErrors;
        # each message already names the file and the problem.
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
