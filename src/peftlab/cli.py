"""Command line: a thin layer over the Python API, with options generated from RunConfig.

    peftlab compare                                   # built-in demo data, full vs head vs lora
    peftlab compare --data path/to/sst2 --epochs 1
    peftlab train --method lora --data train.csv --out runs/lora
    peftlab params --model minilm --method lora --json
    peftlab eval runs/lora/lora --data path/to/sst2
    peftlab predict runs/lora/lora "a gripping, funny film"
    peftlab compare --model smollm2 --data ../shared/data/sst2 --label-names negative,positive --methods lora --max-steps 150
    peftlab generate runs/lora/lora "Name three colours."
    peftlab merge runs/lora/lora --out merged-model
    peftlab bench --quick --json --data path/to/sst2 --text path/to/input.txt
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
from peftlab.config_file import read_config_file
from peftlab.distributed import is_main_process
from peftlab.errors import PeftlabError, RunInterrupted

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
        help_text = f.metadata["help"] + ("" if default in (None, {}) or kind == "bool" else f" (default: {shown})")
        if kind == "bool":
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
        elif kind == "list[str]":
            group.add_argument(flag, type=_split_list, default=argparse.SUPPRESS, metavar="A,B", help=help_text)
        elif kind.startswith("dict"):
            group.add_argument("--method-arg", dest=f.name, type=_key_value, action="append", default=argparse.SUPPRESS, metavar="KEY=VALUE", help=help_text)
        else:
            group.add_argument(flag, type=_TYPES[kind], default=argparse.SUPPRESS, metavar=kind.upper(), help=help_text)


def _config_from(args: argparse.Namespace, defaults: dict | None = None) -> RunConfig:
    """Build the RunConfig from ``defaults``, then the --config file, then the options given on the command line."""
    names = {f.name for f in config_fields()}
    values = dict(defaults or {})
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    values.update(file_values)
    given = {key: value for key, value in vars(args).items() if key in names}
    if "method_args" in given:
        given["method_args"] = file_values.get("method_args", {}) | dict(given["method_args"])
    values.update(given)
    return RunConfig(**values)


def _run_config(args: argparse.Namespace) -> RunConfig:
    """Build the RunConfig of a compare or train command. train runs --method, else the file's methods, else lora."""
    if args.command == "train" and "method" in args:
        args.methods = [args.method]
    return _config_from(args, defaults={"methods": ["lora"]} if args.command == "train" else None)


def _add_config_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="YAML",
        help="Read run settings from a YAML file whose keys are the option names, with dashes or underscores. Options given here override it.",
    )


def _add_weight_free_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "counting without weights",
        "A config.json file or a folder without weights is built from its config on the meta device, with no memory for weights.",
    )
    group.add_argument("--config-only", action="store_true", help="Build any --model (alias, folder or hub id) from its config alone, without loading weights.")
    group.add_argument(
        "--task", choices=("seq-cls", "causal-lm", "seq2seq-lm"),
        help="Model class to build: seq-cls (with --num-labels), causal-lm or seq2seq-lm. Default: from the config's architectures; seq-cls for loaded models.",
    )


