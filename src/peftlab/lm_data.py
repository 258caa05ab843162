"""Data for causal language models: prompt/response pairs, labelled texts turned into prompts, or plain text.

The shape follows from the columns, or from ``--prompt-column``/``--response-column``:

- prompt/response data (``question``/``answer``, ``instruction``/``output``, ``prompt``/``completion``):
  each row becomes one chat turn, and only the response tokens count in the loss;
- labelled data (a text and a label column, as for a classifier): the prompt asks for one of the
  labels (``--prompt-template``) and the label's name is the response;
- plain text (a ``.txt`` file, or a text column without labels): all of it is tokenized, cut into
  blocks of ``--max-length`` tokens, and the last blocks are held out for evaluation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict

from peftlab.config import RunConfig
from peftlab.data import DEMO_NAME, LABEL_COLUMNS, SPLIT_FILE_NAMES, TEXT_COLUMNS, _load_raw, load_text_classification, quiet_datasets
from peftlab.errors import PeftlabError, one_of

log = logging.getLogger(__name__)

PROMPT_COLUMNS = ("prompt", "instruction", "question", "query", "input")
RESPONSE_COLUMNS = ("response", "completion", "output", "answer", "chosen")
DEFAULT_PROMPT_TEMPLATE = "{text}\n\nWhich of these labels fits the text above: {labels}? Answer with the label only."
# Used when the tokenizer has no chat template (a base model rather than an instruction-tuned one).
PLAIN_PROMPT = "### Instruction:\n{prompt}\n\n### Response:\n"
# Prompt/response data whose references are all this short (in tokens) is scored by exact match under --answer-match auto.
SHORT_ANSWER_TOKENS = 16

KINDS = ("prompt-response", "labels", "text")


@dataclass
class LMData:
    """Train and evaluation splits for a causal language model, with how they were read."""

    kind: str  # one of KINDS
    splits: DatasetDict  # prompt-response and labels: columns "prompt" and "response"; text: column "text"
    source: str
    eval_split: str  # "test", or "validation" when the data has none
    columns: dict[str, str]  # the data's own column names, by role
    label_names: list[str] | None = None  # labels only: the label names, which are the responses
    prompt_template: str | None = None  # labels only
    notes: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def describe(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "columns": self.columns,
            "label_names": self.label_names,
            "prompt_template": self.prompt_template,
            "splits": self.sizes,
            "eval_split": self.eval_split,
            "notes": self.notes,
        }


def load_lm_data(config: RunConfig) -> LMData:
    """Read ``config.data`` and bring it to train, validation (when the data allows) and evaluation splits."""
    with quiet_datasets():
        return _load_lm_data(config)


def _load_lm_data(config: RunConfig) -> LMData:
    source = DEMO_NAME if config.data is None else config.data
    text_files = _text_files(config.data)
    if text_files is not None:
        return _plain_text(text_files, source)

    raw = _load_raw(config.data)
    if "train" not in raw:
        raise PeftlabError(f"data {source!r} has no train split (found {one_of(raw) or 'none'}); name a file train.csv, train.jsonl, ...")
    columns = raw["train"].column_names
    pair = _pick_pair(config, columns, source)
    if pair is not None:
        return _prompt_response(raw, pair, config, source)

    by_lower = {c.lower(): c for c in columns}
    has_label = config.label_column is not None or any(name in by_lower for name in LABEL_COLUMNS)
    if has_label:
        return _labels(config, source)
    text_column = config.text_column or next((by_lower[n] for n in TEXT_COLUMNS if n in by_lower), None)
    if text_column is None:
        raise PeftlabError(
            f"data {source!r} has neither prompt/response columns, nor a label column, nor a text column (columns: {one_of(columns)}); "
            "name them with --prompt-column and --response-column, --label-column, or --text-column"
        )
    if text_column not in columns:
        raise PeftlabError(f"--text-column {text_column!r} is not a column of {source!r}; its columns are {one_of(columns)}")
    documents = {name: [t for t in split[text_column] if t and str(t).strip()] for name, split in raw.items()}
    return _plain_text(documents, source, column=text_column)


# ---------------------------------------------------------------------------
# The three shapes


def _prompt_response(raw: DatasetDict, pair: tuple[str, str, str | None], config: RunConfig, source: str) -> LMData:
    prompt_column, response_column, input_column = pair
    notes: list[str] = []
    splits = {}
    for name, split in raw.items():
        if name not in SPLIT_FILE_NAMES:
            raise PeftlabError(f"data {source!r} has a split named {name!r}; valid split names are {one_of(SPLIT_FILE_NAMES)}")
        for column in filter(None, pair):
            if column not in split.column_names:
                raise PeftlabError(f"the {name} split of {source!r} has no column {column!r}; its columns are {one_of(split.column_names)}")
        prompts = [_join_prompt(p, i) for p, i in zip(split[prompt_column], split[input_column] if input_column else [None] * len(split))]
        responses = split[response_column]
        blank = [not (p and str(p).strip() and r is not None and str(r).strip()) for p, r in zip(prompts, responses)]
        keep = [i for i, is_blank in enumerate(blank) if not is_blank]
        if len(keep) < len(split):
            dropped = [i + 1 for i, is_blank in enumerate(blank) if is_blank]
            rows = ", ".join(map(str, dropped[:5])) + (" ..." if len(dropped) > 5 else "")
            message = f"{name} split: dropped {len(dropped)} of {len(split)} rows with a blank prompt or response (rows {rows})"
            log.warning(message)
            notes.append(message)
        if not keep:
            raise PeftlabError(f"the {name} split of {source!r} has no row with both a prompt and a response")
        splits[name] = Dataset.from_dict({"prompt": [str(prompts[i]) for i in keep], "response": [str(responses[i]) for i in keep]})
    splits = _carve_validation(DatasetDict(splits), config, notes)
    columns = {"prompt": prompt_column, "response": response_column} | ({"input": input_column} if input_column else {})
    return LMData("prompt-response", splits, source, _eval_split(splits, notes), columns, notes=notes)


def _labels(config: RunConfig, source: str) -> LMData:
    classes = load_text_classification(config.data, config.text_column, config.label_column, config.label_names, config.validation_fraction, config.seed)
    names = classes.label_names
    if all(name.isdigit() for name in names):
        log.warning("the labels of %s are numbers (%s): the model will answer with them; --label-names gives them words it may already know", classes.source, ", ".join(names))
    template = config.prompt_template or DEFAULT_PROMPT_TEMPLATE
    labels = ", ".join(names)
    try:
        template.format(text="", labels="")
    except (KeyError, IndexError, ValueError) as error:
        raise PeftlabError(f"--prompt-template may use only {{text}} and {{labels}} (write other braces as {{{{ and }}}}); got {template!r}") from error

    def to_pairs(split: Dataset) -> Dataset:
        return Dataset.from_dict(
            {
                "prompt": [template.format(text=text, labels=labels) for text in split["text"]],
                "response": [names[label] for label in split["label"]],
            }
        )

    splits = DatasetDict({name: to_pairs(split) for name, split in classes.splits.items()})
    columns = {"text": classes.text_column, "label": classes.label_column}
    return LMData("labels", splits, classes.source, classes.eval_split, columns, names, template, list(classes.notes))


def _plain_text(documents: dict[str, list[str]], source: str, column: str | None = None) -> LMData:
    """Keep plain text as documents per split; tokenize_lm packs them into blocks and holds out the tail."""
    notes = []
    for name, texts in documents.items():
        if not texts:
            raise PeftlabError(f"the {name} split of {source!r} contains no text; give it at least one non-blank line")
    splits = DatasetDict({name: Dataset.from_dict({"text": texts}) for name, texts in documents.items()})
    # With only a train split, tokenize_lm holds out its tail as the test split.
    eval_split = "validation" if "validation" in splits and "test" not in splits else "test"
    return LMData("text", splits, source, eval_split, {"text": column} if column else {}, notes=notes)


# ---------------------------------------------------------------------------
# Reading and columns


def _text_files(data: str | None) -> dict[str, list[str]] | None:
    """Read a .txt file, or a folder of train.txt (and validation.txt, test.txt), as documents per split; None for other data."""
    if data is None:
        return None
    path = Path(data).expanduser()
    if path.is_file() and path.suffix.lower() == ".txt":
        return {"train": [_read_text(path)]}
    if path.is_dir():
        files = {}
        for file in sorted(path.glob("*.txt")):
            split = next((key for key, names in SPLIT_FILE_NAMES.items() if file.stem.lower() in names), None)
            if split is not None:
                files.setdefault(split, []).append(_read_text(file))
        if "train" in files:
            return files
    return None


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise PeftlabError(f"text file {str(path)!r} is not UTF-8 (byte {error.start} cannot be decoded); save it as UTF-8") from None
    if not text.strip():
        raise PeftlabError(f"text file {str(path)!r} is empty")
    return text


def _pick_pair(config: RunConfig, columns: list[str], source: str) -> tuple[str, str, str | None] | None:
    """Return (prompt, response, extra input) columns of prompt/response data, or None for other data."""
    for flag, given in (("prompt", config.prompt_column), ("response", config.response_column)):
        if given is not None and given not in columns:
            raise PeftlabError(f"--{flag}-column {given!r} is not a column of {source!r}; its columns are {one_of(columns)}")
    by_lower = {c.lower(): c for c in columns}
    response = config.response_column or next((by_lower[n] for n in RESPONSE_COLUMNS if n in by_lower), None)
    if response is None:
        if config.prompt_column is not None:
            raise PeftlabError(f"--prompt-column {config.prompt_column!r} needs a response column: name it with --response-column (columns of {source!r}: {one_of(columns)})")
        return None
    candidates = [by_lower[n] for n in PROMPT_COLUMNS if n in by_lower and by_lower[n] != response]
    prompt = config.prompt_column or (candidates[0] if candidates else None)
    if prompt is None:
        if config.response_column is not None:
            raise PeftlabError(f"--response-column {response!r} needs a prompt column: name it with --prompt-column (columns of {source!r}: {one_of(columns)})")
        return None
    # Alpaca-style data: an instruction plus an optional input that belongs to the prompt.
    extra = by_lower.get("input") if config.prompt_column is None and prompt == by_lower.get("instruction") and response != by_lower.get("input") else None
    return prompt, response, extra


def _join_prompt(prompt, extra) -> str | None:
    if prompt is None:
        return None
    return f"{prompt}\n\n{extra}" if extra and str(extra).strip() else prompt


def _carve_validation(splits: DatasetDict, config: RunConfig, notes: list[str]) -> DatasetDict:
    if "validation" in splits or len(splits["train"]) < 2:
        return splits
    carved = splits["train"].train_test_split(test_size=config.validation_fraction, seed=config.seed)
    splits["train"], splits["validation"] = carved["train"], carved["test"]
    notes.append(f"no validation split: carved {len(carved['test'])} rows ({config.validation_fraction:.0%}) from train with seed {config.seed}")
    return DatasetDict({name: splits[name] for name in ("train", "validation", "test") if name in splits})


def _eval_split(splits: DatasetDict, notes: list[str]) -> str:
    if "test" in splits:
        return "test"
    notes.append("no test split: metrics are reported on the validation split")
    return "validation"


# ---------------------------------------------------------------------------
# Prompts and tokens


def render_prompt(tokenizer, prompt: str) -> str:
    """Render the text that comes before the model's answer: the chat template with a generation prompt, else PLAIN_PROMPT."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return PLAIN_PROMPT.format(prompt=prompt)


