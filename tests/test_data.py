"""Data loading: split files, single files, formats, column and label detection, and bad input."""

import json
from collections import Counter

import pandas as pd
import pytest

from peftlab.data import load_text_classification
from peftlab.errors import PeftlabError


def test_sst2_folder_keeps_its_three_splits(shared_data):
    data = load_text_classification(str(shared_data / "sst2"), label_names=["negative", "positive"])
    assert data.sizes == {"train": 6920, "validation": 872, "test": 1821}
    assert data.label_names == ["negative", "positive"]
    assert (data.text_column, data.label_column) == ("sentence", "label")
    assert data.eval_split == "test"
    assert data.notes == []


def test_trec_string_labels_and_carved_validation(shared_data):
    data = load_text_classification(str(shared_data / "trec"))
    assert data.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert data.sizes == {"train": 4906, "validation": 546, "test": 500}
    assert data.notes == ["no validation split: carved 546 rows (10%) from train with seed 42"]


def test_carved_validation_depends_only_on_seed(shared_data):
    first = load_text_classification(str(shared_data / "trec"), seed=7)
    second = load_text_classification(str(shared_data / "trec"), seed=7)
    other = load_text_classification(str(shared_data / "trec"), seed=8)
    assert first.splits["validation"]["text"] == second.splits["validation"]["text"]
    assert first.splits["validation"]["text"] != other.splits["validation"]["text"]


def test_single_file_reports_on_validation(shared_data):
    data = load_text_classification(str(shared_data / "sst2" / "train.csv"))
    assert data.sizes == {"train": 6228, "validation": 692}
    assert data.eval_split == "validation"
    assert "no test split: metrics are reported on the validation split" in data.notes


def test_demo_data_is_balanced():
    data = load_text_classification(None)
    assert data.source == "demo"
    assert data.label_names == ["negative", "positive"]
    assert data.sizes == {"train": 288, "validation": 32, "test": 80}
    assert Counter(data.splits["test"]["label"]) == {0: 40, 1: 40}


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_every_file_format_loads(tmp_path, suffix):
    frame = pd.DataFrame({"review": ["good", "bad", "fine", "awful"] * 3, "sentiment": ["pos", "neg", "pos", "neg"] * 3})
    for split in ("train", "test"):
        path = tmp_path / f"{split}.{suffix}"
        if suffix == "csv":
            frame.to_csv(path, index=False)
        elif suffix == "tsv":
            frame.to_csv(path, index=False, sep="\t")
        elif suffix == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        elif suffix == "json":
            path.write_text(json.dumps(frame.to_dict(orient="records")))
        else:
            frame.to_parquet(path)
    data = load_text_classification(str(tmp_path), validation_fraction=0.25)
    assert (data.text_column, data.label_column) == ("review", "sentiment")
    assert data.label_names == ["neg", "pos"]
    assert data.sizes == {"train": 9, "validation": 3, "test": 12}


def test_explicit_columns_and_integer_label_names(tmp_path):
    pd.DataFrame({"body": ["a b", "c d", "e f", "g h"] * 3, "y_true": [0, 1, 2, 1] * 3}).to_csv(tmp_path / "train.csv", index=False)
    data = load_text_classification(str(tmp_path / "train.csv"), text_column="body", label_column="y_true", label_names=["x", "y", "z"], validation_fraction=0.25)
    assert data.label_names == ["x", "y", "z"]
    assert set(data.splits["train"]["label"]) == {0, 1, 2}
    assert data.splits["train"].column_names == ["text", "label"]


def test_blank_rows_dropped_and_counted(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,1\n,0\nbad,0\n   ,1\nfine,\nok,1\nno,0\nyes,1\nmeh,0\nwow,1\n")
    data = load_text_classification(str(tmp_path / "train.csv"), validation_fraction=0.3)
    assert data.sizes["train"] + data.sizes["validation"] == 7
    assert data.notes[0] == "train split: dropped 3 of 10 rows with a blank text or missing label (rows 2, 4, 5)"


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return str(path)


BAD_DATA = [
    ("missing path", lambda d: str(d / "nope"), {}, "data path not found: "),
    ("missing csv file", lambda d: str(d / "nope.csv"), {}, "data path not found: "),
    ("empty file", lambda d: _write(d, "train.csv", ""), {}, "is empty"),
    ("header only", lambda d: _write(d, "train.csv", "text,label\n"), {}, "the train split of"),
    ("folder without split files", lambda d: (_write(d, "notes.txt", "x"), str(d))[1], {}, "has no split files"),
    ("unsupported type", lambda d: _write(d, "train.xlsx", "x"), {}, "unsupported data file type '.xlsx'"),
    ("no text column", lambda d: _write(d, "train.csv", "foo,label\na,0\nb,1\n"), {}, "no text column found"),
    ("no label column", lambda d: _write(d, "train.csv", "text,foo\na,0\nb,1\n"), {}, "no label column found"),
    ("given column absent", lambda d: _write(d, "train.csv", "text,label\na,0\nb,1\n"), {"text_column": "body"}, "--text-column 'body' is not a column"),
    ("one class", lambda d: _write(d, "train.csv", "text,label\na,pos\nb,pos\nc,pos\n"), {}, "has only one class ('pos')"),
    ("too few label names", lambda d: _write(d, "train.csv", "text,label\na,0\nb,1\nc,2\n"), {"label_names": ["x", "y"]}, "--label-names gives 2 names"),
    ("negative label", lambda d: _write(d, "train.csv", "text,label\na,-1\nb,1\n"), {}, "negative label -1"),
    ("mixed label types", lambda d: _write(d, "train.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "x"}\n'), {}, "mixes value types"),
]


@pytest.mark.parametrize("case, make, kwargs, expected", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_rejected_in_one_line(tmp_path, case, make, kwargs, expected):
    with pytest.raises(PeftlabError) as error:
        load_text_classification(make(tmp_path), **kwargs)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_test_labels_unseen_in_train_rejected(tmp_path):
    _write(tmp_path, "train.csv", "text,label\na,x\nb,y\nc,x\nd,y\ne,x\nf,y\ng,x\nh,y\ni,x\nj,y\n")
    _write(tmp_path, "test.csv", "text,label\na,x\nb,z\n")
    with pytest.raises(PeftlabError, match="the test split of .* has labels never seen in train: z; train has x, y"):
        load_text_classification(str(tmp_path))