def _add_memory_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "training-memory estimate",
        "Per method: weights, gradients, AdamW states (two fp32 values per trainable parameter, plus an fp32 master copy in 16-bit training) "
        "and activations, with a second row for a 4-bit (NF4) base where the base weights are frozen. Activations are what autograd keeps "
        "for the backward pass, per block from the hidden size, MLP size, heads, batch and sequence length: norm inputs, query, key, value "
        "and attention output (or the seq-len x seq-len probabilities), the MLP activation, dropout masks, and the inputs of the linear layers "
        "that train. Frozen blocks above a trainable one keep theirs too; blocks below every trainable parameter keep none. See docs/memory.md.",
    )
    group.add_argument("--memory", action="store_true", help="Add the training-memory estimate to the output.")
    group.add_argument("--dtype", dest="memory_dtype", metavar="DTYPE", help="Training dtype of weights, gradients and activations: fp32, bf16 or fp16 (default: fp32, as peftlab trains).")
    group.add_argument("--batch-size", dest="memory_batch_size", type=int, metavar="N", help="Sequences per training step (default: 32).")
    group.add_argument("--seq-len", dest="memory_seq_len", type=int, metavar="N", help="Tokens per sequence (default: 128).")
    group.add_argument("--device-memory", dest="memory_device_memory", metavar="SIZE", help="Device memory to check the estimate against, such as 24GB or 80GiB (both 2**30 bytes per GB).")
    group.add_argument(
        "--attention", dest="memory_attention", choices=("fused", "materialized"),
        help="fused: flash or memory-efficient attention, which keeps no seq-len x seq-len scores. materialized: eager attention, and PyTorch's SDPA on the CPU with attention dropout, which keep them. Default: from the model's attention implementation.",
    )