def render_response(tokenizer, prompt: str, response: str) -> str:
    """Render the text that follows render_prompt in a training example: the response and the end of the turn."""
    if tokenizer.chat_template:
        head = render_prompt(tokenizer, prompt)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(head):
            raise PeftlabError("the tokenizer's chat template renders a conversation that does not start with its own generation prompt; pass a model whose template does, or one without a chat template")
        return full[len(head):]
    return response + (tokenizer.eos_token or "")


@dataclass
class TokenizedLM:
    splits: DatasetDict  # input_ids, attention_mask, labels (-100 where the loss does not count), length
    truncated: dict[str, int]  # rows (or documents) cut to --max-length, per split
    prompts: dict[str, list[list[int]]] = field(default_factory=dict)  # prompt tokens per row, for generation (not for text)
    references: dict[str, list[str]] = field(default_factory=dict)  # reference responses per row (not for text)
    response_tokens: int = 0  # tokens in the longest reference response


def tokenize_lm(data: LMData, tokenizer, max_length: int, validation_fraction: float = 0.1) -> TokenizedLM:
    """Tokenize every split once: prompt/response rows with the prompt masked out of the loss, or text packed into blocks."""
    if data.kind == "text":
        return _pack_text(data, tokenizer, max_length, validation_fraction)
    splits, truncated, prompts, references = {}, {}, {}, {}
    longest = 0
    for name, split in data.splits.items():
        rows = {"input_ids": [], "attention_mask": [], "labels": [], "length": []}
        prompt_ids_all, cut = [], 0
        heads = [render_prompt(tokenizer, p) for p in split["prompt"]]
        tails = [render_response(tokenizer, p, r) for p, r in zip(split["prompt"], split["response"])]
        head_ids = tokenizer(heads, add_special_tokens=False)["input_ids"]
        tail_ids = tokenizer(tails, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(list(split["response"]), add_special_tokens=False)["input_ids"]
        longest = max([longest] + [len(a) for a in answer_ids])
        for prompt_ids, response_ids in zip(head_ids, tail_ids):
            if len(prompt_ids) + len(response_ids) > max_length:
                cut += 1
                response_ids = response_ids[:max_length - 1]
                # Keep the end of the prompt, where the template asks for the answer.
                prompt_ids = prompt_ids[len(prompt_ids) + len(response_ids) - max_length:]
            ids = prompt_ids + response_ids
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * len(ids))
            rows["labels"].append([-100] * len(prompt_ids) + response_ids)
            rows["length"].append(len(ids))
            prompt_ids_all.append(prompt_ids)
        splits[name] = Dataset.from_dict(rows)
        truncated[name] = cut
        prompts[name] = prompt_ids_all
        references[name] = list(split["response"])
    return TokenizedLM(DatasetDict(splits), truncated, prompts, references, longest)


