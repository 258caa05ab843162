"""Greedy generation in left-padded batches, and the scoring of generated answers against references."""

from __future__ import annotations

import re
import warnings

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def generate_batched(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int, desc: str = "generating", quiet: bool = False
) -> list[str]:
    """Return the greedy continuation of each tokenized prompt, decoded without special tokens.

    Prompts are sorted by length so a batch carries little padding; padding goes on the left,
    where the attention mask hides it, so every prompt ends where its answer starts. The
    results come back in the order of ``prompts``.
    """
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", disable=quiet, leave=False):
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = prompts[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        with torch.no_grad(), warnings.catch_warnings():
            # peft's soft-prompt models drop position ids and say so on every call; generation does not need them.
            warnings.filterwarnings("ignore", message="Position ids are not supported")
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config)
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(output[row, width:], skip_special_tokens=True)
    model.train(was_training)
    return answers


def normalise(text: str) -> str:
    """Lower-case, collapse white space and drop the full stop or quotes around a short answer."""
    return " ".join(text.split()).strip(" .!\"'`").lower()


def final_number(text: str) -> str | None:
    """The number after ``####`` (GSM8K's answer line), else the last number in ``text``; commas removed."""
    _, marker, tail = text.rpartition("####")
    found = NUMBER.findall(tail if marker else text)
    if not found:
        return None
    number = (found[0] if marker else found[-1]).replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def is_match(generated: str, reference: str, how: str) -> bool:
    """Score one answer: ``exact`` compares normalised texts, ``number`` the final numbers."""
    if how == "number":
        expected = final_number(reference)
        return expected is not None and final_number(generated) == expected
    return normalise(generated) == normalise(reference)


def exact_match(generated: list[str], references: list[str], how: str) -> float:
    return sum(is_match(g, r, how) for g, r in zip(generated, references)) / len(references)
