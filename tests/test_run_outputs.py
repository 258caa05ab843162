"""What a tiny compare run leaves besides results.json: reports, config.yaml, model cards, TensorBoard events, terminal lines."""

import csv
import io
import json
import re
import subprocess
import sys

import pytest

from peftlab import RunConfig
from peftlab.cli import main
from peftlab.config_file import read_config_file
from peftlab.plots import PLOT_FILES
from peftlab.runner import compare

METHODS = ["full", "lora"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rows = [("great film, loved it", "positive"), ("dull and far too long", "negative"), ("wonderful and moving", "positive"), ("a waste of an evening", "negative")]
    (folder / "train.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows * 5))
    (folder / "test.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert, tiny_data):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    config = RunConfig(
        model=str(tiny_bert), data=str(tiny_data), methods=METHODS, max_steps=3, batch_size=4, out=str(out), report_to="tensorboard"
    )
    results = compare(config, quiet=True)
    return out, results


@pytest.fixture(scope="module")
def rerun(tiny_run, tmp_path_factory):
    """The same run again through the command line, from the config.yaml that the first run saved."""
    out, _ = tiny_run
    new = tmp_path_factory.mktemp("runs") / "again"
    capture = pytest.MonkeyPatch()  # capsys is function-scoped, but this fixture runs once per module
    stdout, stderr = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", stdout)
    capture.setattr(sys, "stderr", stderr)
    try:
        code = main(["compare", "--config", str(out / "config.yaml"), "--out", str(new)])
    finally:
        capture.undo()
    return new, code, stdout.getvalue(), stderr.getvalue()


def test_reports_written_next_to_results(tiny_run):
    out, results = tiny_run
    for name in ["results.csv", "report.md", "report.html", *PLOT_FILES.values()]:
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["method"] for row in rows] == METHODS
    assert [float(row["after_accuracy"]) for row in rows] == [run["metrics"]["after"]["accuracy"] for run in results["runs"]]
    assert len(re.findall(r'<img src="data:image/png;base64,', (out / "report.html").read_text())) == len(PLOT_FILES)


def test_config_yaml_saved(tiny_run, tiny_bert, tiny_data):
    out, _ = tiny_run
    saved = read_config_file(out / "config.yaml")
    assert "out" not in saved
    assert saved["model"] == str(tiny_bert)
    assert saved["data"] == str(tiny_data)
    assert saved["methods"] == METHODS
    assert saved["max_steps"] == 3
    assert saved["report_to"] == "tensorboard"


def test_rerun_from_config_repeats_results(tiny_run, rerun):
    out, results = tiny_run
    new, code, _, _ = rerun
    assert code == 0
    again = json.loads((new / "results.json").read_text())
    assert again["config"] == results["config"] | {"out": str(new)}
    for first, second in zip(results["runs"], again["runs"]):
        assert second["method"] == first["method"]
        assert second["params"] == first["params"]
        assert second["metrics"]["before"] == first["metrics"]["before"]
        assert second["metrics"]["after"]["accuracy"] == first["metrics"]["after"]["accuracy"]
        assert second["metrics"]["after"]["loss"] == pytest.approx(first["metrics"]["after"]["loss"], abs=1e-5)


def test_terminal_one_line_per_stage(rerun, tiny_bert):
    new, _, stdout, stderr = rerun
    lines = stderr.splitlines()
    assert any(line.startswith(f"model {tiny_bert}: bert") for line in lines)
    assert any(line.startswith("data ") and line.endswith("train 18, validation 2, test 4; 2 labels (negative, positive)") for line in lines)
    assert any(re.fullmatch(r"device cpu, \d+ torch threads on \d+ CPUs", line) for line in lines)
    assert any(re.match(r"lora: 3,\d{3} of [\d,]+ parameters train \([\d.]+%\), [\d,]+ added", line) for line in lines)
    assert any(line.startswith("full: test accuracy ") for line in lines)
    table = stdout.splitlines()
    assert table[0].startswith("method  trainable")
    assert set(table[1]) <= {"-", " "}
    assert [line.split()[0] for line in table[2:4]] == METHODS
    f1 = json.loads((new / "results.json").read_text())["runs"][0]["metrics"]["after"]["f1_macro"]
    assert table[2][table[0].index("macro-F1"):].startswith(f"{f1:.4f}")  # the column lines up under its header
    assert f"report:  {new}/report.html" in table


def test_quiet_prints_only_the_table(tiny_bert, tiny_data, tmp_path, capsys):
    code = main(["--quiet", "train", "--method", "head", "--model", str(tiny_bert), "--data", str(tiny_data), "--max-steps", "1", "--batch-size", "4", "--out", str(tmp_path / "q")])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == ""
    assert captured.out.startswith("method  trainable")


def test_tensorboard_event_files(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = tiny_run
    for method in METHODS:
        events = list((out / "tensorboard" / method).glob("events.out.tfevents.*"))
        assert len(events) == 1, method
        accumulator = EventAccumulator(str(events[0].parent))
        accumulator.Reload()
        assert "train/loss" in accumulator.Tags()["scalars"]
        assert [event.step for event in accumulator.Scalars("train/loss")] == [1, 2, 3]
    assert not list(out.glob(".trainer-*"))  # the event files are not in the deleted scratch folder


def test_no_tensorboard_by_default(tiny_bert, tiny_data, tmp_path):
    out = tmp_path / "plain"
    compare(RunConfig(model=str(tiny_bert), data=str(tiny_data), methods=["head"], max_steps=1, batch_size=4, out=str(out)), quiet=True)
    assert not (out / "tensorboard").exists()


@pytest.mark.parametrize("method", METHODS)
def test_model_card_contents(tiny_run, tiny_bert, method):
    out, results = tiny_run
    run = next(r for r in results["runs"] if r["method"] == method)
    card = (out / method / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: " + ("peft" if method == "lora" else "transformers"))
    assert f"# {method} fine-tune of {tiny_bert} for text classification" in card
    assert f"| trainable | {run['params']['trainable_params']:,} (" in card
    assert f"| base model with its classification head | {run['params']['base_params']:,} |" in card
    assert "| labels | 2: 0 = negative, 1 = positive |" in card
    after = run["metrics"]["after"]
    assert f"| after training | {after['accuracy']:.4f} | {after['f1_macro']:.4f} | {after['loss']:.4f} |" in card
    assert "| optimizer steps | 3 |" in card
    if method == "lora":
        assert "| r | 8 |" in card
        assert "| target_modules | key, query, value |" in card
        assert "num_labels=len(labels)" in card


@pytest.mark.parametrize("method", METHODS)
def test_model_card_code_runs(tiny_run, method):
    out, _ = tiny_run
    card = (out / method / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("negative", "positive")
