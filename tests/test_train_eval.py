"""Train, compare, eval and predict end to end on a tiny random BERT (seconds), checking files and exact reloads."""

import json
import subprocess
import sys

import pytest
import torch

from peftlab import RunConfig
from peftlab.artifacts import load_artifact
from peftlab.runner import compare, evaluate_artifact, predict


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("data")
    rows = [("great film, loved it", "positive"), ("dull and far too long", "negative"), ("wonderful and moving", "positive"), ("a waste of an evening", "negative")]
    (folder / "train.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows * 5))
    (folder / "test.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    config = RunConfig(model=str(tiny_bert), data=str(folder), methods=["full", "head", "lora"], max_steps=3, batch_size=4, out=str(out))
    results = compare(config, quiet=True)
    return out, results


def test_results_json_schema(tiny_run):
    out, results = tiny_run
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert set(saved) >= {"model", "data", "environment", "runs", "config"}
    assert saved["data"]["label_names"] == ["negative", "positive"]
    assert saved["data"]["splits"] == {"train": 18, "validation": 2, "test": 4}
    assert set(saved["environment"]["packages"]) >= {"torch", "transformers", "peft", "datasets"}
    assert [run["method"] for run in saved["runs"]] == ["full", "head", "lora"]
    for run in saved["runs"]:
        assert run["status"] == "ok"
        assert set(run["params"]) == {"base_params", "trainable_params", "added_params", "trainable_pct"}
        for when in ("before", "after"):
            assert set(run["metrics"][when]) == {"accuracy", "f1_macro", "loss"}
        assert run["train_steps"] == 3
        assert run["path"] == run["method"]
        assert run["artifact_bytes"] == sum(p.stat().st_size for p in (out / run["path"]).rglob("*") if p.is_file())


def test_same_head_same_before_numbers(tiny_run):
    _, results = tiny_run
    befores = {json.dumps(run["metrics"]["before"]) for run in results["runs"]}
    assert len(befores) == 1  # LoRA starts as the identity, and every method gets the same seeded head


def test_artifact_files(tiny_run):
    out, _ = tiny_run
    assert {p.name for p in (out / "lora").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "peftlab.json"}
    assert {p.name for p in (out / "full").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "peftlab.json"}
    assert not list(out.glob(".*"))  # no scratch or temporary folders left behind


@pytest.mark.parametrize("method", ["full", "head", "lora"])
def test_eval_reproduces_recorded_metrics(tiny_run, method):
    out, results = tiny_run
    run = next(r for r in results["runs"] if r["method"] == method)
    metrics = evaluate_artifact(str(out / run["path"]))
    assert metrics["accuracy"] == run["metrics"]["after"]["accuracy"]
    assert metrics["f1_macro"] == run["metrics"]["after"]["f1_macro"]
    assert metrics["loss"] == pytest.approx(run["metrics"]["after"]["loss"], abs=1e-6)


def test_eval_in_new_process_matches(tiny_run):
    out, results = tiny_run
    lora = next(r for r in results["runs"] if r["method"] == "lora")
    done = subprocess.run([sys.executable, "-m", "peftlab", "eval", str(out / "lora"), "--json"], capture_output=True, text=True, check=True)
    metrics = json.loads(done.stdout)
    assert metrics["accuracy"] == lora["metrics"]["after"]["accuracy"]
    assert metrics["loss"] == pytest.approx(lora["metrics"]["after"]["loss"], abs=1e-6)


def test_loading_twice_gives_identical_logits(tiny_run):
    out, _ = tiny_run
    batch = None
    logits = []
    for _ in range(2):
        artifact = load_artifact(out / "lora")
        batch = artifact.tokenizer(["great film", "dull film"], return_tensors="pt", padding=True)
        with torch.no_grad():
            logits.append(artifact.model(**batch).logits)
    assert torch.equal(logits[0], logits[1])


def test_adapter_loads_with_plain_peft(tiny_run, tiny_bert):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    out, _ = tiny_run
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    plain = PeftModel.from_pretrained(base, out / "lora").eval()
    ours = load_artifact(out / "lora")
    batch = ours.tokenizer(["great film", "dull film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, ours.model(**batch).logits, rtol=0, atol=0)


def test_full_model_loads_with_plain_transformers(tiny_run):
    from transformers import AutoModelForSequenceClassification

    out, _ = tiny_run
    model = AutoModelForSequenceClassification.from_pretrained(out / "full")
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_predict_returns_label_names(tiny_run):
    out, _ = tiny_run
    predictions = predict(str(out / "head"), ["great film", "a waste of an evening"])
    assert [p["text"] for p in predictions] == ["great film", "a waste of an evening"]
    for p in predictions:
        assert p["label"] in ("negative", "positive")
        assert p["probability"] == max(p["probabilities"].values())
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
