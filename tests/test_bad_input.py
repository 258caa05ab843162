"""Bad files, folders and flags: one `error:` line naming the problem, the value and the fix; exit 2; nothing written.

Each case builds its input in a fresh folder, runs the command line in this
process and checks the whole of stderr. tests/test_cli_errors.py and
tests/test_data.py hold the older cases of the same kind.
"""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import save_file
import torch

from peftlab.cli import main
from peftlab.data import load_text_classification

ROWS = [("great film, loved it", "positive"), ("dull and far too long", "negative"), ("wonderful and moving", "positive"), ("a waste of an evening", "negative")]


def _write(folder, name, content) -> str:
    """Write ``content`` (str or bytes) to ``folder / name`` and return the path as a string."""
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _csv(folder, name="train.csv", header="text,label", rows=None, encoding="utf-8"):
    path = folder / name
    body = "".join(f'"{t}",{y}\n' for t, y in (rows or ROWS * 3))
    path.write_bytes((header + "\n" + body).encode(encoding))
    return str(path)


def _jsonl(folder, lines):
    path = folder / "train.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _good_jsonl_lines(count=5):
    return [json.dumps({"text": t, "label": y}) for t, y in (ROWS * 3)[:count]]


def _parquet(folder, table):
    path = folder / "train.parquet"
    pq.write_table(table, path)
    return str(path)


def _previous_run(folder, config=None, data=None):
    """A run folder as compare leaves it, with results.json and a config."""
    out = folder / "previous"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"command": "compare", "config": config or {}, "data": data or {}, "runs": []}))
    return out


def _corrupt_previous_run(folder) -> str:
    out = _previous_run(folder)
    (out / "results.json").write_text('{"runs": [')  # cut off mid-write, as an old non-atomic writer could leave it
    return str(out)


def _default_config(model):
    from peftlab import RunConfig

    return json.loads(json.dumps(RunConfig(model=str(model), task="seq-cls").to_dict()))  # as prepare resolves it


def _adapter_artifact(folder, base, **meta_changes):
    artifact = folder / "lora"
    artifact.mkdir()
    meta = {"adapter": True, "method": "lora", "model": str(base), "base_model_path": str(base), "label_names": ["negative", "positive"], "seed": 42}
    (artifact / "peftlab.json").write_text(json.dumps(meta | meta_changes))
    (artifact / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(base)}))
    save_file({"x": torch.zeros(1)}, artifact / "adapter_model.safetensors")
    return artifact


def _model_folder(folder, tiny_bert, name, change):
    """A copy of the tiny BERT's config and tokenizer with ``change`` applied to the folder."""
    model = folder / name
    model.mkdir()
    for file in tiny_bert.iterdir():
        if file.name != "model.safetensors":
            (model / file.name).write_bytes(file.read_bytes())
    change(model)
    return str(model)


def _add_auto_map(model):
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_custom.CustomConfig"}
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(b"")


def _pickled_weights(model):
    (model / "pytorch_model.bin").write_bytes(b"")


def _adapter_only(model):
    (model / "config.json").unlink()
    (model / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "org/base"}))


