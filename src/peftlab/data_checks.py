"""Checks of data files before `datasets` reads them: text encoding, JSON syntax and column names.

`datasets` reads CSV and JSON as UTF-8, and its error for a broken file names
neither the line nor the fix. pandas renames a repeated CSV column name
("text" and "text.1") without a warning. These checks find such problems
first and name the file, the line and what would be valid.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from peftlab.errors import PeftlabError, one_of

log = logging.getLogger(__name__)

BOMS = ((b"\xef\xbb\xbf", "utf-8-sig", "UTF-8"), (b"\xff\xfe", "utf-16", "UTF-16"), (b"\xfe\xff", "utf-16", "UTF-16"))
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls other than tab, newline and carriage return


def check_data_files(files: dict[str, list[Path]], kind: str, workdir: Path, notes: list[str]) -> dict[str, list[Path]]:
    """Check every file and return the files to read, with non-UTF-8 text files re-encoded to UTF-8 copies in ``workdir``.

    ``kind`` is the `datasets` builder: csv, json or parquet. Notices about
    re-encoded files are appended to ``notes`` and logged, as warnings when
    the encoding was guessed.
    """
    checked = {}
    for split, paths in files.items():
        checked[split] = []
        for number, path in enumerate(paths):
            if kind == "parquet":
                check_parquet_columns(path)
                checked[split].append(path)
                continue
            text, notice, doubtful = read_text(path)
            if kind == "json":
                check_json(path, text)
            else:
                check_csv_header(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
            if notice is None:
                checked[split].append(path)
                continue
            log.log(logging.WARNING if doubtful else logging.INFO, notice)
            notes.append(notice)
            copy = workdir / f"{split}-{number}{path.suffix.lower()}"
            copy.write_text(text, encoding="utf-8")
            checked[split].append(copy)
    return checked


def read_text(path: Path) -> tuple[str, str | None, bool]:
    """Decode a text data file; return its text, a notice when it was not plain UTF-8, and whether the encoding was guessed.

    A byte-order mark selects UTF-8 or UTF-16. A file that is not valid UTF-8
    is read as Windows-1252, the usual encoding of Western European files that
    are not UTF-8 and a superset of Latin-1's printable characters. A file with
    control bytes after decoding is not text and is rejected.
    """
    data = path.read_bytes()
    for bom, codec, name in BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as error:
                raise PeftlabError(f"data file {str(path)!r} starts with a {name} byte-order mark but is not valid {name} (at byte {error.start}); save it as UTF-8") from None
            _reject_control_characters(path, text)
            return text, f"data file {str(path)!r} starts with a {name} byte-order mark: read it as {name}", False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start]
        if b"\x00" in data:
            raise PeftlabError(
                f"data file {str(path)!r} is not a text file: it is not UTF-8 (byte 0x{byte:02x} on line {line}) and contains NUL bytes; pass a UTF-8 CSV, TSV, JSON Lines or Parquet file"
            )
        text = data.decode("cp1252", errors="replace")
        if "\ufffd" in text:  # bytes that Windows-1252 leaves undefined: Latin-1 defines every byte
            text = data.decode("latin-1")
        _reject_control_characters(path, text, f"it is not UTF-8 (byte 0x{byte:02x} on line {line}) and ")
        return text, f"data file {str(path)!r} is not UTF-8 (byte 0x{byte:02x} on line {line}): read it as Windows-1252/Latin-1; save it as UTF-8 if its accents look wrong", True
    _reject_control_characters(path, text)
    return text, None, False


def _reject_control_characters(path: Path, text: str, prefix: str = "") -> None:
    found = CONTROL_CHARACTERS.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise PeftlabError(
            f"data file {str(path)!r} is not a text file: {prefix}it contains the control byte 0x{ord(found.group()):02x} on line {line}; pass a UTF-8 CSV, TSV, JSON Lines or Parquet file"
        )


def check_csv_header(path: Path, text: str, delimiter: str) -> None:
    """Reject a header that names a column twice, which pandas would rename to name.1 without a word."""
    header = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    repeated = [name for name, count in Counter(name.strip() for name in header).items() if count > 1 and name]
    if repeated:
        raise PeftlabError(f"data file {str(path)!r} has the column name {repeated[0]!r} more than once (columns: {', '.join(header)}); give every column a unique name")


def check_json(path: Path, text: str) -> None:
    """Check a .json or .jsonl file: one JSON document, or JSON Lines with one object per line and unique keys."""
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            rows = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as error:
            raise PeftlabError(f"data file {str(path)!r} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}; pass a JSON array of objects or JSON Lines") from None
        except _RepeatedKey as repeated:
            raise PeftlabError(f"data file {str(path)!r} has an object with the key {repeated.key!r} more than once; give every column a unique name") from None
        if not all(isinstance(row, dict) for row in rows):
            raise PeftlabError(f"data file {str(path)!r} is a JSON array of values that are not all objects; write one object per row, such as {{\"text\": \"...\", \"label\": 0}}")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as error:
            raise PeftlabError(f"line {number} of data file {str(path)!r} is not valid JSON: {error.msg} at column {error.colno}; write one JSON object per line") from None
        except _RepeatedKey as repeated:
            raise PeftlabError(f"line {number} of data file {str(path)!r} has the key {repeated.key!r} more than once; give every column a unique name") from None
        if not isinstance(row, dict):
            raise PeftlabError(
                f"line {number} of data file {str(path)!r} contains a JSON {type(row).__name__}, not an object; write one object per line, such as {{\"text\": \"...\", \"label\": 0}}"
            )


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs):
    counts = Counter(key for key, _ in pairs)
    for key, count in counts.items():
        if count > 1:
            raise _RepeatedKey(key)
    return dict(pairs)


def check_parquet_columns(path: Path) -> None:
    """Reject a Parquet file that is unreadable or names a column twice, reading only its schema."""
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError and others for a broken file
        raise PeftlabError(f"data file {str(path)!r} is not a readable Parquet file: {str(error).splitlines()[0]}") from None
    repeated = [name for name, count in Counter(schema.names).items() if count > 1]
    if repeated:
        raise PeftlabError(f"data file {str(path)!r} has the column name {repeated[0]!r} more than once (columns: {one_of(schema.names)}); give every column a unique name")
