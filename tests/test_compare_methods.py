"""compare with --methods all, method names and options on the command line, and the `peftlab methods` listing."""

import json

import pytest
import torch

from peftlab import RunConfig
from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.methods import all_method_names, expand_all, get_method
from peftlab.reporting import comparison_table
from peftlab.runner import compare, evaluate_artifact, resolve_methods

ROWS = [
    ("great film, loved it", "positive"), ("dull and far too long", "negative"),
    ("wonderful and moving", "positive"), ("a waste of an evening", "negative"),
]


@pytest.fixture(scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny BERT gains nothing from a second thread, and a busy machine makes it wait
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "train.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in ROWS * 4))
    (folder / "test.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in ROWS))
    return folder


@pytest.fixture(scope="module")
def all_run(tmp_path_factory, tiny_bert, tiny_data, one_torch_thread):
    out = tmp_path_factory.mktemp("runs") / "all"
    code = main(["-q", "compare", "--model", str(tiny_bert), "--data", str(tiny_data), "--methods", "all", "--max-steps", "2", "--batch-size", "4", "--out", str(out)])
    return code, out, json.loads((out / "results.json").read_text())


# ---------------------------------------------------------------------------
# --methods all


def test_all_exits_0_with_skipped_methods(all_run):
    code, _, _ = all_run
    assert code == 0


def test_all_runs_every_method_in_registry_order(all_run):
    _, _, results = all_run
    assert [run["method"] for run in results["runs"]] == all_method_names()


def test_all_records_skipped_method_with_reason(all_run):
    _, out, results = all_run
    runs = {run["method"]: run for run in results["runs"]}
    assert set(runs["prefix-tuning"]) == {"method", "status", "reason"}
    assert runs["prefix-tuning"]["status"] == "skipped"
    assert runs["prefix-tuning"]["reason"].startswith("prefix-tuning cannot train BertForSequenceClassification: peft ")
    assert not (out / "prefix-tuning").exists()
    assert [name for name, run in runs.items() if run["status"] != "ok"] == ["prefix-tuning"]


@pytest.mark.parametrize("method", [m for m in all_method_names() if m != "prefix-tuning"])
def test_eval_reproduces_recorded_accuracy(all_run, method):
    _, out, results = all_run
    run = next(r for r in results["runs"] if r["method"] == method)
    metrics = evaluate_artifact(str(out / run["path"]))
    assert metrics["accuracy"] == run["metrics"]["after"]["accuracy"]
    assert metrics["loss"] == pytest.approx(run["metrics"]["after"]["loss"], abs=1e-5)


def test_adalora_schedule_fitted_to_trainer_steps(all_run):
    _, out, results = all_run
    run = next(r for r in results["runs"] if r["method"] == "adalora")
    config = json.loads((out / "adalora" / "adapter_config.json").read_text())
    assert run["train_steps"] == 2
    assert config["total_step"] == 2
    assert config["target_r"] == 8
    assert config["init_r"] == 12


def test_table_lists_skipped_reason_below(all_run):
    _, _, results = all_run
    table = comparison_table(results)
    row = next(line for line in table.splitlines() if line.startswith("prefix-tuning "))
    assert "skipped (see below)" in row
    assert table.splitlines()[-1].startswith("prefix-tuning skipped: prefix-tuning cannot train BertForSequenceClassification")


# ---------------------------------------------------------------------------
# Named methods are checked strictly


def test_named_method_that_cannot_apply_exits_2_and_writes_nothing(tiny_bert, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["compare", "--model", str(tiny_bert), "--data", str(tiny_data), "--methods", "lora,prefix-tuning", "--out", str(out)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith("error: prefix-tuning cannot train BertForSequenceClassification")
    assert not out.exists()


def test_unknown_method_arg_lists_valid_keys():
    with pytest.raises(PeftlabError, match=r"--method-arg 'rank' is not an option of lora, vera; valid keys are d_initial, vera_r"):
        resolve_methods(RunConfig(methods=["lora", "vera"], method_args={"rank": "4"}))


def test_method_arg_goes_to_methods_that_take_it():
    resolved = dict((m.name, options) for m, options in resolve_methods(RunConfig(methods=["all"], method_args={"num_virtual_tokens": "8"})))
    assert resolved["prompt-tuning"]["num_virtual_tokens"] == 8
    assert resolved["p-tuning"]["num_virtual_tokens"] == 8
    assert resolved["lora"] == {}


def test_method_arg_of_wrong_type_rejected():
    with pytest.raises(PeftlabError, match="option 'vera_r' of method 'vera' must be int, got 'many'"):
        resolve_methods(RunConfig(methods=["vera"], method_args={"vera_r": "many"}))


# ---------------------------------------------------------------------------
# Names


def test_expand_all_keeps_named_methods_in_place():
    names, from_all = expand_all(["head", "all"])
    assert names[0] == "head"
    assert names.count("head") == 1
    assert set(names[1:]) == from_all
    assert "top-layers:2" in from_all


@pytest.mark.parametrize("count", [1, 2, 12])
def test_top_layers_name_parsed(count):
    method = get_method(f"top-layers:{count}")
    assert method.name == f"top-layers:{count}"
    assert method.saves_adapter is False


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("top-layers", "method 'top-layers' needs a parameter: top-layers:N, for example top-layers:2"),
        ("top-layers:0", "top-layers:N needs a positive whole number of blocks, got '0'; for example top-layers:2"),
        ("top-layers:two", "top-layers:N needs a positive whole number of blocks, got 'two'"),
        ("lora:2", "unknown method 'lora:2'; valid methods are adalora, bitfit"),
    ],
)
def test_bad_method_name_rejected(name, message):
    with pytest.raises(PeftlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_method(name)


def test_methods_command_lists_every_method(capsys):
    assert main(["methods"]) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line for line in printed.splitlines() if line and not line.startswith(" ")}
    for name in all_method_names():
        listed = "top-layers:N" if name.startswith("top-layers:") else name
        assert listed in rows, listed
        assert f"{get_method(name).default_lr:g}" in rows[listed]
    assert "  adalora init_r=12: Rank every adapted layer starts with" in printed
    assert "  vera vera_r=256:" in printed


# ---------------------------------------------------------------------------
# Every method once on the real MiniLM


@pytest.fixture(scope="module")
def minilm_all_run(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("runs") / "minilm-all"
    results = compare(RunConfig(data=str(tiny_data), methods=["all"], max_steps=2, batch_size=4, out=str(out)), quiet=True)
    return out, results


@pytest.mark.slow
def test_minilm_every_method_trains_or_is_skipped(minilm_all_run):
    _, results = minilm_all_run
    statuses = {run["method"]: run["status"] for run in results["runs"]}
    assert statuses == {name: "skipped" if name == "prefix-tuning" else "ok" for name in all_method_names()}
    for run in results["runs"]:
        if run["status"] == "ok":
            assert run["train_steps"] == 2, run["method"]
            assert 0 < run["params"]["trainable_params"] <= run["params"]["base_params"] + run["params"]["added_params"], run["method"]


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in all_method_names() if m != "prefix-tuning"])
def test_minilm_eval_reproduces_recorded_accuracy(minilm_all_run, method):
    out, results = minilm_all_run
    run = next(r for r in results["runs"] if r["method"] == method)
    metrics = evaluate_artifact(str(out / run["path"]))
    assert metrics["accuracy"] == run["metrics"]["after"]["accuracy"]
    assert metrics["loss"] == pytest.approx(run["metrics"]["after"]["loss"], abs=1e-5)
