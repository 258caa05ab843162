"""Training and evaluation with transformers' Trainer, so accelerate and torchrun can scale the same code."""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch
import transformers
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, PrinterCallback, ProgressCallback, Trainer, TrainingArguments
from transformers.integrations import TensorBoardCallback

from peftlab.config import RunConfig
from peftlab.data import quiet_datasets
from peftlab.precision import precision_arguments, resolve_precision

log = logging.getLogger(__name__)


def tokenize_splits(splits, tokenizer, max_length: int):
    """Tokenize every split once, truncating to ``max_length``; return the splits and how many texts were cut."""
    truncated = {}

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        full_lengths = tokenizer(batch["text"], truncation=False, add_special_tokens=True, return_length=True)["length"]
        encoded["labels"] = batch["label"]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        encoded["truncated"] = [n > max_length for n in full_lengths]
        return encoded

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "sequence longer than the maximum" is counted and reported below
    try:
        with quiet_datasets():
            tokenized = splits.map(encode, batched=True, remove_columns=splits["train"].column_names)
    finally:
        transformers.logging.set_verbosity(level)
    for name, split in tokenized.items():
        truncated[name] = int(sum(split["truncated"]))
    tokenized = tokenized.remove_columns("truncated")
    return tokenized, truncated


def classification_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 from logits and labels (scikit-learn)."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.argmax(logits, axis=-1)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def training_arguments(config: RunConfig, lr: float, output_dir: Path, quiet: bool) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.resolved_batch_size,
        per_device_eval_batch_size=config.resolved_eval_batch_size,
        learning_rate=lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length",
        logging_strategy="steps",
        logging_steps=0.05,  # about 20 points on the loss curve
        # Checkpoints go to output_dir; the newest is kept and the older one is deleted
        # only after the newer is complete.
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=1,
        logging_nan_inf_filter=False,  # log a NaN loss as NaN, so a diverged method is noticed and stopped
        eval_strategy="no",
        report_to=config.report_to,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        # A language model's logits (batch x length x vocabulary) are not needed after the loss: keeping them costs minutes.
        prediction_loss_only=config.task == "causal-lm",
        # With True (the default of transformers 5.25), the Trainer multiplies each rank's loss by the
        # number of processes whenever the model's forward takes **kwargs, as peft's wrappers do, expecting
        # the model to divide by the token count of all ranks. Classification models ignore that count,
        # so under torchrun the training gradients and the evaluation loss came out N times too large.
        average_tokens_across_devices=False,
        **precision_arguments(resolve_precision(config.precision)),
    )


class _ProgressBar(ProgressCallback):
    """The Trainer's progress bar without the dict it prints at every logging step; the loss goes to results.json."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def make_trainer(model, tokenizer, args: TrainingArguments, train_dataset: Dataset | None = None, task: str = "seq-cls") -> Trainer:
    """Build a Trainer for ``task``. A classifier reports accuracy and macro-F1, and a language model pads its labels with -100 and reports the loss."""
    causal = task == "causal-lm"
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100) if causal else DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=None if causal else classification_metrics,
    )
    # The Trainer prints every log dict (PrinterCallback, or ProgressCallback with a bar);
    # the losses go to results.json instead, so keep only the bar. In Jupyter the Trainer
    # uses NotebookProgressCallback in place of ProgressCallback, and it is kept as it is.
    trainer.remove_callback(PrinterCallback)
    if not args.disable_tqdm and trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_ProgressBar())
    return trainer


def set_tensorboard_dir(trainer: Trainer, folder: Path) -> None:
    """Make the trainer's TensorBoard callback, if it has one, write its event files to ``folder``.

    transformers 5 has no TrainingArguments.logging_dir: the callback reads the
    folder from TENSORBOARD_LOGGING_DIR, else uses output_dir/runs/..., which is
    peftlab's scratch folder and deleted after training. Setting the attribute on
    the instance avoids changing the environment of the whole process.
    """
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(folder)


def evaluate(trainer: Trainer, dataset: Dataset) -> dict[str, float]:
    """Return accuracy, macro-F1 and mean loss of the trainer's model on ``dataset``."""
    output = trainer.predict(dataset, metric_key_prefix="eval")
    metrics = output.metrics
    return {
        "accuracy": metrics["eval_accuracy"],
        "f1_macro": metrics["eval_f1_macro"],
        "loss": metrics["eval_loss"],
    }


def evaluate_lm(trainer: Trainer, tokenized, split: str, match: str, max_new_tokens: int, quiet: bool = False, examples: int = 3):
    """Return loss, perplexity and (unless ``match`` is none) exact match of greedy answers on ``split``, with a few examples.

    The loss is the Trainer's: the mean over evaluation batches of each batch's mean token loss,
    counting only response tokens (all tokens for plain text). Perplexity is exp(loss).
    """
    loss = trainer.evaluate(tokenized.splits[split], metric_key_prefix="eval")["eval_loss"]
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    shown = []
    if match != "none" and split in tokenized.prompts:
        from peftlab.generation import exact_match, generate_batched

        prompts, references = tokenized.prompts[split], tokenized.references[split]
        generated = generate_batched(
            trainer.model, trainer.processing_class, prompts, max_new_tokens, trainer.args.per_device_eval_batch_size, f"generating ({split})", quiet
        )
        metrics["exact_match"] = exact_match(generated, references, match)
        shown = [{"reference": r, "generated": g} for r, g in zip(references[:examples], generated[:examples])]
    return metrics, shown


# ---------------------------------------------------------------------------
# Peak memory


@dataclass
class PeakMemory:
    """Peak memory while a block runs.

    On CUDA: the peak of allocated device memory. On the CPU: the peak resident
    memory of this process above its level when the block started, sampled
    every 10 ms, so a short spike between two samples can be missed.
    """

    interval: float = 0.01
    peak_mb: float = 0.0
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    def __enter__(self):
        release_memory()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return self
        self._process = psutil.Process()
        self._start = self._process.memory_info().rss
        self._peak = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_mb = (self._peak - self._start) / 2**20


def release_memory() -> None:
    """Return freed memory to the operating system, so the next method's peak is measured from a clean level."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the measurement then includes memory the allocator kept


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
