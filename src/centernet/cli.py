"""Command line: ``centernet train | val | predict | export | data check | demo | recipes | config``.

Every verb takes an optional YAML recipe and ``section.field=value`` overrides, e.g.
``centernet train configs/ctdet_res18_voc_70e.yaml train.epochs=10 data.source=my_voc/``.
"""
from __future__ import annotations

import argparse
import json
import sys

from centernet.config import RESUME_SAFE_FIELDS, ConfigError, list_recipes, load_config


def _split_config(items: list[str]) -> tuple[str | None, list[str]]:
    """The recipe (the one word without '=', wherever it stands) and the overrides, in their order."""
    recipes = [item for item in items if "=" not in item]
    if len(recipes) > 1:
        raise ConfigError(
            f"more than one recipe given ({', '.join(recipes)}): name one recipe (a YAML file or a shipped name); "
            "overrides are section.field=value"
        )
    return (recipes[0] if recipes else None), [item for item in items if "=" in item]


def _train_config(args: argparse.Namespace):
    """The experiment ``train`` runs: the recipe and overrides, or with ``--resume`` the run folder's own.

    ``--resume RUN_FOLDER`` names the folder; a bare ``--resume`` finds it from the recipe and
    ``project=`` / ``name=``. Either way the folder's ``config.yaml`` is the experiment and the
    overrides may change only ``RESUME_SAFE_FIELDS``. (A recipe file given as ``--resume``'s value,
    ``train --resume recipe.yaml``, is taken as the recipe.)
    """
    from pathlib import Path

    from centernet.engine.run_folder import RunFolder, resume_config

    items, folder = list(args.config), None
    if isinstance(args.resume, str):
        if Path(args.resume).is_dir():
            folder = Path(args.resume)
        elif "=" in args.resume:
            items.append(args.resume)  # ``--resume name=x``: an override, the recipe form
        elif Path(args.resume).suffix in (".yaml", ".yml") or args.resume in list_recipes():
            items.insert(0, args.resume)  # ``--resume recipe``: the recipe form
        else:
            raise FileNotFoundError(f"--resume {args.resume}: no such run folder (nor a recipe)")
    path, overrides = _split_config(items)
    if not args.resume:
        return load_config(path, overrides)
    if folder is not None:
        if path is not None:
            raise ConfigError(f"--resume {folder}: the run folder's config.yaml is the experiment; give no recipe ({path})")
        return resume_config(folder, overrides)
    located = load_config(path, overrides)
    locating = [item for item in overrides if item.split("=", 1)[0].strip() in ("project", "name")]
    return resume_config(RunFolder.path_of(located), [item for item in overrides if item not in locating])


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from centernet.engine.distributed import process_rank, quiet_other_ranks
    from centernet.engine.trainer import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # epoch and validation lines
    quiet_other_ranks()  # under torchrun, rank 0 alone logs and prints
    cfg = _train_config(args)
    args.experiment = cfg  # for the Ctrl-C message (the run folder, possibly renamed by on_existing_run)
    summary = train(cfg, resume=bool(args.resume))
    if process_rank() == 0:
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
    if args.channels_last is not None:
        out.append(f"test.channels_last={str(args.channels_last).lower()}")
    if args.threads is not None:
        out.append(f"test.threads={args.threads}")
    return out


def _log_threads() -> None:
    """``val``, ``predict`` and ``demo`` say on stderr how many threads they run with and why (``centernet.threads``)."""
    import logging

    class ToStderr(logging.StreamHandler):
        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr  # the current one (a caller may have replaced it since)
            super().emit(record)

    log = logging.getLogger("centernet.threads")
    if not log.handlers:
        handler = ToStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _cmd_val(args: argparse.Namespace) -> int:
    from centernet.engine.evaluate import evaluate_checkpoint

    _log_threads()
    for option in ("save_json", "save_kitti"):  # a bare --save-json followed by a recipe or an override took it as its path
        value = getattr(args, option)
        if isinstance(value, str) and ("=" in value or value in list_recipes() or value.endswith((".yaml", ".yml"))):
            args.config.append(value)
            setattr(args, option, True)
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

    _log_threads()
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
        on_folder=lambda folder: setattr(args, "predict_folder", folder),  # for the Ctrl-C message
    )
    print(summary)
    return 0


