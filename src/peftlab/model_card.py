"""The README.md model card of a saved artifact: what was trained, on what, how well, and how to load it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from peftlab.models import MODEL_ALIASES

# adapter_config.json keys the card shows when present, in this order: the settings of the peft
# methods peftlab registers. Other keys are peft defaults or bookkeeping (paths, versions).
ADAPTER_KEYS = (
    "peft_type", "task_type",
    # LoRA and its variants (DoRA, rsLoRA, PiSSA, OLoRA), AdaLoRA
    "r", "lora_alpha", "lora_dropout", "use_dora", "use_rslora", "init_lora_weights", "bias",
    "init_r", "target_r", "tinit", "tfinal", "deltaT", "total_step",
    # LoHa, LoKr, VeRA, FourierFT, OFT, BOFT, IA3
    "alpha", "rank_dropout", "module_dropout", "decompose_factor", "d_initial", "vera_dropout", "n_frequency", "scaling",
    "oft_block_size", "boft_block_size", "boft_block_num", "boft_n_butterfly_factor", "feedforward_modules",
    # prompt tuning, P-tuning, prefix tuning
    "num_virtual_tokens", "prompt_tuning_init", "encoder_reparameterization_type", "encoder_hidden_size", "prefix_projection",
    # where the method applies
    "target_modules", "modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern",
)


def model_card(meta: dict, folder: Path, adapter_config: dict | None = None) -> str:
    """Return the model card text for an artifact described by ``meta`` (peftlab.json) that will live in ``folder``."""
    sections = [
        _front_matter(meta, adapter_config),
        f"# {meta['method']} fine-tune of {meta['model']} for {'text generation' if _causal(meta) else 'text classification'}",
        f"Trained with peftlab {meta.get('peftlab_version', '?')} using the method `{meta['method']}` on the data `{meta['data']}`.",
        "## Base model and method\n\n" + _table(_model_rows(meta)),
        "## Method settings\n\n" + _table(_settings_rows(meta, adapter_config)),
        "## Parameters\n\n" + _table(_param_rows(meta)),
        "## Data\n\n" + _table(_data_rows(meta)),
        "## Metrics\n\n" + _metrics_section(meta),
        "## How to load\n\n" + _load_section(meta, folder),
    ]
    return "\n\n".join(sections) + "\n"


def _front_matter(meta: dict, adapter_config: dict | None) -> str:
    header = {
        "library_name": "peft" if meta.get("adapter") else "transformers",
        "pipeline_tag": "text-generation" if _causal(meta) else "text-classification",
        "tags": ["peftlab", meta["method"]],
    }
    peft_type = (adapter_config or {}).get("peft_type")
    if peft_type and peft_type.lower() not in header["tags"]:
        header["tags"].append(peft_type.lower())
    if meta["model"] not in MODEL_ALIASES and not Path(meta.get("base_model_path", "")).is_absolute():
        header["base_model"] = meta["model"]  # a hub id: local folders and aliases have no hub id to link
    return "---\n" + yaml.safe_dump(header, sort_keys=False).rstrip() + "\n---"


def _causal(meta: dict) -> bool:
    return meta.get("task") == "causal-lm"


def _model_rows(meta: dict) -> list[tuple[str, str]]:
    alias = MODEL_ALIASES.get(meta["model"])
    base = f"{meta['model']}: {alias.description}, from the PyPI package {alias.pip_name}" if alias else meta["model"]
    if meta.get("adapter"):
        held = "" if _causal(meta) else " that also holds the trained classification head"
        saved = f"a peft adapter (adapter_config.json, adapter_model.safetensors){held}"
    elif meta.get("merged_from"):
        saved = f"a complete transformers model folder: the adapter `{meta['merged_from']}` merged into the base weights"
    else:
        saved = "a complete transformers model folder (config.json, model.safetensors, tokenizer)"
    rows = [
        ("base model", base),
        ("base model path when trained", f"`{meta.get('base_model_path', '-')}`"),
        ("method", meta["method"]),
        ("this folder", saved),
    ]
    labels = meta.get("label_names")
    if labels:
        rows.append(("labels", f"{len(labels)}: " + ", ".join(f"{i} = {name}" for i, name in enumerate(labels))))
    return rows


def _settings_rows(meta: dict, adapter_config: dict | None) -> list[tuple[str, str]]:
    rows = []
    if meta.get("lr") is not None:
        rows.append(("learning rate", f"{meta['lr']:g}"))
    if meta.get("train_steps") is not None:
        rows.append(("optimizer steps", str(meta["train_steps"])))
    rows.append(("seed", str(meta.get("seed", "-"))))
    for key, value in (meta.get("options") or {}).items():
        rows.append((f"option {key}", _value(value)))
    for key in ADAPTER_KEYS:
        if adapter_config and adapter_config.get(key) not in (None, {}, []):
            rows.append((key, _value(adapter_config[key])))
    return rows


def _param_rows(meta: dict) -> list[tuple[str, str]]:
    params = meta.get("params") or {}
    if not params:
        return [("parameters", "not recorded")]
    return [
        ("base model" if _causal(meta) else "base model with its classification head", f"{params['base_params']:,}"),
        ("trainable", f"{params['trainable_params']:,} ({params['trainable_pct']:.4g}% of the base)"),
        ("added by the method", f"{params['added_params']:,}"),
    ]


def _data_rows(meta: dict) -> list[tuple[str, str]]:
    rows = [("data", "the built-in demo data of peftlab" if meta["data"] == "demo" else f"`{meta['data']}`")]
    if _causal(meta):
        rows.append(("shape", str(meta.get("data_kind", "-"))))
        rows += [(f"{role} column", column) for role, column in (meta.get("columns") or {}).items()]
        if meta.get("prompt_template"):
            rows.append(("prompt template", f"`{json.dumps(meta['prompt_template'])}`"))
        rows.append(("answers scored by", f"{meta.get('answer_match', 'none')} match"))
    else:
        rows += [("text column", str(meta.get("text_column", "-"))), ("label column", str(meta.get("label_column", "-")))]
    rows.append(("maximum length", f"{meta.get('max_length', '-')} tokens"))
    return rows


def _metrics_section(meta: dict) -> str:
    metrics = meta.get("metrics") or {}
    split = meta.get("eval_split", "evaluation")
    names = ("accuracy", "f1_macro", "loss") if meta.get("task", "seq-cls") == "seq-cls" else ("exact_match", "loss", "perplexity")
    shown = [n for n in names if any(n in (metrics.get(when) or {}) for when in ("before", "after"))]
    labels = {"f1_macro": "macro-F1", "exact_match": "exact match"}
    lines = [
        f"Measured on the {split} split before and after training.",
        "",
        "| | " + " | ".join(labels.get(n, n) for n in shown) + " |",
        "| --- |" + " --- |" * len(shown),
    ]
    for when in ("before", "after"):
        values = metrics.get(when)
        if values:
            lines.append(f"| {when} training | " + " | ".join(f"{values[n]:.4f}" if n in values else "-" for n in shown) + " |")
    return "\n".join(lines)


def _load_section(meta: dict, folder: Path) -> str:
    if _causal(meta):
        return _load_lm_section(meta, folder)
    labels = meta["label_names"]
    if meta.get("adapter"):
        code = "\n".join([
            "import torch",
            "from peft import PeftModel",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            *_base_lines(meta),
            f"labels = {json.dumps(labels)}",
            "# The head is inside the adapter; the base model needs a head of the same size, so give the label count.",
            "model = AutoModelForSequenceClassification.from_pretrained(",
            "    base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)}",
            ")",
            f"model = PeftModel.from_pretrained(model, {json.dumps(str(folder))}).eval()",
            "tokenizer = AutoTokenizer.from_pretrained(base)",
        ])
    else:
        code = "\n".join([
            "import torch",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            f"model = AutoModelForSequenceClassification.from_pretrained({json.dumps(str(folder))}).eval()",
            f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(str(folder))})",
        ])
    code += "\n\n" + "\n".join([
        f'inputs = tokenizer(["a gripping, funny film"], truncation=True, max_length={meta.get("max_length", 128)}, return_tensors="pt")',
        "with torch.no_grad():",
        "    predicted = model(**inputs).logits.argmax(dim=-1).item()",
        "print(model.config.id2label[predicted])",
    ])
    intro = (
        f"With plain peft and transformers ({len(labels)} labels):"
        if meta.get("adapter")
        else "With plain transformers (the label names are in config.json):"
    )
    return f"{intro}\n\n```python\n{code}\n```\n\nWith peftlab: `peftlab predict {folder} \"a gripping, funny film\"`."


def _load_lm_section(meta: dict, folder: Path) -> str:
    alias = MODEL_ALIASES.get(meta["model"])
    extra = f", gguf_file={json.dumps(alias.gguf_file)}" if alias and alias.gguf_file else ""
    lines = ["import torch", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if meta.get("adapter"):
        lines[1:1] = ["from peft import PeftModel"]
        lines += [
            "",
            *_base_lines(meta),
            f"model = AutoModelForCausalLM.from_pretrained(base{extra}, dtype=torch.float32)",
            f"model = PeftModel.from_pretrained(model, {json.dumps(str(folder))}).eval()",
            f"tokenizer = AutoTokenizer.from_pretrained(base{extra})",
        ]
    else:
        lines += [
            "",
            f"model = AutoModelForCausalLM.from_pretrained({json.dumps(str(folder))}).eval()",
            f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(str(folder))})",
        ]
    lines += [
        "",
        'messages = [{"role": "user", "content": "Name three colours."}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        "output = model.generate(**inputs, max_new_tokens=32, do_sample=False)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    code = "\n".join(lines)
    intro = "With plain peft and transformers:" if meta.get("adapter") else "With plain transformers:"
    return f"{intro}\n\n```python\n{code}\n```\n\nWith peftlab: `peftlab generate {folder} \"Name three colours.\"`."


def _base_lines(meta: dict) -> list[str]:
    alias = MODEL_ALIASES.get(meta["model"])
    if alias is not None:
        where = f'files("{alias.package}") / "{alias.subpath}"' if alias.subpath else f'files("{alias.package}")'
        flags = f"{alias.pip_flags}{alias.pip_name}"
        return [
            "from importlib.resources import files",
            "",
            f"base = str({where})  # pip install {flags}",
        ]
    return [f"base = {json.dumps(meta.get('base_model_path', meta['model']))}"]


def _value(value) -> str:
    if isinstance(value, (list, tuple, set)):
        return ", ".join(sorted({str(item) for item in value})) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {name} | {str(value).replace('|', chr(92) + '|')} |" for name, value in rows]
    return "\n".join(lines)