# Each case: name -> function(folder, tiny_bert) returning (argv, the exact error line or its start, exact?)
CASES = {
    # -- data files -------------------------------------------------------------------------------------------
    "binary data file": lambda d, m: (
        ["compare", "--data", _write(d, "train.csv", b"text,label\n\x00\x01\xff,1\n")],
        f"error: data file '{d}/train.csv' is not a text file: it is not UTF-8 (byte 0xff on line 2) and contains NUL bytes; pass a UTF-8 CSV, TSV, JSON Lines or Parquet file",
    ),
    "control bytes in UTF-8 text": lambda d, m: (
        ["compare", "--data", _csv(d, rows=[("a\x07b", "x"), ("c", "y")])],
        f"error: data file '{d}/train.csv' is not a text file: it contains the control byte 0x07 on line 2; pass a UTF-8 CSV, TSV, JSON Lines or Parquet file",
    ),
    "broken JSON Lines line": lambda d, m: (
        ["compare", "--data", _jsonl(d, _good_jsonl_lines() + ['{"text": "x", "label": '] + _good_jsonl_lines(2))],
        f"error: line 6 of data file '{d}/train.jsonl' is not valid JSON: Expecting value at column 24; write one JSON object per line",
    ),
    "JSON Lines line not an object": lambda d, m: (
        ["compare", "--data", _jsonl(d, _good_jsonl_lines(2) + ['["a", 1]'])],
        f"error: line 3 of data file '{d}/train.jsonl' contains a JSON list, not an object; write one object per line, such as {{\"text\": \"...\", \"label\": 0}}",
    ),
    "JSON Lines repeated key": lambda d, m: (
        ["compare", "--data", _jsonl(d, ['{"text": "a", "label": 0, "text": "b"}'])],
        f"error: line 1 of data file '{d}/train.jsonl' has the key 'text' more than once; give every column a unique name",
    ),
    "JSON array cut off": lambda d, m: (
        ["compare", "--data", _write(d, "train.json", '[{"text": "a", "label": 0},\n {"text": "b"')],
        f"error: data file '{d}/train.json' is not valid JSON: Expecting ',' delimiter at line 2, column 14; pass a JSON array of objects or JSON Lines",
    ),
    "CSV repeated column name": lambda d, m: (
        ["compare", "--data", _csv(d, header="text,text", rows=ROWS)],
        f"error: data file '{d}/train.csv' has the column name 'text' more than once (columns: text, text); give every column a unique name",
    ),
    "TSV repeated column name": lambda d, m: (
        ["compare", "--data", _write(d, "train.tsv", "label\ttext\tlabel\n1\ta\t0\n")],
        f"error: data file '{d}/train.tsv' has the column name 'label' more than once (columns: label, text, label); give every column a unique name",
    ),
    "Parquet repeated column name": lambda d, m: (
        ["compare", "--data", _parquet(d, pa.Table.from_arrays([pa.array(["a", "b"]), pa.array([0, 1]), pa.array(["c", "d"])], names=["text", "label", "text"]))],
        f"error: data file '{d}/train.parquet' has the column name 'text' more than once (columns: label, text, text); give every column a unique name",
    ),
    "Parquet text column of integers": lambda d, m: (
        ["compare", "--data", _parquet(d, pa.table({"text": [1, 2, 3, 4], "label": [0, 1, 0, 1]}))],
        f"error: text column 'text' of the train split of '{d}/train.parquet' contains int64 values, not text; name the column with the texts with --text-column (columns: label, text)",
    ),
    "Parquet label column of lists": lambda d, m: (
        ["compare", "--data", _parquet(d, pa.table({"text": ["a", "b"], "label": [[0], [1]]}))],
        f"error: label column 'label' of the train split of '{d}/train.parquet' contains list values; labels must be integers 0, 1, ... or names, one per row",
    ),
    "not a Parquet file": lambda d, m: (
        ["compare", "--data", _write(d, "train.parquet", b"PAR1 not really")],
        f"error: data file '{d}/train.parquet' is not a readable Parquet file: ",
    ),
    "non-integer numeric labels": lambda d, m: (
        ["compare", "--data", _csv(d, rows=[("a", "0.5"), ("b", "1.5"), ("c", "0.5")])],
        f"error: label column 'label' of '{d}/train.csv' contains non-integer numbers such as 0.5; labels must be integers 0, 1, ... or names (regression is not supported)",
    ),
    "CSV row with too many fields": lambda d, m: (
        ["compare", "--data", _write(d, "train.csv", "text,label\na,0\nb,1\nc,0,extra\n")],
        f"error: could not read data '{d}/train.csv' as csv: Error tokenizing data. C error: Expected 2 fields in line 4, saw 3",
    ),
    "CSV text column of numbers": lambda d, m: (
        ["compare", "--data", _write(d, "train.csv", "text,label\n1,a\n2,b\n3,a\n")],
        f"error: text column 'text' of the train split of '{d}/train.csv' contains int64 values, not text; name the column with the texts with --text-column (columns: label, text)",
    ),
    "every text blank": lambda d, m: (
        ["compare", "--data", _write(d, "train.csv", 'text,label\n" ",a\n,b\n')],
        f"error: the train split of '{d}/train.csv' has no row with both a text and a label",
    ),
    # -- flags and the output folder --------------------------------------------------------------------------
    "save steps zero": lambda d, m: (["compare", "--save-steps", "0"], "error: --save-steps must be a positive integer, got 0"),
    "save steps negative": lambda d, m: (["train", "--save-steps", "-5"], "error: --save-steps must be a positive integer, got -5"),
    "resume without out": lambda d, m: (["compare", "--resume", "--no-out"], "error: --resume needs --out naming the run folder to continue"),
    "resume of an empty folder": lambda d, m: (
        ["compare", "--resume", "--out", str(d)],
        f"error: --out '{d}' contains no run to resume (no results.json); drop --resume to start a new run there",
    ),
    "resume and overwrite together": lambda d, m: (
        ["compare", "--resume", "--overwrite"],
        "error: --resume and --overwrite contradict each other: pass --resume to continue the run in --out, or --overwrite to replace it",
    ),
    "resume with other settings": lambda d, m: (
        ["compare", "--resume", "--lr", "0.01", "--out", str(_previous_run(d, _default_config(m)))],
        f"error: --resume: --lr is 0.01 but the run in '{d}/previous' used None; pass the same settings, or --overwrite to start again",
    ),
    "resume with changed data": lambda d, m: (
        ["compare", "--resume", "--out", str(_previous_run(d, _default_config(m), data={"splits": {"train": 100}, "label_names": ["negative", "positive"]}))],
        "error: --resume: the data now has splits {'train': 288, 'validation': 32, 'test': 80} and labels ['negative', 'positive'], "
        "but the run used {'train': 100} and ['negative', 'positive']; restore the data files, or pass --overwrite to start again",
    ),
    "resume of another command": lambda d, m: (
        ["train", "--resume", "--out", str(_previous_run(d))],
        f"error: --resume: the run in '{d}/previous' was started by `peftlab compare`, not `peftlab train`; resume it with the same command",
    ),
    "resume of a corrupt results file": lambda d, m: (
        ["compare", "--resume", "--out", _corrupt_previous_run(d)],
        f"error: '{d}/previous/results.json' is not a results file peftlab wrote, so the run cannot be resumed; pass --overwrite to start it again",
    ),
    "out holds a previous run": lambda d, m: (
        ["compare", "--out", str(_previous_run(d))],
        f"error: --out '{d}/previous' already holds a run (results.json); pass --resume to continue it, --overwrite to replace it, or choose a new folder",
    ),
    "out is a file": lambda d, m: (
        ["compare", "--out", _write(d, "file", "x")],
        f"error: --out '{d}/file' is a file; pass a folder",
    ),
    "config file resume not boolean": lambda d, m: (
        ["compare", "--config", _write(d, "run.yaml", "resume: sometimes\n")],
        f"error: 'resume' in config file '{d}/run.yaml' must be true or false, got 'sometimes'",
    ),
    # -- models and artifacts ---------------------------------------------------------------------------------
    "adapter folder as model": lambda d, m: (
        ["compare", "--model", _model_folder(d, m, "adapter", _adapter_only)],
        f"error: model folder '{d}/adapter' is a peft adapter (adapter_config.json, base model 'org/base'), not a model; pass its base model to --model, or evaluate the adapter with `peftlab eval`",
    ),
    "pickled weights only": lambda d, m: (
        ["compare", "--model", _model_folder(d, m, "pickled", _pickled_weights)],
        f"error: model folder '{d}/pickled' contains only pickled weights (pytorch_model.bin); peftlab loads safetensors only: convert it with save_pretrained(safe_serialization=True), or pass --allow-pickle if you trust the file",
    ),
    "model with its own code": lambda d, m: (
        ["compare", "--model", _model_folder(d, m, "custom", _add_auto_map)],
        f"error: model folder '{d}/custom' needs its own Python code (auto_map: AutoConfig), which peftlab does not run by default; pass --trust-remote-code if you trust it",
    ),
    "hub model while offline": lambda d, m: (
        ["compare", "--model", "some-org/some-model"],
        "error: could not load model 'some-org/some-model' from the Hugging Face hub: HF_HUB_OFFLINE is set and it is not in the local cache; pass a local folder or an alias (minilm, smollm2)",
    ),
    "hub data set while offline": lambda d, m: (
        ["compare", "--data", "some-org/some-data"],
        "error: could not load data set 'some-org/some-data' from the Hugging Face hub: HF_HUB_OFFLINE is set and it is not in the local cache; pass a local folder or file instead",
    ),
    "adapter for another base model": lambda d, m: (
        ["eval", str(_adapter_artifact(d, m, base_config={"model_type": "bert", "hidden_size": 768}))],
        f"error: adapter '{d}/lora' was trained on a base model with hidden_size 768, but its base model '{m}' ({m}) has hidden_size 32; restore the base model it was trained on, or train the adapter again",
    ),
    "pickled adapter": lambda d, m: (
        ["eval", str(_pickled_adapter(_adapter_artifact(d, m)))],
        f"error: adapter '{d}/lora' contains only pickled weights (adapter_model.bin); peftlab loads safetensors only: save the adapter again with save_pretrained, which writes safetensors",
    ),
}


