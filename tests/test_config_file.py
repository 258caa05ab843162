"""--config experiment.yaml: keys with dashes or underscores, type conversion, command-line overrides, saved settings."""

import dataclasses

import pytest

from peftlab import RunConfig
from peftlab.cli import _run_config, build_parser, main
from peftlab.config import config_fields
from peftlab.config_file import read_config_file, write_config_file
from peftlab.errors import PeftlabError


def _write(tmp_path, text, name="experiment.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _config(argv):
    return _run_config(build_parser().parse_args(argv))


def test_every_field_has_a_file_key(tmp_path):
    values = {
        "model": "minilm", "data": "d.csv", "text-column": "body", "label_column": "stars", "label-names": "neg,pos",
        "validation-fraction": 0.2, "max_length": 64, "methods": ["head", "lora"], "lora-r": 4, "lora_alpha": 8,
        "lora-dropout": 0.1, "target_modules": "query,value", "method-args": {"use_dora": True}, "epochs": 2,
        "max-steps": 5, "lr": "1e-3", "batch_size": 8, "eval-batch-size": 16, "weight_decay": 0.01,
        "warmup-ratio": 0.1, "seed": 7, "out": "runs/x", "report-to": "tensorboard",
        "task": "causal-lm", "prompt-column": "question", "response_column": "answer", "prompt-template": "Q: {text}",
        "answer-match": "number", "max_new_tokens": 32, "max-eval-samples": 100, "save-steps": 10, "resume": True,
        "overwrite": False, "allow-pickle": True, "trust_remote_code": False, "precision": "bf16", "quantize": "4bit",
    }
    keys = {key.replace("-", "_") for key in values}
    assert keys == {f.name for f in config_fields()}  # this test lists every RunConfig field
    path = _write(tmp_path, "\n".join(f"{key}: {value!r}" if isinstance(value, str) else f"{key}: {value}" for key, value in values.items()))
    config = RunConfig(**read_config_file(path))
    assert config.text_column == "body"
    assert config.label_names == ["neg", "pos"]
    assert config.methods == ["head", "lora"]
    assert config.target_modules == ["query", "value"]
    assert config.method_args == {"use_dora": True}
    assert config.precision == "bf16"
    assert config.quantize == "4bit"
    assert config.lr == 0.001
    assert config.lora_alpha == 8.0
    assert config.epochs == 2.0
    assert config.max_steps == 5
    assert config.report_to == "tensorboard"
    assert config.save_steps == 10
    assert config.resume is True
    assert config.overwrite is False
    assert config.allow_pickle is True
    assert (config.task, config.prompt_template, config.answer_match, config.max_new_tokens) == ("causal-lm", "Q: {text}", "number", 32)


def test_unknown_key_lists_valid_ones(tmp_path):
    path = _write(tmp_path, "lora-r: 4\nlearning_rate: 0.1\n")
    with pytest.raises(PeftlabError) as error:
        read_config_file(path)
    message = str(error.value)
    assert message.startswith("unknown key 'learning_rate' in config file")
    assert "valid keys are model, task, data, text_column" in message
    assert "lr" in message.split("valid keys are ")[1].split(", ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lora-r: 4.5\n", "'lora_r' in config file"),
        ("lora-r: true\n", "must be an integer, got True"),
        ("lr: fast\n", "'lr' in config file"),
        ("methods: {a: 1}\n", "must be a list of names or a comma-separated string"),
        ("method_args: [a]\n", "must be a mapping of option names to values"),
        ("model: null\n", "must have a value; remove the key to use the default"),
        ("lora-r: 4\nlora_r: 8\n", "sets 'lora_r' twice"),
        ("- lora\n", "must map option names to values, got a list"),
        ("lr: [1\n", "is not valid YAML at line 2"),
    ],
)
def test_invalid_values_rejected(tmp_path, text, expected):
    with pytest.raises(PeftlabError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        read_config_file(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(PeftlabError, match="config file not found"):
        read_config_file(tmp_path / "none.yaml")


def test_empty_file_gives_defaults(tmp_path):
    assert read_config_file(_write(tmp_path, "")) == {}


def test_flags_override_file(tmp_path):
    path = _write(tmp_path, "lora-r: 4\nmax-steps: 9\nmethods: head,lora\nmethod-args: {use_dora: true, use_rslora: true}\n")
    config = _config(["compare", "--config", str(path), "--lora-r", "16", "--method-arg", "use_dora=false"])
    assert config.lora_r == 16
    assert config.max_steps == 9
    assert config.methods == ["head", "lora"]
    assert config.method_args == {"use_dora": "false", "use_rslora": True}


def test_defaults_apply_without_file():
    assert _config(["compare"]) == RunConfig()


def test_train_takes_method_from_file(tmp_path):
    path = _write(tmp_path, "methods: [head]\n")
    assert _config(["train", "--config", str(path)]).methods == ["head"]
    assert _config(["train", "--config", str(path), "--method", "full"]).methods == ["full"]
    assert _config(["train"]).methods == ["lora"]


def test_file_value_checked_like_flag(tmp_path):
    path = _write(tmp_path, "lora-r: 0\n")
    with pytest.raises(PeftlabError, match="--lora-r must be an integer of at least 1, got 0"):
        _config(["compare", "--config", str(path)])


def test_cli_unknown_key_one_line(tmp_path, capsys):
    path = _write(tmp_path, "bogus: 1\n")
    code = main(["compare", "--config", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("error: unknown key 'bogus' in config file")
    assert not (tmp_path / "run").exists()


def test_saved_config_reads_back(tmp_path, small_csv_data):
    config = RunConfig(
        data=str(small_csv_data), methods=["head", "lora"], label_names=None, lora_r=4, target_modules=["query"],
        method_args={"use_dora": "true"}, max_steps=3, lr=2e-3, out=str(tmp_path / "run"), report_to="tensorboard",
    )
    path = write_config_file(config, tmp_path)
    assert path.name == "config.yaml"
    assert path.read_text().startswith("# Settings of this peftlab run. Repeat it with:\n")
    again = RunConfig(**read_config_file(path))
    assert again == dataclasses.replace(config, out=None)


def test_saved_config_makes_local_paths_absolute(tmp_path, small_csv_data, monkeypatch):
    monkeypatch.chdir(small_csv_data.parent)
    config = RunConfig(data=small_csv_data.name)
    again = read_config_file(write_config_file(config, tmp_path))
    assert again["data"] == str(small_csv_data.resolve())
    assert again["model"] == "minilm"  # an alias stays an alias