def _pack_text(data: LMData, tokenizer, max_length: int, eval_fraction: float) -> TokenizedLM:
    """Concatenate each split's documents (separated by the end-of-sequence token) and cut them into blocks.

    With only a train split, the last ``eval_fraction`` of its blocks becomes the test split: a
    held-out tail, so no evaluation block overlaps a training block.
    """
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    blocks = {}
    for name, split in data.splits.items():
        ids: list[int] = []
        for encoded in tokenizer(list(split["text"]), add_special_tokens=False)["input_ids"]:
            ids.extend(encoded + separator)
        count = len(ids) // max_length
        if count == 0:
            raise PeftlabError(f"the {name} split of {data.source!r} has {len(ids)} tokens, fewer than one block of --max-length {max_length}; lower --max-length")
        blocks[name] = [ids[i * max_length:(i + 1) * max_length] for i in range(count)]
    if set(blocks) == {"train"}:
        train = blocks["train"]
        held = max(1, math.ceil(len(train) * eval_fraction))
        if len(train) - held < 1:
            raise PeftlabError(f"data {data.source!r} makes {len(train)} blocks of --max-length {max_length} tokens, too few to hold some out; lower --max-length")
        blocks = {"train": train[:-held], "test": train[-held:]}
        data.splits = DatasetDict({"train": data.splits["train"]})  # documents stay whole; the blocks are the splits
        data.eval_split = "test"
        data.notes.append(f"held out the last {held} of {len(train)} blocks ({eval_fraction:.0%}) of {max_length} tokens for evaluation")
    splits = DatasetDict(
        {name: Dataset.from_dict({"input_ids": b, "attention_mask": [[1] * max_length] * len(b), "labels": b, "length": [max_length] * len(b)}) for name, b in blocks.items()}
    )
    return TokenizedLM(splits, {name: 0 for name in splits})