def _memory_setup(args: argparse.Namespace):
    """Return the MemorySetup of --memory, or None without it; a memory option without --memory raises PeftlabError."""
    from peftlab.estimate import memory_setup

    # The options are stored as memory_<name>, apart from RunConfig's batch_size and the like.
    names = ("dtype", "batch_size", "seq_len", "device_memory", "attention")
    given = [name for name in names if getattr(args, f"memory_{name}") is not None]
    if not args.memory:
        if given:
            raise PeftlabError(f"--{given[0].replace('_', '-')} sets the memory estimate: add --memory")
        return None
    return memory_setup(**{name: getattr(args, f"memory_{name}") for name in names})


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="peftlab", description="Parameter-efficient fine-tuning: count, train and compare.")
    parser.add_argument("--version", action="version", version=f"peftlab {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="Print only warnings, errors and the final table.")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="Also print debug messages of peftlab and transformers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    compare = commands.add_parser("compare", help="Train several methods on the same data and budget and compare them.")
    _add_config_options(compare)
    _add_config_file_option(compare)
    compare.add_argument("--json", action="store_true", help="Print results.json to stdout instead of the table.")

    train = commands.add_parser("train", help="Train one method and save its artifact.")
    train.add_argument("--method", default=argparse.SUPPRESS, help="Method to train (default: lora; see `peftlab methods`).")
    _add_config_options(train, skip={"methods"})
    _add_config_file_option(train)
    train.add_argument("--json", action="store_true", help="Print results.json to stdout instead of the table.")

    params = commands.add_parser("params", help="Count base, trainable and added parameters without training.")
    params.add_argument("--method", type=_split_list, default=["lora"], metavar="A,B", help="Methods to count, comma-separated (default: lora).")
    params.add_argument("--num-labels", type=int, default=2, help="Outputs of the classification head (default: 2).")
    _add_config_options(params, skip={f.name for f in config_fields()} - {"model", "label_names", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "method_args"})
    params.add_argument("--json", action="store_true", help="Print JSON: one object for one method, a list for several.")
    _add_weight_free_options(params)
    _add_memory_options(params)

    evaluate = commands.add_parser("eval", help="Reload a saved artifact and evaluate it on a data set's test split.")
    evaluate.add_argument("artifact", metavar="ARTIFACT_DIR", help="A method folder written by train or compare.")
    evaluate.add_argument("--data", help="Data to evaluate on (default: the data the artifact was trained on).")
    evaluate.add_argument("--max-eval-samples", type=int, help="Evaluate on the first N rows of the split (default: as when the artifact was trained, all rows for a classifier).")
    evaluate.add_argument("--json", action="store_true", help="Print only the metrics object as JSON.")

    predict = commands.add_parser("predict", help="Classify texts with a saved artifact.")
    predict.add_argument("artifact", metavar="ARTIFACT_DIR", help="A method folder written by train or compare.")
    predict.add_argument("texts", nargs="+", metavar="TEXT", help="Texts to classify.")
    predict.add_argument("--json", action="store_true", help="Print JSON lines instead of a table.")

    generate = commands.add_parser("generate", help="Answer prompts greedily with a language-model artifact (through its chat template, or as plain text to continue for a model trained on plain text).")
    generate.add_argument("artifact", metavar="ARTIFACT_DIR", help="A method folder of a causal-lm run, or a folder written by merge.")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT", help="Prompts to answer.")
    generate.add_argument("--max-new-tokens", type=int, help="Tokens to generate per prompt (default: the run's, at least 64).")
    generate.add_argument("--json", action="store_true", help="Print JSON lines instead of text.")

    merge = commands.add_parser("merge", help="Merge an adapter into its base model and save a plain transformers model folder.")
    merge.add_argument("artifact", metavar="ARTIFACT_DIR", help="An adapter folder written by train or compare.")
    merge.add_argument("--out", required=True, help="New folder for the merged model (safetensors, config, tokenizer).")

    commands.add_parser("methods", help="List the methods with their default learning rates and options.")

    bench = commands.add_parser(
        "bench",
        help="Measure seconds per training step, tokens per second and peak memory of each method on MiniLM and SmolLM2-135M, against a hand-written LoRA loop and the base model.",
    )
    bench.add_argument("--quick", action="store_true", help="Measure 3 rounds of 2 timed steps per variant instead of 8 rounds of 3.")
    bench.add_argument("--data", help="Classification data whose train texts fill MiniLM's batches (default: the built-in demo data).")
    bench.add_argument("--text", help="Plain text file whose tokens fill SmolLM2's batches (default: the demo data's texts).")
    bench.add_argument("--json", action="store_true", help="Print the results as JSON instead of tables.")

    report = commands.add_parser("report", help="Render results.csv, report.md, report.html and the charts of a run folder again from its results.json.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="A run folder written by train or compare.")
    return parser


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if not is_main_process():  # under torchrun every rank would print the same lines; rank 0 speaks for all
        level = logging.ERROR
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
    except RunInterrupted as stop:
        print(f"interrupted: {stop}; to continue, run the same command again with --resume --out {stop.out}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "report":  # before the runner import below, which loads torch
        from peftlab.report import render_run

        for path in render_run(args.run_dir):
            print(path)
        return 0
    from peftlab import reporting, runner
    from peftlab.report import HTML_FILE

    if args.command == "methods":
        return _print_methods()
    if args.command == "bench":
        from peftlab.bench import bench, bench_table

        results = bench(args.quick, args.data, args.text)
        print(json.dumps(results, indent=2) if args.json else bench_table(results))
        return 0
    if args.command in ("compare", "train"):
        config = _run_config(args)
        results = runner.train(config, quiet=args.quiet) if args.command == "train" else runner.compare(config, quiet=args.quiet)
        if args.json and is_main_process():
            print(json.dumps(results, indent=2))
        elif is_main_process():
            print(reporting.comparison_table(results))
            print(f"\nresults: {results['out']}/{runner.RESULTS_FILE}")
            print(f"report:  {results['out']}/{HTML_FILE}")
        # Methods that --methods all brought in and that cannot apply are skipped with their reason, not failed.
        return 0 if all(run["status"] in ("ok", "skipped") for run in results["runs"]) else 1
    if args.command == "params":
        args.methods = args.method
        task, args.task = args.task, None  # params also counts seq2seq-lm from configs, which RunConfig.task does not train
        config = _config_from(args)
        memory = _memory_setup(args)
        reports = runner.count_params(config=config, num_labels=args.num_labels, task=task, config_only=args.config_only, memory=memory)
        if args.json:
            print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        else:
            print(reporting.params_table(reports))
            for report in reports:
                print(f"\n{report['method']}:")
                print(reporting.modules_table(report))
            if memory is not None:
                from peftlab.estimate import memory_table

                print("\n" + memory_table(reports))
        return 0
    if args.command == "eval":
        metrics = runner.evaluate_artifact(args.artifact, args.data, quiet=args.quiet or args.json, max_eval_samples=args.max_eval_samples)
        shown = [k for k in ("accuracy", "f1_macro", "exact_match", "loss", "perplexity") if k in metrics]
        if args.json:
            print(json.dumps({k: metrics[k] for k in shown}))
        else:
            names = {"f1_macro": "macro-F1", "exact_match": "exact match"}
            print(f"{metrics['data']} ({metrics['split']}): " + ", ".join(f"{names.get(k, k)} {metrics[k]:.4f}" for k in shown))
        return 0
    if args.command == "predict":
        predictions = runner.predict(args.artifact, args.texts)
        for p in predictions:
            if args.json:
                print(json.dumps(p))
            elif "probability" in p:
                print(f"{p['label']}\t{p['probability']:.4f}\t{p['text']}")
            else:  # a language model's answer, which may not be one of the labels
                print(f"{p['label'] or '(no label: ' + repr(p['answer']) + ')'}\t{p['text']}")
        return 0
    if args.command == "generate":
        for answer in runner.generate(args.artifact, args.prompts, args.max_new_tokens, quiet=args.quiet):
            print(json.dumps(answer) if args.json else f"> {answer['prompt']}\n{answer['response']}\n")
        return 0
    if args.command == "merge":
        folder = runner.merge(args.artifact, args.out)
        print(f"merged model: {folder} (load it with from_pretrained)")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


# Architectures whose default target modules `peftlab methods` lists; the tables in methods/targets.py cover more.
LISTED_MODEL_TYPES = ("bert", "roberta", "distilbert", "gpt2", "llama", "mistral", "qwen2", "t5")
_FLAG_NAMES = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "targets"}


def _print_methods() -> int:
    from peftlab.methods import FAMILIES, all_method_names, get_method
    from peftlab.reporting import format_table

    entries = []  # (listed name, summary, entry)
    for name in all_method_names():
        family = FAMILIES.get(name.partition(":")[0]) if ":" in name else None
        method = get_method(name)
        entries.append((f"{family.name}:{family.parameter}", family.summary, method) if family else (name, method.summary, method))

    rows = [
        [listed, f"{m.default_lr:g}" + "".join(f" ({task} {lr:g})" for task, lr in m.task_lr.items()), ",".join(t for t in ("seq-cls", "causal-lm", "seq2seq-lm") if t in m.tasks), ",".join(_FLAG_NAMES[f] for f in m.flags) or "-", summary]
        for listed, summary, m in entries
    ]
    print(format_table(["method", "default lr", "tasks", "common flags", "what trains"], rows))
    print("\ncommon flags: r = --lora-r, alpha = --lora-alpha, dropout = --lora-dropout, targets = --target-modules")

    print("\nOptions, as --method-arg KEY=VALUE, shown with their defaults:")
    for listed, _, method in entries:
        for option in method.options:
            default = repr(option.default) if isinstance(option.default, str) else option.default
            print(f"  {listed} {option.name}={default}: {option.help}")

    print(f"\nDefault target modules ({', '.join(LISTED_MODEL_TYPES)}; others: pass --target-modules):")
    groups: list[tuple[list[str], dict]] = []
    for listed, _, method in entries:
        if not method.targets:
            continue
        shown = {t: method.targets.get(t) for t in LISTED_MODEL_TYPES}
        same = next((names for names, table in groups if table == shown), None)
        if same is not None:
            same.append(listed)
        else:
            groups.append(([listed], shown))
    for names, table in groups:
        print(f"  {', '.join(names)}:")
        print("    " + "; ".join(f"{t} {','.join(targets) if targets else '-'}" for t, targets in table.items()))
    return 0
