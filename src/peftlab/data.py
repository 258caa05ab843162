"""Data loading through `datasets`: split files, single files and hub data sets, with column and label detection."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import ClassLabel, DatasetDict

from peftlab.data_checks import check_data_files
from peftlab.errors import PeftlabError, one_of

log = logging.getLogger(__name__)

DEMO_DATA = Path(__file__).parent / "demo_data"
DEMO_NAME = "demo"

EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_FILE_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing"),
}
TEXT_COLUMNS = ("text", "sentence", "sentence1", "content", "review", "document", "question", "query", "utterance", "input", "tweet")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "sentiment", "intent", "coarse_label", "y")


@dataclass
class TextClassificationData:
    """Text and integer labels in train, validation and test splits, with what was done to get them."""

    splits: DatasetDict  # columns "text" (str) and "label" (int) in every split
    label_names: list[str]
    source: str
    text_column: str
    label_column: str
    eval_split: str  # "test", or "validation" when the data has no test split
    notes: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def describe(self) -> dict:
        return {
            "source": self.source,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "label_names": self.label_names,
            "splits": self.sizes,
            "eval_split": self.eval_split,
            "notes": self.notes,
        }


def load_text_classification(
    data: str | None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> TextClassificationData:
    """Load a labelled text data set and bring it to train, validation and test splits.

    ``data`` is a folder of split files, one file, a hub name (``name`` or
    ``name:config``), or None for the built-in demo data.
    """
    with quiet_datasets():
        return _load_text_classification(data, text_column, label_column, label_names, validation_fraction, seed)


def _load_text_classification(data, text_column, label_column, label_names, validation_fraction, seed) -> TextClassificationData:
    source = DEMO_NAME if data is None else data
    notes: list[str] = []
    raw = _load_raw(data, notes)
    for name in list(raw):
        if name not in SPLIT_FILE_NAMES:
            raise PeftlabError(f"data {source!r} has a split named {name!r}; valid split names are {one_of(SPLIT_FILE_NAMES)}")
    if "train" not in raw:
        raise PeftlabError(f"data {source!r} has no train split (found {one_of(raw) or 'none'}); name a file train.csv, train.jsonl, ...")

    columns = raw["train"].column_names
    text_column = _pick_column("text", text_column, TEXT_COLUMNS, columns, source)
    label_column = _pick_column("label", label_column, LABEL_COLUMNS, columns, source)
    _check_column_types(raw, text_column, label_column, source)
    for name, split in raw.items():
        missing = [c for c in (text_column, label_column) if c not in split.column_names]
        if missing:
            raise PeftlabError(f"the {name} split of {source!r} has no column {missing[0]!r}; its columns are {one_of(split.column_names)}")
        if len(split) == 0:
            raise PeftlabError(f"the {name} split of {source!r} is empty; give it at least one row")
    raw = DatasetDict({name: split.select_columns([text_column, label_column]) for name, split in raw.items()})
    raw = _drop_blank_rows(raw, text_column, label_column, source, notes)

    names, raw = _encode_labels(raw, label_column, label_names, source)
    splits = DatasetDict(
        {
            name: split.rename_columns({text_column: "text", label_column: "label"}) if text_column != "text" or label_column != "label" else split
            for name, split in raw.items()
        }
    )
    splits = DatasetDict({name: split.cast_column("label", ClassLabel(names=names)) for name, split in splits.items()})

    if len(set(splits["train"]["label"])) < 2:
        only = names[splits["train"][0]["label"]]
        raise PeftlabError(f"the train split of {source!r} has only one class ({only!r}); a classifier needs at least two")

    seen = set(splits["train"]["label"])
    for name in ("validation", "test"):
        if name in splits:
            unseen = sorted(set(splits[name]["label"]) - seen)
            if unseen:
                raise PeftlabError(
                    f"the {name} split of {source!r} has labels never seen in train: {one_of(names[i] for i in unseen)}; train has {one_of(names[i] for i in sorted(seen))}"
                )

    if "validation" not in splits:
        try:
            carved = splits["train"].train_test_split(test_size=validation_fraction, seed=seed, stratify_by_column="label")
        except ValueError:  # too few rows of some class to stratify: fall back to a plain seeded split
            carved = splits["train"].train_test_split(test_size=validation_fraction, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
        notes.append(f"no validation split: carved {len(carved['test'])} rows ({validation_fraction:.0%}) from train with seed {seed}")
    eval_split = "test"
    if "test" not in splits:
        eval_split = "validation"
        notes.append("no test split: metrics are reported on the validation split")

    ordered = DatasetDict({name: splits[name] for name in ("train", "validation", "test") if name in splits})
    return TextClassificationData(ordered, names, source, text_column, label_column, eval_split, notes)


# ---------------------------------------------------------------------------
# Reading files and hub data sets


def _load_raw(data: str | None, notes: list[str] | None = None) -> DatasetDict:
    """Read ``data`` into a DatasetDict; notices about re-encoded files are appended to ``notes`` when given."""
    notes = [] if notes is None else notes
    if data is None:
        return _load_files({"train": [DEMO_DATA / "train.csv"], "test": [DEMO_DATA / "test.csv"]}, DEMO_NAME, notes)
    path = Path(data).expanduser()
    if path.is_dir():
        return _load_files(_split_files(path), data, notes)
    if path.is_file():
        if path.suffix.lower() not in EXTENSIONS:
            raise PeftlabError(f"unsupported data file type {path.suffix!r} for {data!r}; valid types are {one_of(EXTENSIONS)}")
        return _load_files({"train": [path]}, data, notes)
    if data.startswith((".", "/", "~")) or path.suffix.lower() in EXTENSIONS or data.count("/") > 1:
        raise PeftlabError(f"data path not found: {data!r}; pass an existing folder or file, or a hub data set name")
    return _load_hub(data)


def _split_files(folder: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() not in EXTENSIONS or not file.is_file():
            continue
        stem = file.stem.lower()
        for split, names in SPLIT_FILE_NAMES.items():
            if stem in names or any(stem.startswith(n + "-") or stem.startswith(n + "_") for n in names):
                files.setdefault(split, []).append(file)
    if not files:
        found = one_of(p.name for p in folder.iterdir()) or "nothing"
        raise PeftlabError(
            f"data folder {str(folder)!r} has no split files; expected train.csv (and optionally validation/dev and test) with one of {one_of(EXTENSIONS)}, found {found}"
        )
    return files


def _load_files(files: dict[str, list[Path]], source: str, notes: list[str]) -> DatasetDict:
    kinds = {EXTENSIONS[p.suffix.lower()] for paths in files.values() for p in paths}
    if len(kinds) > 1:
        raise PeftlabError(f"data {source!r} mixes file types ({one_of(kinds)}); use one type for all splits")
    for paths in files.values():
        for path in paths:
            if path.stat().st_size == 0:
                raise PeftlabError(f"data file {str(path)!r} is empty")
    kind = kinds.pop()
    kwargs = {}
    if kind == "csv" and all(p.suffix.lower() == ".tsv" for paths in files.values() for p in paths):
        kwargs["delimiter"] = "\t"
    # Files that are not UTF-8 are read from UTF-8 copies in a temporary folder, deleted once
    # datasets has converted them to Arrow in its cache.
    try:
        with tempfile.TemporaryDirectory(prefix="peftlab-data-") as workdir, _local_read():
            files = check_data_files(files, kind, Path(workdir), notes)
            data_files = {split: [str(p) for p in paths] for split, paths in files.items()}
            return datasets.load_dataset(kind, data_files=data_files, **kwargs)
    except PeftlabError:
        raise
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
        cause = error.__cause__ or error
        if "corresponds to no data" in str(cause):
            split = str(cause).split('"')[1] if '"' in str(cause) else "a"
            raise PeftlabError(f"the {split} split of {source!r} is empty: its file has no data rows; give it at least one row") from error
        raise PeftlabError(f"could not read data {source!r} as {kind}: {str(cause).splitlines()[0]}") from error


def _load_hub(name: str) -> DatasetDict:
    dataset_name, _, config_name = name.partition(":")
    try:
        loaded = datasets.load_dataset(dataset_name, config_name or None)
    except Exception as error:  # datasets raises many types for a missing or unreachable data set
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        reason = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else str(error).splitlines()[0]
        raise PeftlabError(f"could not load data set {name!r} from the Hugging Face hub: {reason}; pass a local folder or file instead") from error
    renamed = {}
    for split, dataset in loaded.items():
        canonical = next((key for key, names in SPLIT_FILE_NAMES.items() if split in names), split)
        renamed[canonical] = dataset
    return DatasetDict(renamed)


class _local_read:
    """Settings of datasets while it reads local files.

    datasets 5.2 sends a HEAD request to its S3 bucket to count downloads of
    the csv, json and parquet builders unless HF_UPDATE_DOWNLOAD_COUNTS is off,
    so reading a local file would reach the network. Its log record before a
    read error is silenced too, because peftlab reports the error in one line.
    """

    def __enter__(self):
        self.level = datasets.logging.get_verbosity()
        self.counts = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
        datasets.logging.set_verbosity(logging.CRITICAL)
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False

    def __exit__(self, *exc):
        datasets.logging.set_verbosity(self.level)
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = self.counts


class quiet_datasets:
    """Hide the progress bars datasets draws for reading and mapping: they take a second here and clutter the log."""

    def __enter__(self):
        self.enabled = datasets.utils.are_progress_bars_disabled() is False
        datasets.utils.disable_progress_bars()

    def __exit__(self, *exc):
        if self.enabled:
            datasets.utils.enable_progress_bars()


# ---------------------------------------------------------------------------
# Columns and labels


def _pick_column(kind: str, given: str | None, candidates, columns: list[str], source: str) -> str:
    if given is not None:
        if given not in columns:
            raise PeftlabError(f"--{kind}-column {given!r} is not a column of {source!r}; its columns are {one_of(columns)}")
        return given
    by_lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    raise PeftlabError(
        f"no {kind} column found in {source!r} (columns: {one_of(columns)}); name it with --{kind}-column, or use one of the common names {', '.join(candidates[:4])}"
    )


TEXT_DTYPES = ("string", "large_string", "null")  # null: a column with no values at all, reported as blank rows
LABEL_DTYPE_PREFIXES = ("int", "uint", "float", "bool", "string", "large_string", "null")


def _check_column_types(raw: DatasetDict, text_column: str, label_column: str, source: str) -> None:
    """Reject a text column that does not hold strings and a label column of lists or records, in any split."""
    for name, split in raw.items():
        text_feature = split.features[text_column]
        if not (isinstance(text_feature, datasets.Value) and text_feature.dtype in TEXT_DTYPES):
            raise PeftlabError(
                f"text column {text_column!r} of the {name} split of {source!r} contains {_feature_name(text_feature)} values, not text; "
                f"name the column with the texts with --text-column (columns: {one_of(split.column_names)})"
            )
        label_feature = split.features[label_column]
        if isinstance(label_feature, ClassLabel) or type(label_feature).__name__ == "Json":
            continue  # Json: a JSON column of mixed types, which _encode_labels reports by the types it finds
        if not (isinstance(label_feature, datasets.Value) and label_feature.dtype.startswith(LABEL_DTYPE_PREFIXES)):
            raise PeftlabError(
                f"label column {label_column!r} of the {name} split of {source!r} contains {_feature_name(label_feature)} values; labels must be integers 0, 1, ... or names, one per row"
            )


def _feature_name(feature) -> str:
    if isinstance(feature, datasets.Value):
        return feature.dtype
    return "mixed-type JSON" if type(feature).__name__ == "Json" else type(feature).__name__.lower()


def _drop_blank_rows(raw: DatasetDict, text_column: str, label_column: str, source: str, notes: list[str]) -> DatasetDict:
    """Drop rows with a blank text or a missing label, and say how many and which."""
    cleaned = {}
    for name, split in raw.items():
        texts, labels = split[text_column], split[label_column]
        blank = [i for i, (t, y) in enumerate(zip(texts, labels)) if t is None or not str(t).strip() or y is None or (isinstance(y, str) and not y.strip())]
        if blank:
            rows = ", ".join(str(i + 1) for i in blank[:5]) + (" ..." if len(blank) > 5 else "")
            message = f"{name} split: dropped {len(blank)} of {len(split)} rows with a blank text or missing label (rows {rows})"
            log.warning(message)
            notes.append(message)
            split = split.select(sorted(set(range(len(split))) - set(blank)))
            if len(split) == 0:
                raise PeftlabError(f"the {name} split of {source!r} has no row with both a text and a label")
        cleaned[name] = split
    return DatasetDict(cleaned)


def _encode_labels(raw: DatasetDict, column: str, label_names: list[str] | None, source: str):
    """Map labels to 0..n-1 and return the label names in that order."""
    feature = raw["train"].features[column]
    if isinstance(feature, ClassLabel):
        names = label_names or feature.names
        if len(names) != feature.num_classes:
            raise PeftlabError(f"--label-names gives {len(names)} names but {source!r} has {feature.num_classes} classes ({one_of(feature.names)})")
        return list(names), raw

    values = [v for split in raw.values() for v in split[column]]
    if all(isinstance(v, bool) for v in values):
        raise PeftlabError(f"label column {column!r} of {source!r} holds true/false values; write them as 0/1 or as names")
    if all(isinstance(v, int) for v in values):
        low, high = min(values), max(values)
        if low < 0:
            raise PeftlabError(f"label column {column!r} of {source!r} has the negative label {low}; integer labels must be 0, 1, ...")
        if label_names is not None:
            if high >= len(label_names):
                raise PeftlabError(f"--label-names gives {len(label_names)} names ({','.join(label_names)}) but {source!r} has the label {high}; give at least {high + 1} names")
            return list(label_names), raw
        return [str(i) for i in range(high + 1)], raw
    if all(isinstance(v, float) and float(v).is_integer() for v in values):
        raw = DatasetDict({n: s.cast_column(column, datasets.Value("int64")) for n, s in raw.items()})
        return _encode_labels(raw, column, label_names, source)
    if all(isinstance(v, str) for v in values):
        names = sorted({v.strip() for v in raw["train"][column]})
        if label_names is not None:
            unknown = sorted(set(names) - set(label_names))
            if unknown:
                raise PeftlabError(f"--label-names {','.join(label_names)} does not name the labels {one_of(unknown)} found in {source!r}")
            names = list(label_names)
        encoded = {}
        for name, split in raw.items():
            labels = [v.strip() for v in split[column]]
            unseen = sorted(set(labels) - set(names))
            if unseen:
                raise PeftlabError(f"the {name} split of {source!r} has labels never seen in train: {one_of(unseen)}; train has {one_of(names)}")
            index = {label: i for i, label in enumerate(names)}
            encoded[name] = split.remove_columns(column).add_column(column, [index[v] for v in labels])
        encoded = DatasetDict(encoded)
        return names, encoded
    if all(isinstance(v, float) for v in values):
        example = next(v for v in values if not float(v).is_integer())
        raise PeftlabError(
            f"label column {column!r} of {source!r} contains non-integer numbers such as {example}; labels must be integers 0, 1, ... or names (regression is not supported)"
        )
    kinds = sorted({type(v).__name__ for v in values})
    raise PeftlabError(f"label column {column!r} of {source!r} mixes value types ({', '.join(kinds)}); labels must be all integers or all strings")
