"""Causal language models on a tiny random Llama (seconds): data shapes, masking, packing, generation,
compare, exact reloads, generate, predict and merge."""

import json
import math
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftlab import RunConfig
from peftlab.artifacts import load_artifact
from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.generation import final_number, generate_batched, is_match
from peftlab.lm_data import DEFAULT_PROMPT_TEMPLATE, PLAIN_PROMPT, load_lm_data, render_prompt, tokenize_lm
from peftlab.models import load_config, model_task, resolve_model
from peftlab.runner import compare, count_params, evaluate_artifact, generate, merge, predict

REVIEWS = [
    ("great film, loved it", "positive"), ("dull and far too long", "negative"), ("wonderful and moving", "positive"),
    ("a waste of an evening", "negative"), ("brilliant acting", "positive"), ("terrible script", "negative"),
]


def _csv(folder, name, header, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(header + "\n" + "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    _csv(folder, "train.csv", "text,label", REVIEWS * 4)
    _csv(folder, "test.csv", "text,label", REVIEWS)
    return folder


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    rows = [(f"What is {a} plus {b}?", str(a + b)) for a in range(1, 6) for b in range(1, 5)]
    _csv(folder, "train.csv", "question,answer", rows)
    _csv(folder, "test.csv", "question,answer", rows[:4])
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "poem.txt"
    path.write_text("the cat sat on the mat and the dog lay by the door.\n" * 60)
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    return AutoTokenizer.from_pretrained(tiny_llama)


# ---------------------------------------------------------------------------
# Task and data shapes


def test_task_follows_from_the_model(tiny_llama, tiny_bert):
    assert model_task(load_config(resolve_model(str(tiny_llama)))) == "causal-lm"
    assert model_task(load_config(resolve_model(str(tiny_bert)))) == "seq-cls"
    assert model_task(load_config(resolve_model("smollm2"))) == "causal-lm"  # a GGUF config names no architecture
    assert model_task(load_config(resolve_model(str(tiny_llama))), "seq-cls") == "seq-cls"


def test_question_answer_columns_make_prompt_response_data(pairs):
    data = load_lm_data(RunConfig(data=str(pairs), task="causal-lm"))
    assert data.kind == "prompt-response"
    assert data.columns == {"prompt": "question", "response": "answer"}
    assert data.splits["test"][0] == {"prompt": "What is 1 plus 1?", "response": "2"}
    assert data.sizes == {"train": 18, "validation": 2, "test": 4}


def test_alpaca_input_joins_the_instruction(tmp_path):
    _csv(tmp_path, "train.csv", "instruction,input,output", [("Translate to French.", "cat", "chat"), ("Say hello.", "", "hello")] * 3)
    data = load_lm_data(RunConfig(data=str(tmp_path / "train.csv"), task="causal-lm"))
    assert data.columns == {"prompt": "instruction", "response": "output", "input": "input"}
    prompts = set(data.splits["train"]["prompt"]) | set(data.splits["validation"]["prompt"])
    assert prompts == {"Translate to French.\n\ncat", "Say hello."}


def test_labelled_data_answers_with_label_names(labelled):
    data = load_lm_data(RunConfig(data=str(labelled), task="causal-lm"))
    assert data.kind == "labels"
    assert data.label_names == ["negative", "positive"]
    assert data.splits["test"][0] == {"prompt": DEFAULT_PROMPT_TEMPLATE.format(text="great film, loved it", labels="negative, positive"), "response": "positive"}


def test_prompt_template_is_used(labelled):
    data = load_lm_data(RunConfig(data=str(labelled), task="causal-lm", prompt_template="Review: {text}\nSentiment ({labels}):"))
    assert data.splits["test"][1]["prompt"] == "Review: dull and far too long\nSentiment (negative, positive):"


def test_txt_file_is_plain_text(text_file):
    data = load_lm_data(RunConfig(data=str(text_file), task="causal-lm"))
    assert data.kind == "text"
    assert data.splits["train"]["text"] == [text_file.read_text()]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"prompt_column": "missing"}, "--prompt-column 'missing' is not a column"),
        ({"response_column": "question"}, "--response-column 'question' needs a prompt column"),
        ({"prompt_template": "no placeholder"}, "--prompt-template must contain {text}"),
        ({"prompt_template": "{text} {other}"}, "--prompt-template may use only {text} and {labels}"),
    ],
)
def test_bad_lm_data_options_are_refused(pairs, labelled, config, message):
    data = labelled if "prompt_template" in config else pairs
    with pytest.raises(PeftlabError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        load_lm_data(RunConfig(data=str(data), task="causal-lm", **config))


# ---------------------------------------------------------------------------
# Tokens


def test_loss_covers_only_the_response(labelled, tokenizer):
    data = load_lm_data(RunConfig(data=str(labelled), task="causal-lm"))
    tokenized = tokenize_lm(data, tokenizer, max_length=128)
    row = tokenized.splits["test"][0]
    prompt_ids = tokenized.prompts["test"][0]
    assert row["input_ids"][: len(prompt_ids)] == prompt_ids
    assert row["labels"][: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert tokenizer.decode(row["labels"][len(prompt_ids):]) == "positive<|im_end|>\n"
    assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert tokenized.references["test"][0] == "positive"


def test_long_rows_keep_response_and_prompt_end(labelled, tokenizer):
    data = load_lm_data(RunConfig(data=str(labelled), task="causal-lm"))
    tokenized = tokenize_lm(data, tokenizer, max_length=40)
    row = tokenized.splits["test"][0]
    assert len(row["input_ids"]) == 40
    assert tokenized.truncated["test"] == 6
    assert tokenizer.decode([t for t in row["labels"] if t != -100]) == "positive<|im_end|>\n"
    assert tokenizer.decode(tokenized.prompts["test"][0]).endswith("<|im_start|>assistant\n")


def test_plain_text_packed_with_test_tail(text_file, tokenizer):
    data = load_lm_data(RunConfig(data=str(text_file), task="causal-lm"))
    tokenized = tokenize_lm(data, tokenizer, max_length=32, validation_fraction=0.1)
    total = len(tokenizer(text_file.read_text(), add_special_tokens=False)["input_ids"]) + 1  # + the end-of-sequence separator
    blocks = total // 32
    held = math.ceil(blocks * 0.1)
    assert {name: len(split) for name, split in tokenized.splits.items()} == {"train": blocks - held, "test": held}
    assert tokenized.splits["test"][0]["labels"] == tokenized.splits["test"][0]["input_ids"]
    assert data.eval_split == "test"


def test_tokenizer_without_chat_template_gets_the_plain_prompt(tokenizer):
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    assert render_prompt(plain, "Say hi.") == PLAIN_PROMPT.format(prompt="Say hi.")


# ---------------------------------------------------------------------------
# Generation and scoring


def test_left_padded_batch_generates_as_each_prompt_alone(tiny_llama, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    prompts = [tokenizer(render_prompt(tokenizer, text), add_special_tokens=False)["input_ids"] for text in ("Hi", "Tell me a long story about a cat.")]
    together = generate_batched(model, tokenizer, prompts, max_new_tokens=6, batch_size=2, quiet=True)
    alone = [generate_batched(model, tokenizer, [p], max_new_tokens=6, batch_size=1, quiet=True)[0] for p in prompts]
    assert together == alone


@pytest.mark.parametrize(
    ("generated", "reference", "how", "expected"),
    [
        ("Positive.", "positive", "exact", True),
        ("  positive ", "positive", "exact", True),
        ("positive review", "positive", "exact", False),
        ("So the total is 1,234 apples.", "3 + 4 = 7\n#### 1234", "number", True),
        ("#### 72", "He sold 48/2 = 24 clips.\n#### 72", "number", True),
        ("It is 71", "#### 72", "number", False),
        ("no number", "#### 72", "number", False),
    ],
)
def test_answer_scoring(generated, reference, how, expected):
    assert is_match(generated, reference, how) is expected


def test_final_number_reads_the_gsm8k_answer_line():
    assert final_number("Natalia sold 48/2 = 24 clips in May.\n#### 72") == "72"
    assert final_number("about 3.0 and then 5") == "5"
    assert final_number("-2.0") == "-2"


# ---------------------------------------------------------------------------
# Compare, reload, generate, predict, merge


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory, tiny_llama, labelled):
    out = tmp_path_factory.mktemp("runs") / "lm"
    config = RunConfig(model=str(tiny_llama), data=str(labelled), methods=["lora", "prompt-tuning", "full"], max_steps=2, out=str(out))
    return out, compare(config, quiet=True)


def test_labelled_compare_scores_exact_match(labelled_run):
    out, results = labelled_run
    assert results["model"]["task"] == "causal-lm"
    assert results["metric"] == {"name": "exact_match", "label": "exact match", "higher_is_better": True}
    assert results["data"]["answer_match"] == "exact"
    assert results["data"]["max_new_tokens"] == 5  # "positive" and "negative" are one token each, plus 4
    assert results["config"]["task"] == "causal-lm"
    for run in results["runs"]:
        assert run["status"] == "ok"
        assert set(run["metrics"]["after"]) == {"loss", "perplexity", "exact_match"}
        assert run["metrics"]["after"]["perplexity"] == pytest.approx(math.exp(run["metrics"]["after"]["loss"]))
        assert [e["reference"] for e in run["examples"]["after"]] == ["positive", "negative", "positive"]
        assert run["train_steps"] == 2
    assert "| method | status | trainable | trainable % | test exact match before | test exact match after | perplexity after |" in (out / "report.md").read_text()


def test_lora_on_llama_adapts_attention_and_mlp(labelled_run):
    _, results = labelled_run
    lora = next(run for run in results["runs"] if run["method"] == "lora")
    # r=8 on q (32->32), k and v (32->16), o (32->32), gate and up (32->64), down (64->32), in 2 layers
    per_layer = 8 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 64) + (64 + 32))
    assert lora["params"]["trainable_params"] == 2 * per_layer
    assert lora["params"]["base_params"] == count_params(model=results["model"]["path"], methods=["full"])[0]["trainable_params"]


