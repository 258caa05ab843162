"""Command line: a thin layer over the Python API, with options generated from RunConfig.

    peftlab compare                                   # built-in demo data, full vs head vs lora
    peftlab compare --data path/to/sst2 --epochs 1
    peftlab train --method lora --data train.csv --out runs/lora
    peftlab params --model minilm --method lora --json
    peftlab eval runs/lora/lora --data path/to/sst2
    peftlab predict runs/lora/lora "a gripping, funny film"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import warnings

from peftlab import __version__
from peftlab.config import RunConfig, config_fields
from peftlab.errors import PeftlabError

log = logging.getLogger("peftlab")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where to find the valid options."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _split_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _key_value(value: str) -> tuple[str, str]:
    key, sep, item = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {value!r}")
    return key.strip(), item.strip()


_TYPES = {"str": str, "int": int, "float": float}


def _add_config_options(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    """Add one option per RunConfig field, grouped as in the dataclass; help comes from the field."""
    groups = {}
    for f in config_fields():
        if f.name in skip:
            continue
        group_name = f.metadata["group"]
        group = groups.get(group_name) or groups.setdefault(group_name, parser.add_argument_group(group_name))
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).replace(" | None", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(default) if isinstance(default, list) else default
        help_text = f.metadata["help"] + ("" if default in (None, {}) else f" (default: {shown})")
        if kind == "list[str]":
            group.add_argument(flag, type=_split_list, default=argparse.SUPPRESS, metavar="A,B", help=help_text)
        elif kind.startswith("dict"):
            group.add_argument("--method-arg", dest=f.name, type=_key_value, action="append", default=argparse.SUPPRESS, metavar="KEY=VALUE", help=help_text)
        else:
            group.add_argument(flag, type=_TYPES[kind], default=argparse.SUPPRESS, metavar=kind.upper(), help=help_text)


def _config_from(args: argparse.Namespace) -> RunConfig:
    names = {f.name for f in config_fields()}
    values = {key: value for key, value in vars(args).items() if key in names}
    if "method_args" in values:
        values["method_args"] = dict(values["method_args"])
    return RunConfig(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="peftlab", description="Parameter-efficient fine-tuning: count, train and compare.")
    parser.add_argument("--version", action="version", version=f"peftlab {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="Print only warnings, errors and the final table.")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="Also print debug messages of peftlab and transformers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    compare = commands.add_parser("compare", help="Train several methods on the same data and budget and compare them.")
    _add_config_options(compare)
    compare.add_argument("--json", action="store_true", help="Print results.json to stdout instead of the table.")

    train = commands.add_parser("train", help="Train one method and save its artifact.")
    train.add_argument("--method", default="lora", help="Method to train (default: lora; see `peftlab methods`).")
    _add_config_options(train, skip={"methods"})
    train.add_argument("--json", action="store_true", help="Print results.json to stdout instead of the table.")

    params = commands.add_parser("params", help="Count base, trainable and added parameters without training.")
    params.add_argument("--method", type=_split_list, default=["lora"], metavar="A,B", help="Methods to count, comma-separated (default: lora).")
    params.add_argument("--num-labels", type=int, default=2, help="Outputs of the classification head (default: 2).")
    _add_config_options(params, skip={f.name for f in config_fields()} - {"model", "label_names", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "method_args"})
    params.add_argument("--json", action="store_true", help="Print JSON: one object for one method, a list for several.")

    evaluate = commands.add_parser("eval", help="Reload a saved artifact and evaluate it on a data set's test split.")
    evaluate.add_argument("artifact", metavar="ARTIFACT_DIR", help="A method folder written by train or compare.")
    evaluate.add_argument("--data", help="Data to evaluate on (default: the data the artifact was trained on).")
    evaluate.add_argument("--json", action="store_true", help="Print only the metrics object as JSON.")

    predict = commands.add_parser("predict", help="Classify texts with a saved artifact.")
    predict.add_argument("artifact", metavar="ARTIFACT_DIR", help="A method folder written by train or compare.")
    predict.add_argument("texts", nargs="+", metavar="TEXT", help="Texts to classify.")
    predict.add_argument("--json", action="store_true", help="Print JSON lines instead of a table.")

    commands.add_parser("methods", help="List the methods with their default learning rates and options.")
    return parser


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("peftlab")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    import transformers

    transformers.logging.set_verbosity(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars; training bars are the Trainer's own
        # Deprecation notices that peft and transformers raise inside their own calls; a user cannot act on them.
        warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _Formatter(logging.Formatter):
    def format(self, record):
        message = record.getMessage()
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: argparse has printed its output
        return exit_.code if isinstance(exit_.code, int) else 2
    setup_logging(args.quiet, args.verbose)
    try:
        return _dispatch(args)
    except PeftlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from peftlab import reporting, runner

    if args.command == "methods":
        return _print_methods()
    if args.command in ("compare", "train"):
        if args.command == "train":
            args.methods = [args.method]
        config = _config_from(args)
        results = runner.train(config, quiet=args.quiet) if args.command == "train" else runner.compare(config, quiet=args.quiet)
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            print(reporting.comparison_table(results))
            print(f"\nresults: {results['out']}/{runner.RESULTS_FILE}")
        return 0 if all(run["status"] == "ok" for run in results["runs"]) else 1
    if args.command == "params":
        args.methods = args.method
        config = _config_from(args)
        reports = runner.count_params(config=config, num_labels=args.num_labels)
        if args.json:
            print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        else:
            print(reporting.params_table(reports))
            for report in reports:
                print(f"\n{report['method']}:")
                print(reporting.modules_table(report))
        return 0
    if args.command == "eval":
        metrics = runner.evaluate_artifact(args.artifact, args.data, quiet=args.quiet or args.json)
        if args.json:
            print(json.dumps({k: metrics[k] for k in ("accuracy", "f1_macro", "loss")}))
        else:
            print(f"{metrics['data']} ({metrics['split']}): accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['f1_macro']:.4f}, loss {metrics['loss']:.4f}")
        return 0
    if args.command == "predict":
        predictions = runner.predict(args.artifact, args.texts)
        for p in predictions:
            print(json.dumps(p) if args.json else f"{p['label']}\t{p['probability']:.4f}\t{p['text']}")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _print_methods() -> int:
    from peftlab.methods import METHODS
    from peftlab.methods.targets import LORA_TARGETS
    from peftlab.reporting import format_table

    rows = [[m.name, f"{m.default_lr:g}", m.summary] for m in METHODS.values()]
    print(format_table(["method", "default lr", "what trains"], rows))
    print("\nLoRA default target modules by model type:")
    for model_type, targets in LORA_TARGETS.items():
        print(f"  {model_type}: {','.join(targets)}")
    return 0