def _pickled_adapter(artifact):
    (artifact / "adapter_model.safetensors").rename(artifact / "adapter_model.bin")
    return artifact


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_error_line(name, tmp_path, tiny_bert, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv, expected = CASES[name](inputs, tiny_bert)
    out = tmp_path / "run"
    if "--no-out" in argv:
        argv.remove("--no-out")
    elif argv[0] in ("compare", "train") and "--out" not in argv:
        argv += ["--out", str(out)]
    if argv[0] in ("compare", "train") and "--model" not in argv:
        argv += ["--model", str(tiny_bert)]
    before = _snapshot(inputs)

    code = main(argv)

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], err
    assert lines[-1].startswith(expected), err
    assert "Traceback" not in err
    assert not out.exists()
    assert _snapshot(inputs) == before  # nothing written, not even beside the inputs


def test_suite_has_at_least_thirty_cases():
    assert len(CASES) >= 30


# ---------------------------------------------------------------------------
# Input that loads, with a notice where the file was not plain UTF-8


def test_latin1_file_read_with_warning(tmp_path, caplog):
    path = _csv(tmp_path, rows=[("café crème, très bon", "positive"), ("ennuyeux", "negative")] * 3, encoding="latin-1")
    data = load_text_classification(path, validation_fraction=0.34)
    texts = list(data.splits["train"]["text"]) + list(data.splits["validation"]["text"])
    notice = f"data file '{path}' is not UTF-8 (byte 0xe9 on line 2): read it as Windows-1252/Latin-1; save it as UTF-8 if its accents look wrong"
    assert "café crème, très bon" in texts
    assert notice in data.notes
    assert [r.levelname for r in caplog.records if r.getMessage() == notice] == ["WARNING"]


