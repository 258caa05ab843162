"""Run settings in YAML: read an experiment file, and save the settings of a run so that it can be repeated.

An experiment file maps RunConfig field names, written with dashes or
underscores, to values::

    model: minilm
    methods: [head, lora, adalora]   # or "head,lora,adalora", as on the command line
    lora-r: 16
    lr: 1e-3
    method_args: {init_r: 24}        # AdaLoRA's starting rank

Options given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from peftlab.config import RunConfig, config_fields
from peftlab.errors import PeftlabError

CONFIG_FILE = "config.yaml"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read an experiment file into RunConfig keyword arguments, converting each value to its field's type.

    Raises PeftlabError for a missing file, invalid YAML, an unknown key (the
    message lists the valid ones) or a value of the wrong type.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PeftlabError(f"config file not found: {str(path)!r}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise PeftlabError(f"config file {str(path)!r} is not valid YAML{line}: {getattr(error, 'problem', None) or error}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise PeftlabError(f"config file {str(path)!r} must map option names to values, got a {type(content).__name__}")

    fields = {f.name: f for f in config_fields()}
    values = {}
    for key, value in content.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            valid = ", ".join(f.name for f in config_fields())
            raise PeftlabError(f"unknown key {key!r} in config file {str(path)!r}; valid keys are {valid}")
        if name in values:
            raise PeftlabError(f"config file {str(path)!r} sets {name!r} twice (as {name} and {name.replace('_', '-')}); keep one")
        values[name] = _convert(fields[name], value, path)
    return values


def write_config_file(config: RunConfig, folder: str | Path) -> Path:
    """Save the settings of a run as config.yaml in its folder, so `peftlab compare --config` repeats the run.

    ``out`` is left out: a rerun writes to a new folder (given with --out, or
    a timestamped one). Data and model paths that exist locally are saved as
    absolute paths, so the file works from any working directory.
    """
    settings = config.to_dict()
    settings.pop("out", None)
    settings.pop("resume", None)  # a repeat is a new run, not a continuation of this folder
    settings.pop("overwrite", None)
    for key in ("data", "model"):
        value = settings.get(key)
        if value and Path(value).expanduser().exists():
            settings[key] = str(Path(value).expanduser().resolve())
    header = (
        "# Settings of this peftlab run. Repeat it with:\n"
        f"#   peftlab compare --config {CONFIG_FILE} --out NEW_FOLDER\n"
    )
    path = Path(folder) / CONFIG_FILE
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False, default_flow_style=None))
    return path


def _convert(field: dataclasses.Field, value: Any, path: Path) -> Any:
    """Convert one YAML value to the type of ``field``, accepting what the command line would accept."""
    kind = str(field.type)
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    where = f"{field.name!r} in config file {str(path)!r}"
    if value is None:
        if optional:
            return None
        raise PeftlabError(f"{where} must have a value; remove the key to use the default")

    if kind == "list[str]":
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
        elif isinstance(value, list) and all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value):
            items = [str(item) for item in value]
        else:
            raise PeftlabError(f"{where} must be a list of names or a comma-separated string, got {value!r}")
        return items
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise PeftlabError(f"{where} must be a mapping of option names to values, got {value!r}")
        return {str(key): item for key, item in value.items()}
    if kind == "bool":
        if not isinstance(value, bool):
            raise PeftlabError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise PeftlabError(f"{where} must be {_type_name(kind)}, got {value!r}")
    if kind == "int":
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise PeftlabError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise PeftlabError(f"{where} must be an integer, got {value!r}") from None
    if kind == "float":
        # PyYAML reads 1e-3 (no decimal point) as a string, so convert strings as the command line does.
        try:
            return float(value)
        except (TypeError, ValueError):
            raise PeftlabError(f"{where} must be a number, got {value!r}") from None
    if kind == "str":
        return str(value)
    raise AssertionError(f"RunConfig field {field.name} has a type the config file reader does not handle: {field.type}")


def _type_name(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "str": "a string"}.get(kind, kind)