# What of an experiment an exported graph holds: the decoded peaks, the flip test and the input size.
EXPORT_FIELDS = {"test.K": "K", "test.flip": "flip", "data.input_size": "input_size"}


def _export_settings(args: argparse.Namespace) -> dict:
    """``export``'s K, flip and input size: its options, else the recipe's / overrides', else the checkpoint's.

    A recipe or ``test.K`` / ``test.flip`` / ``data.input_size`` overrides resolve against the
    checkpoint's experiment as ``val`` and ``predict`` resolve them; an override of any other field
    would change nothing in the graph, so it is refused.
    """
    path, overrides = _split_config(args.config)
    given = {"K": args.K, "flip": args.flip, "input_size": args.input_size}
    ignored = [item for item in overrides if item.split("=", 1)[0].strip() not in EXPORT_FIELDS]
    if ignored:
        raise ConfigError(f"export: {', '.join(ignored)} would not change the graph; export reads {', '.join(EXPORT_FIELDS)}")
    if path is None and not overrides:
        return {**given, "K": 100 if args.K is None else args.K}
    from centernet import CenterNet
    from centernet.engine.evaluate import experiment_for

    cfg = experiment_for(CenterNet.from_checkpoint(args.weights), args.weights, path, overrides)
    resolved = {"K": cfg.test.K, "flip": cfg.test.flip, "input_size": list(cfg.data.input_size)}
    return {name: resolved[name] if value is None else value for name, value in given.items()}


def _cmd_export(args: argparse.Namespace) -> int:
    from centernet.export.onnx import export_onnx

    if args.format != "onnx":
        raise ValueError(f"unsupported export format {args.format!r}; only 'onnx' is available")
    settings = _export_settings(args)
    path = export_onnx(
        args.weights,
        args.output,
        decode=not args.raw_heads,
        int8=args.int8,
        calibration_images=args.calibration_images,
        calibration_count=args.calibration_count,
        **settings,
    )
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

    _log_threads()  # the threads chosen for training and validation, and why
    summary = run_demo(args.output, overrides=args.overrides, resume=args.resume)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from centernet.config import recipe_table

    print(recipe_table())
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    """Prints the resolved experiment (recipe, task defaults, dataclass defaults, overrides) as YAML."""
    import yaml

    path, overrides = _split_config(args.config)
    print(yaml.safe_dump(load_config(path, overrides).to_dict(), sort_keys=False), end="")
    return 0


def _interrupted(args: argparse.Namespace) -> str:
    """The one line a Ctrl-C ends with: what was stopped and, for ``train``, how to continue it."""
    cfg = getattr(args, "experiment", None)
    if args.verb == "train" and cfg is not None:
        from centernet.engine.run_folder import RunFolder

        folder = RunFolder.path_of(cfg)
        if not (folder / "last.pt").is_file():
            return f"interrupted: no checkpoint yet ({folder / 'last.pt'} is written at each epoch end); nothing to resume"
        return (
            f"interrupted: the last checkpoint is {folder / 'last.pt'} (written at each epoch end and every "
            f"train.checkpoint_interval steps); continue with: centernet train --resume {folder}"
        )
    if args.verb == "demo":
        from pathlib import Path

        last = Path(args.output) / "last.pt"
        again = "centernet demo" + ("" if args.output == "runs/demo" else f" --output {args.output}")
        if not last.is_file():
            return f"interrupted: no checkpoint yet ({last} is written at each epoch end); start again with: {again}"
        return f"interrupted: the demo's last checkpoint is {last}; continue with: {again} --resume"
    if args.verb == "predict":
        folder = getattr(args, "predict_folder", None)
        if folder is None:
            return "interrupted: predict stopped before its output folder was made; nothing was written"
        return f"interrupted: the images done so far are in {folder} (results.jsonl, results.json)"
    return f"interrupted: {args.verb} stopped"


