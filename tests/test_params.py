"""Parameter accounting: exact counts on the real MiniLM and on hand-built modules."""

import pytest
import torch
from torch import nn

from peftlab import RunConfig
from peftlab.params import base_param_ids, count_unique, param_report
from peftlab.runner import count_params

# all-MiniLM-L6-v2: 6 layers, hidden size 384; with a 2-label head (384 * 2 weights + 2 biases).
MINILM_ENCODER = 22_713_216
HEAD_2 = 384 * 2 + 2
LAYERS, HIDDEN = 6, 384


def _report(methods, **kwargs):
    return {r["method"]: r for r in count_params(config=RunConfig(methods=methods, **kwargs))}


def test_minilm_base_params_exact():
    reports = _report(["full", "head"])
    assert reports["full"]["base_params"] == MINILM_ENCODER + HEAD_2
    assert reports["head"]["base_params"] == MINILM_ENCODER + HEAD_2


def test_full_trains_everything_adds_nothing():
    full = _report(["full"])["full"]
    assert full["trainable_params"] == full["base_params"]
    assert full["added_params"] == 0
    assert full["trainable_pct"] == 100.0


def test_head_trains_only_classifier():
    head = _report(["head"])["head"]
    assert head["trainable_params"] == HEAD_2
    assert head["added_params"] == 0
    assert [m["name"] for m in head["modules"]] == ["classifier"]


@pytest.mark.parametrize("r", [1, 8, 16])
def test_lora_counts_match_formula(r):
    lora = _report(["lora"], lora_r=r)["lora"]
    adapters = LAYERS * 3 * r * (HIDDEN + HIDDEN)  # query, key, value: A is r x 384, B is 384 x r
    assert lora["added_params"] == adapters
    assert lora["trainable_params"] == adapters + HEAD_2
    assert lora["trainable_pct"] == round(100 * (adapters + HEAD_2) / (MINILM_ENCODER + HEAD_2), 4)


def test_lora_trainable_equals_peft_report(minilm_path):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, target_modules=["query", "value"]))
    peft_trainable, _ = peft_model.get_nb_trainable_parameters()

    ours = _report(["lora"], target_modules=["query", "value"])["lora"]
    assert ours["trainable_params"] == peft_trainable


def test_lora_modules_breakdown_folds_layers():
    lora = _report(["lora"], target_modules=["query"], lora_r=4)["lora"]
    by_name = {m["name"]: m for m in lora["modules"]}
    assert by_name["bert.encoder.layer.*.attention.self.query.lora_A"] == {
        "name": "bert.encoder.layer.*.attention.self.query.lora_A", "count": 6, "trainable_params": 6 * 4 * 384,
    }
    assert by_name["classifier"]["trainable_params"] == HEAD_2
    assert sum(m["trainable_params"] for m in lora["modules"]) == lora["trainable_params"]


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight  # tied: one tensor, two modules


def test_tied_weights_counted_once():
    assert count_unique(_Tied()) == 40


def test_frozen_original_and_trainable_copy_not_double_counted():
    from peft import LoraConfig, get_peft_model

    model = nn.Sequential()
    model.add_module("body", nn.Linear(4, 4))
    model.add_module("classifier", nn.Linear(4, 2))
    base, ids = count_unique(model), base_param_ids(model)
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=["body"], modules_to_save=["classifier"]))
    report = param_report(adapted, base, ids)
    assert report.base_params == 30
    assert report.added_params == 2 * 4 + 4 * 2
    assert report.trainable_params == 16 + 10  # the adapter and one copy of the head, not the frozen original
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == report.trainable_params
    torch.testing.assert_close(report.trainable_pct, round(100 * 26 / 30, 4))
