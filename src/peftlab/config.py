"""One object that describes a run; the command line and the Python API both build it.

Every field carries its own help text in ``metadata["help"]``, so the command
line options are generated from this file and cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from peftlab.errors import PeftlabError

DEFAULT_METHODS = ("full", "head", "lora")
# Tasks: a classifier with a new head, or a language model trained on prompts and responses or plain text.
TASKS = ("seq-cls", "causal-lm")
# How a generated answer is compared with the reference (causal-lm evaluation).
ANSWER_MATCHES = ("auto", "exact", "number", "none")
# Per-device training batch size when --batch-size is not given, by task.
DEFAULT_BATCH_SIZE = {"seq-cls": 32, "causal-lm": 8}
# Trackers peftlab passes to TrainingArguments.report_to. tensorboard is a dependency, so it works offline.
REPORT_TO = ("none", "tensorboard")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZE = ("none", "4bit")


def _opt(default, help: str, group: str, **extra):
    """Declare a run setting with its help text and the option group it is listed under."""
    metadata = {"help": help, "group": group, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    """Settings of one train or compare run."""

    # -- model and data ---------------------------------------------------------
    model: str = _opt("minilm", "Model: a built-in alias (minilm, smollm2), a local model folder or a Hugging Face hub id.", "model and data")
    task: str | None = _opt(None, "seq-cls (a classifier with a new head) or causal-lm (a language model trained on responses or plain text). Default: from the model (causal-lm for a *ForCausalLM checkpoint).", "model and data")
    data: str | None = _opt(None, "Data: a folder of split files, a single .csv/.tsv/.json/.jsonl/.parquet file, or a hub data set name (name or name:config). Default: the built-in demo data.", "model and data")
    text_column: str | None = _opt(None, "Column that holds the input text. Default: found by common names (text, sentence, ...).", "model and data")
    label_column: str | None = _opt(None, "Column that holds the label. Default: found by common names (label, labels, class, ...).", "model and data")
    label_names: list[str] | None = _opt(None, "Names of integer labels 0, 1, ..., comma-separated (for example negative,positive).", "model and data")
    validation_fraction: float = _opt(0.1, "Share of train carved out as validation when the data has no validation split.", "model and data")
    max_length: int = _opt(128, "Maximum tokens per input (causal-lm: per prompt with its response, or per block of plain text); longer texts are truncated.", "model and data")

    # -- language models (causal-lm) ----------------------------------------------
    prompt_column: str | None = _opt(None, "Column with the prompt of prompt/response data. Default: found by common names (prompt, instruction, question, ...).", "language models")
    response_column: str | None = _opt(None, "Column with the response of prompt/response data. Default: found by common names (response, completion, output, answer, ...).", "language models")
    prompt_template: str | None = _opt(None, "Prompt for labelled data used with a language model: {text} is the input, {labels} the label names joined by ', '. Default: a question that asks for one of the labels.", "language models")
    answer_match: str = _opt("auto", "How a generated answer is scored: exact (the whole answer), number (the number after ####, else the last number), none, or auto (label data: exact; prompt/response data: exact when every reference is at most 16 tokens, else none).", "language models")
    max_new_tokens: int | None = _opt(None, "Tokens to generate per prompt when scoring answers. Default: the longest reference answer plus 4.", "language models")
    max_eval_samples: int | None = _opt(None, "Evaluate on the first N rows of the evaluation and validation splits only (causal-lm generation is slow on a CPU).", "language models")

    # -- method -----------------------------------------------------------------
    methods: list[str] = _opt(list(DEFAULT_METHODS), "Methods to run, comma-separated (see `peftlab methods`).", "method")
    lora_r: int = _opt(8, "LoRA rank r: the inner dimension of the low-rank update.", "method")
    lora_alpha: float = _opt(16.0, "LoRA scaling alpha; the update is scaled by alpha / r.", "method")
    lora_dropout: float = _opt(0.0, "Dropout on the LoRA input. 0 keeps a step cheap; 0.05-0.1 may help on small data.", "method")
    target_modules: list[str] | None = _opt(None, "Module names a method adapts, comma-separated. Default: per architecture (see `peftlab methods`).", "method")
    method_args: dict[str, Any] = _opt({}, "Further method options as key=value; repeat the flag for several.", "method")

    # -- training ---------------------------------------------------------------
    epochs: float = _opt(3.0, "Training epochs (ignored when --max-steps is given).", "training")
    max_steps: int | None = _opt(None, "Training steps; overrides --epochs.", "training")
    lr: float | None = _opt(None, "Learning rate. Default: the method's own (see `peftlab methods`).", "training")
    batch_size: int | None = _opt(None, "Training batch size per device. Default: 32 for seq-cls, 8 for causal-lm.", "training")
    eval_batch_size: int | None = _opt(None, "Evaluation batch size. Default: twice the training batch size.", "training")
    weight_decay: float = _opt(0.0, "AdamW weight decay.", "training")
    warmup_ratio: float = _opt(0.06, "Share of training steps with linear learning-rate warm-up.", "training")
    seed: int = _opt(42, "Random seed for the head, the data order and the validation split.", "training")

    # -- device -----------------------------------------------------------------
    precision: str = _opt("auto", "Training precision: auto (bf16 or fp16 mixed precision on CUDA, fp32 on the CPU), fp32, bf16, or fp16 (CUDA only).", "device")
    quantize: str = _opt("none", "Load the frozen base weights in 4 bits: none or 4bit (NF4 through bitsandbytes, CUDA only; with lora this is QLoRA).", "device")

    # -- output -----------------------------------------------------------------
    out: str | None = _opt(None, "Output folder. Default: a new timestamped folder under runs/.", "output")
    report_to: str = _opt("none", "Experiment tracker for the training logs: none or tensorboard (event files in the run folder's tensorboard/<method>).", "output")
    save_steps: int | None = _opt(None, "Save a training checkpoint every N optimizer steps under the run folder's checkpoints/<method> (weights, optimizer, scheduler, RNG states, data position); only the newest is kept. Default: no checkpoints.", "output")
    resume: bool = _opt(False, "Continue the run in --out: keep the methods that finished and continue the others from their last checkpoint.", "output")
    overwrite: bool = _opt(False, "Replace the run in --out: delete its results, reports, checkpoints and method folders first.", "output")

    # -- safety -----------------------------------------------------------------
    allow_pickle: bool = _opt(False, "Also load model weights stored as pickles (pytorch_model.bin). Unpickling a file from an untrusted source can run code.", "safety")
    trust_remote_code: bool = _opt(False, "Run the Python code that a model folder or hub repository ships (transformers' trust_remote_code). Only for models you trust.", "safety")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject values no run can use, naming the field and the value received."""
        if not self.methods:
            raise PeftlabError("no method given: pass at least one, for example --methods lora")
        _positive_int("max_length", self.max_length)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        for name in ("max_new_tokens", "max_eval_samples"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.task is not None and self.task not in TASKS:
            raise PeftlabError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.answer_match not in ANSWER_MATCHES:
            raise PeftlabError(f"--answer-match must be one of {', '.join(ANSWER_MATCHES)}, got {self.answer_match!r}")
        if self.prompt_template is not None and "{text}" not in self.prompt_template:
            raise PeftlabError(f"--prompt-template must contain {{text}}, where the input goes; got {self.prompt_template!r}")
        if self.eval_batch_size is not None:
            _positive_int("eval_batch_size", self.eval_batch_size)
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps)
        elif not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise PeftlabError(f"--epochs must be a positive number, got {self.epochs}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise PeftlabError(f"--lr must be a positive number, got {self.lr}")
        if not 0 < self.validation_fraction < 1:
            raise PeftlabError(f"--validation-fraction must be between 0 and 1 (exclusive), got {self.validation_fraction}")
        if self.lora_r < 1:
            raise PeftlabError(f"--lora-r must be an integer of at least 1, got {self.lora_r}")
        if not 0 <= self.lora_dropout < 1:
            raise PeftlabError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise PeftlabError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise PeftlabError(f"--weight-decay must be at least 0, got {self.weight_decay}")
        if self.save_steps is not None:
            _positive_int("save_steps", self.save_steps)
        if self.precision not in PRECISIONS:
            raise PeftlabError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.quantize not in QUANTIZE:
            raise PeftlabError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}")
        if self.report_to not in REPORT_TO:
            raise PeftlabError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}")

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE[self.task or "seq-cls"]

    @property
    def resolved_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.resolved_batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or value < 1:
        raise PeftlabError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def config_fields():
    """Return the dataclass fields of RunConfig in declaration order."""
    return dataclasses.fields(RunConfig)