def _add_test_options(p: argparse.ArgumentParser) -> None:
    """The test options ``val`` and ``predict`` share (shorthands of the ``test.*`` overrides)."""
    g = p.add_argument_group("test options (shorthands of test.* overrides)")
    g.add_argument("--flip", action="store_true", help="flip test (test.flip=true)")
    g.add_argument("--scales", type=float, nargs="+", default=None, help="multi-scale test, e.g. 0.5 0.75 1 1.25 1.5 (test.scales; default: the experiment's, 1)")
    g.add_argument("--nms", action="store_true", help="Gaussian soft-NMS also for one scale (test.nms=true)")
    g.add_argument("--K", type=int, default=None, help="peaks decoded per image and scale (test.K; default: the experiment's, 100)")
    g.add_argument("--score-thresh", type=float, default=None,
                   help="drop detections below this score (test.score_thresh; default: the experiment's, 0 = keep all)")
    g.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (test.device; default: the experiment's, auto)")
    g.add_argument("--precision", choices=("float32", "float16", "bfloat16"), default=None,
                   help="network precision (test.precision; default: the experiment's, float32)")
    g.add_argument("--half", action="store_true", help="float16 autocast (test.precision=float16)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (test.precision=bfloat16)")
    g.add_argument("--compile", action="store_true", help="torch.compile the network, CUDA graphs on a GPU (test.compile=true)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format on the CPU (test.channels_last; default: the experiment's, auto = the architecture's measured default)")
    g.add_argument("--threads", default=None, metavar="N|auto",
                   help="intra-op threads on the CPU (test.threads; default: the experiment's, auto = chosen from the free cores)")


class _AnyOrderParser(argparse.ArgumentParser):
    """A parser whose verbs take their words in any order: recipe, overrides and ``--options`` mixed.

    argparse stops filling a ``nargs="*"`` positional at the first option, so ``val RECIPE --weights W
    data.source=S`` left ``data.source=S`` unrecognised. A verb's own parser (one without sub-verbs)
    parses intermixed instead: options first, wherever they stand, then the positionals from what is
    left. Parsers with sub-verbs parse as usual (argparse cannot intermix those); the sub-verb parsers
    they create are of this class too.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._subparsers is not None or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back into parse_known_args
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = _AnyOrderParser(prog="centernet", description="CenterNet: Objects as Points")
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser(
        "train",
        help="train a model from a recipe",
        description="Train a recipe (a YAML file or a shipped name) with section.field=value overrides.",
        epilog="`centernet recipes` lists the shipped recipes; `centernet config NAME [overrides]` prints every "
        "field of one, resolved, as YAML (the names to override).",
    )
    p.add_argument("config", nargs="*", help="recipe (YAML or shipped name) then section.field=value overrides")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_FOLDER",
        help="continue a run's last.pt exactly, from the run folder's own config.yaml: RUN_FOLDER "
        "(runs/<name>), or without it the folder the recipe / name= names; overrides may change only "
        + ", ".join(RESUME_SAFE_FIELDS),
    )
    p.set_defaults(func=_cmd_train)

    p = verbs.add_parser("recipes", help="list the shipped recipes (name, task, arch, data, purpose)")
    p.set_defaults(func=_cmd_recipes)

    p = verbs.add_parser("config", help="print a recipe's resolved fields as YAML")
    p.add_argument("config", nargs="*", help="recipe (YAML or shipped name; none: the defaults) then section.field=value overrides")
    p.set_defaults(func=_cmd_config)

    p = verbs.add_parser("val", help="evaluate a checkpoint (COCO AP, OKS AP or KITTI AP)")
    p.add_argument("config", nargs="*", help="optional recipe (YAML or shipped name) and overrides (default: the checkpoint's own)")
    p.add_argument("--weights", required=True, help="our checkpoint (.pt) or an original CenterNet .pth (required)")
    p.add_argument("--split", default=None, help="data split (default: the experiment's data.val_split)")
    p.add_argument("--save-json", nargs="?", const=True, default=None, metavar="FILE",
                   help="write the COCO results list (the original's results.json) to FILE, a new file; without FILE into a fresh "
                   "runs/val, runs/val2, ... (or name=) with args.yaml (default: not written)")
    p.add_argument("--save-kitti", nargs="?", const=True, default=None, metavar="DIR",
                   help="3D: write one KITTI <frame>.txt per frame into DIR, new or empty; without DIR into a fresh runs/val... "
                   "(default: not written)")
    p.add_argument("--batch", type=int, default=8, help="images per network call (default: %(default)s)")
    _add_test_options(p)
    p.set_defaults(func=_cmd_val)

    p = verbs.add_parser("predict", help="detect on an image, folder, glob or video")
    p.add_argument("config", nargs="*", help="optional recipe (YAML or shipped name) and data.* / test.* overrides")
    p.add_argument("--weights", required=True, help="our checkpoint (.pt) or an original CenterNet .pth (required)")
    p.add_argument("--source", required=True, help="image, folder, glob pattern, video, webcam index or stream URL (required)")
    p.add_argument("--output", default=None,
                   help="folder for drawn images/video and results; new or empty, unless on_existing_run=increment/overwrite "
                   "(default: a fresh runs/predict, runs/predict2, ...; name= / project= choose it too)")
    p.add_argument("--conf", type=float, default=0.3,
                   help="score a detection needs to be drawn and written to txt labels; the summary says how many passed (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="images per network call (default: %(default)s)")
    p.add_argument("--save-txt", action="store_true", help="also write YOLO txt labels")
    p.add_argument("--calib", default=None, help="KITTI calib file or folder (3D models need one; default: none)")
    _add_test_options(p)
    p.set_defaults(func=_cmd_predict)

    p = verbs.add_parser("export", help="export any task to ONNX with its decoding (and flip test) in the graph")
    p.add_argument("--weights", required=True, help="our checkpoint (.pt) or an original CenterNet .pth (required)")
    p.add_argument("--format", default="onnx", help="output format (default: %(default)s)")
    p.add_argument("--output", default=None, help="the .onnx file to write (default: the weights' path with .onnx)")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="network input, multiples of 32 (default: the checkpoint's input size)")
    p.add_argument("config", nargs="*", help="optional recipe and test.K / test.flip / data.input_size overrides (default: the checkpoint's own)")
    p.add_argument("--K", type=int, default=None, help="detections per image of the decoded graph (default: the experiment's test.K, 100)")
    p.add_argument("--raw-heads", action="store_true", help="export the raw head maps without decoding")
    p.add_argument("--int8", action="store_true", help="statically quantised INT8 network (QDQ), decoder kept float32")
    p.add_argument("--calibration-images", default=None, metavar="DIR", help="folder of images to calibrate --int8 on (default: none; required with --int8)")
    p.add_argument("--calibration-count", type=int, default=64, metavar="N", help="calibration images used (default: %(default)s)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test inside the graph (default: the checkpoint's test.flip, as predict)")
    p.set_defaults(func=_cmd_export)

    p = verbs.add_parser("data", help="data set tools")
    data_verbs = p.add_subparsers(dest="data_verb", required=True)
    q = data_verbs.add_parser("check", help="summarise and validate a data set before training")
    q.add_argument("path", help="COCO json, VOC folder, YOLO data yaml, KITTI folder or 'synthetic'")
    q.add_argument("--split", default=None, help="split to check: a YOLO yaml key, a VOC / KITTI split file, a COCO instances_<split> json "
                   "(default: val for YOLO, COCO and synthetic; every image for VOC and KITTI)")
    q.add_argument("--workers", type=int, default=None, help="decoding threads (default: one per CPU)")
    q.add_argument("--no-decode", action="store_true", help="annotations only: skip decoding every image")
    q.set_defaults(func=_cmd_data_check)

    p = verbs.add_parser("demo", help="train res_18 on the built-in synthetic shapes, evaluate, predict")
    p.add_argument("--output", default="runs/demo", help="folder for the demo's run, metrics and drawn images (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted demo in --output from its last.pt")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides of the demo recipe")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one verb; a bad input (config, data, image, checkpoint, run folder) ends in one ``error:`` line, exit 2."""
    from centernet.extras import MissingExtraError
    from centernet.models.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    from centernet.engine.command import set_command

    set_command(["centernet", *(sys.argv[1:] if argv is None else argv)])  # recorded in the run folders
    if hasattr(sys.stdout, "reconfigure"):  # a file name that is not valid UTF-8 is printed escaped, never a crash
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, MissingExtraError, FileNotFoundError, ValueError, OSError) as err:
        # DataFormatError is a ValueError, ImageReadError and the run folder's errors are OSErrors;
        # each message already names the file and the problem (MissingExtraError: the pip command).
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: no traceback, where things stand, the shell's 128 + SIGINT
        print(f"\n{_interrupted(args)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