def test_windows1252_quotes_decoded(tmp_path):
    path = _csv(tmp_path, rows=[("it\u2019s fine", "positive"), ("no", "negative")] * 3, encoding="cp1252")
    data = load_text_classification(path, validation_fraction=0.34)
    assert "it\u2019s fine" in list(data.splits["train"]["text"]) + list(data.splits["validation"]["text"])


@pytest.mark.parametrize("encoding, name", [("utf-8-sig", "UTF-8"), ("utf-16", "UTF-16")])
def test_byte_order_mark_read_with_note(tmp_path, encoding, name):
    path = _csv(tmp_path, encoding=encoding)
    data = load_text_classification(path, validation_fraction=0.25)
    assert (data.text_column, data.label_column) == ("text", "label")
    assert data.sizes == {"train": 9, "validation": 3}
    assert f"data file '{path}' starts with a {name} byte-order mark: read it as {name}" in data.notes


def test_crlf_line_ends_leave_no_carriage_returns(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\r\n".encode() + "".join(f"{t.replace(',', '')},{y}\r\n" for t, y in ROWS * 3).encode())
    data = load_text_classification(str(path), validation_fraction=0.25)
    texts = list(data.splits["train"]["text"]) + list(data.splits["validation"]["text"])
    assert data.label_names == ["negative", "positive"]
    assert not any("\r" in text for text in texts)


def test_quoted_newline_stays_in_one_row(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"first line\nsecond line",positive\n' + "".join(f'"{t}",{y}\n' for t, y in ROWS * 3))
    data = load_text_classification(str(path), validation_fraction=0.25)
    texts = list(data.splits["train"]["text"]) + list(data.splits["validation"]["text"])
    assert len(texts) == 13
    assert "first line\nsecond line" in texts


def test_blank_texts_and_labels_counted_by_row(tmp_path):
    pd.DataFrame({"text": ["a", None, "b", "c", " ", "d"] * 2, "label": ["x", "y", None, "x", "y", "y"] * 2}).to_parquet(tmp_path / "train.parquet")
    data = load_text_classification(str(tmp_path / "train.parquet"), validation_fraction=0.25)
    assert data.notes[0] == "train split: dropped 6 of 12 rows with a blank text or missing label (rows 2, 3, 5, 8, 9 ...)"


def test_long_texts_warn_with_truncated_count(tmp_path, tiny_bert, caplog):
    from peftlab import RunConfig
    from peftlab.runner import prepare

    rows = [("word " * 40, "positive"), ("short", "negative"), ("fine", "positive"), ("no", "negative")] * 3
    folder = tmp_path / "data"
    folder.mkdir()
    _csv(folder, rows=rows)
    prepare(RunConfig(model=str(tiny_bert), data=str(folder), methods=["lora"], max_length=16, validation_fraction=0.25))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "--max-length" in r.getMessage()]
    long_in_train = sum(1 for t in load_text_classification(str(folder), validation_fraction=0.25).splits["train"]["text"] if t.startswith("word"))
    assert warnings[0] == f"{long_in_train} of 9 train texts are longer than --max-length 16 tokens and were truncated"