@pytest.mark.parametrize("method", ["lora", "prompt-tuning", "full"])
def test_eval_in_a_new_process_reproduces_metrics(labelled_run, method):
    out, results = labelled_run
    run = next(r for r in results["runs"] if r["method"] == method)
    printed = subprocess.run(
        [sys.executable, "-m", "peftlab", "-q", "eval", str(out / method), "--json"], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(printed) == run["metrics"]["after"]


def test_predict_answers_with_a_label_or_none(labelled_run):
    out, _ = labelled_run
    predictions = predict(str(out / "lora"), ["great film, loved it", "terrible script"])
    assert [p["text"] for p in predictions] == ["great film, loved it", "terrible script"]
    for p in predictions:
        assert p["label"] in ("negative", "positive", None)
        assert isinstance(p["answer"], str)


def test_generate_applies_the_chat_template(labelled_run, capsys):
    out, _ = labelled_run
    artifact = load_artifact(out / "lora")
    answers = generate(str(out / "lora"), ["Name a colour."], max_new_tokens=4)
    ids = artifact.tokenizer(render_prompt(artifact.tokenizer, "Name a colour."), add_special_tokens=False)["input_ids"]
    expected = generate_batched(artifact.model, artifact.tokenizer, [ids], 4, 1, quiet=True)
    assert answers == [{"prompt": "Name a colour.", "response": expected[0]}]
    assert main(["generate", str(out / "lora"), "Name a colour.", "--max-new-tokens", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == answers[0]


def test_merge_matches_adapter_outputs(labelled_run, tmp_path):
    out, _ = labelled_run
    merged = merge(str(out / "lora"), str(tmp_path / "merged"))
    adapter = load_artifact(out / "lora")
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    ids = tokenizer(["a quiet, tender film", "what a mess"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**ids).logits, adapter.model(**ids).logits, atol=1e-5, rtol=1e-4)
    prompts = [tokenizer(render_prompt(tokenizer, "Name a colour."), add_special_tokens=False)["input_ids"]]
    assert generate_batched(plain, tokenizer, prompts, 8, 1, quiet=True) == generate_batched(adapter.model, adapter.tokenizer, prompts, 8, 1, quiet=True)
    assert json.loads((merged / "peftlab.json").read_text())["adapter"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["merge", "{out}/prompt-tuning", "--out", "{tmp}/m"], "adds a trained prompt, which cannot be merged"),
        (["merge", "{out}/full", "--out", "{tmp}/m"], "contains a full model (full), not an adapter, so there is nothing to merge"),
        (["merge", "{out}/lora", "--out", "{out}"], "already exists and is not empty"),
        (["generate", "{out}/lora", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be a positive integer, got 0"),
    ],
)
def test_bad_merge_and_generate_requests(labelled_run, tmp_path, capsys, argv, message):
    out, _ = labelled_run
    code = main([a.format(out=out, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ")
    assert message in err[-1]
    assert not (tmp_path / "m").exists()


def test_generate_refuses_a_classifier(tiny_bert, tmp_path, capsys, labelled):
    out = tmp_path / "cls"
    compare(RunConfig(model=str(tiny_bert), data=str(labelled), methods=["lora"], max_steps=1, out=str(out)), quiet=True)
    assert main(["generate", str(out / "lora"), "hi"]) == 2
    assert "is a classifier (seq-cls), which does not generate text" in capsys.readouterr().err


def test_head_is_refused_for_a_language_model(tiny_llama, labelled, tmp_path, capsys):
    code = main(["compare", "--model", str(tiny_llama), "--data", str(labelled), "--methods", "head", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "method 'head' does not support the task 'causal-lm'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_answer_match_on_plain_text_is_refused(tiny_llama, text_file, tmp_path, capsys):
    code = main(["compare", "--model", str(tiny_llama), "--data", str(text_file), "--methods", "lora", "--answer-match", "exact", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--answer-match exact needs prompts and reference answers" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_plain_text_compare_lowers_perplexity(tiny_llama, text_file, tmp_path):
    config = RunConfig(model=str(tiny_llama), data=str(text_file), methods=["full"], max_length=32, max_steps=20, lr=1e-2, out=str(tmp_path / "run"))
    results = compare(config, quiet=True)
    run = results["runs"][0]
    assert results["metric"] == {"name": "perplexity", "label": "perplexity", "higher_is_better": False}
    assert "exact_match" not in run["metrics"]["after"]
    assert "examples" not in run
    assert run["metrics"]["after"]["perplexity"] < run["metrics"]["before"]["perplexity"] / 10  # a repeated sentence is easy to learn


def test_prompt_response_with_short_answers_is_scored(tiny_llama, pairs, tmp_path):
    results = compare(RunConfig(model=str(tiny_llama), data=str(pairs), methods=["lora"], max_steps=1, out=str(tmp_path / "run")), quiet=True)
    assert results["data"]["kind"] == "prompt-response"
    assert results["data"]["answer_match"] == "exact"


def test_text_model_continues_the_prompt_as_is(tiny_llama, text_file, tmp_path):
    compare(RunConfig(model=str(tiny_llama), data=str(text_file), methods=["lora"], max_length=32, max_steps=1, out=str(tmp_path / "run")), quiet=True)
    artifact = load_artifact(tmp_path / "run" / "lora")
    ids = artifact.tokenizer("the cat sat", add_special_tokens=False)["input_ids"]
    expected = generate_batched(artifact.model, artifact.tokenizer, [ids], 5, 1, quiet=True)[0]
    assert generate(str(tmp_path / "run" / "lora"), ["the cat sat"], max_new_tokens=5) == [{"prompt": "the cat sat", "response": expected}]


def test_eval_of_first_rows_matches_recorded_examples(labelled_run):
    out, results = labelled_run
    run = next(r for r in results["runs"] if r["method"] == "lora")
    metrics = evaluate_artifact(str(out / "lora"), max_eval_samples=3)
    expected = sum(is_match(e["generated"], e["reference"], "exact") for e in run["examples"]["after"]) / 3
    assert metrics["exact_match"] == expected


def test_eval_rejects_zero_rows(labelled_run, capsys):
    out, _ = labelled_run
    assert main(["eval", str(out / "lora"), "--max-eval-samples", "0"]) == 2
    assert "--max-eval-samples must be a positive integer, got 0" in capsys.readouterr().err
