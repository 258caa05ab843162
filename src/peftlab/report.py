"""Reports of a run, rendered from results.json into the run folder.

    results.csv   one row per method, flat columns, for pandas or a spreadsheet
    report.md     the comparison, charts and settings as Markdown
    report.html   the same as one self-contained page: inline CSS, charts as base64 PNG

``peftlab report RUN_DIR`` renders them again from the folder's results.json.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path

import yaml

from peftlab.errors import PeftlabError
from peftlab.plots import PLOT_FILES, completed_runs, pareto_front, save_plots
from peftlab.reporting import format_pct, human_bytes, human_count

RESULTS_FILE = "results.json"  # runner.RESULTS_FILE, not imported from there because runner loads torch
CSV_FILE = "results.csv"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"

PLOT_TITLES = {
    "pareto": "Trainable parameters against the metric",
    "before_after": "Metric before and after training",
    "loss": "Training loss curves",
    "cost": "Training time and peak memory",
}
PLOT_CAPTIONS = {
    "pareto": "Trainable parameters (log scale) against the metric after training. Outlined points form the Pareto front: no other method reaches a higher metric with fewer trainable parameters.",
    "before_after": "Each method's metric on the evaluation split before and after training.",
    "loss": "Training loss of every method against the optimizer step.",
    "cost": "Training time and peak memory per method.",
}

METRICS = ("accuracy", "f1_macro", "exact_match", "loss", "perplexity")
ACCURACY = {"name": "accuracy", "label": "accuracy", "higher_is_better": True}  # results written before results["metric"] existed
CSV_COLUMNS = [
    "method", "status", "reason", "model", "data", "eval_split",
    "base_params", "trainable_params", "added_params", "trainable_pct",
    *(f"before_{m}" for m in METRICS), *(f"after_{m}" for m in METRICS), *(f"validation_after_{m}" for m in METRICS),
    "lr", "train_steps", "train_seconds", "peak_memory_mb", "artifact_bytes", "options", "path",
]


def write_report(results: dict, folder: str | Path) -> list[Path]:
    """Write the charts, results.csv, report.md and report.html for ``results`` into ``folder`` and return their paths."""
    folder = Path(folder)
    plots = save_plots(results, folder)
    _write_atomic(folder / CSV_FILE, results_csv(results))
    _write_atomic(folder / MARKDOWN_FILE, markdown_report(results, plots))
    _write_atomic(folder / HTML_FILE, html_report(results, plots))
    return [*plots.values(), folder / CSV_FILE, folder / MARKDOWN_FILE, folder / HTML_FILE]


def render_run(folder: str | Path) -> list[Path]:
    """Render the reports of a run folder again from its results.json."""
    folder = Path(folder).expanduser()
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise PeftlabError(f"no {RESULTS_FILE} in {str(folder)!r}: pass a run folder that train or compare wrote")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PeftlabError(f"{str(path)!r} is not valid JSON ({error}); rerun the experiment to write it again") from None
    return write_report(results, folder)


# ---------------------------------------------------------------------------
# Values shared by every format


def flat_row(results: dict, run: dict) -> dict:
    """Return one run as a flat dict with the CSV columns. Values that the run lacks are None."""
    params = run.get("params") or {}
    metrics = run.get("metrics") or {}
    row = {
        "method": run["method"],
        "status": run.get("status", "ok"),
        "reason": run.get("reason"),
        "model": results["model"]["name"],
        "data": results["data"]["source"],
        "eval_split": results["data"].get("eval_split"),
        **{key: params.get(key) for key in ("base_params", "trainable_params", "added_params", "trainable_pct")},
    }
    for when in ("before", "after", "validation_after"):
        for metric in METRICS:
            row[f"{when}_{metric}"] = (metrics.get(when) or {}).get(metric)
    for key in ("lr", "train_steps", "train_seconds", "peak_memory_mb", "artifact_bytes", "path"):
        row[key] = run.get(key)
    row["options"] = json.dumps(run["options"], sort_keys=True) if run.get("options") else None
    return row


def results_csv(results: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run in results["runs"]:
        writer.writerow(flat_row(results, run))
    return buffer.getvalue()


def primary(results: dict) -> dict:
    """Return the metric methods are compared by: its name, its label and whether higher is better."""
    return results.get("metric") or ACCURACY


def secondary(results: dict) -> str:
    """Return the second metric of the tables: macro-F1 for a classifier, perplexity or loss for a language model."""
    name = primary(results)["name"]
    return {"accuracy": "f1_macro", "exact_match": "perplexity"}.get(name, "loss")


METRIC_LABELS = {"f1_macro": "macro-F1", "exact_match": "exact match"}


def format_metric(name: str, value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if name == "perplexity" else f"{value:.4f}"


def ranking_score(results: dict, run: dict) -> float:
    """Return the primary metric after training, negated when lower is better, so that a higher score is always better."""
    metric = primary(results)
    value = run["metrics"]["after"][metric["name"]]
    return value if metric["higher_is_better"] else -value


def comparison_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Return the headers and the formatted cells of the comparison table.

    A method that failed or was skipped keeps its row, with dashes for the
    numbers and its reason in a last column that appears only then.
    """
    split = results["data"].get("eval_split", "test")
    metric, second = primary(results), secondary(results)
    headers = [
        "method", "status", "trainable", "trainable %", f"{split} {metric['label']} before", f"{split} {metric['label']} after",
        f"{METRIC_LABELS.get(second, second)} after", "train time", "peak memory", "artifact",
    ]
    with_reason = any(run.get("status", "ok") != "ok" for run in results["runs"])
    rows = []
    for run in results["runs"]:
        status = run.get("status", "ok")
        if status != "ok":
            rows.append([run["method"], status] + ["-"] * 8 + [run.get("reason") or "no reason recorded"])
            continue
        params, metrics = run["params"], run["metrics"]
        row = [
            run["method"],
            status,
            human_count(params["trainable_params"]),
            format_pct(params["trainable_pct"]),
            format_metric(metric["name"], metrics["before"].get(metric["name"])),
            format_metric(metric["name"], metrics["after"].get(metric["name"])),
            format_metric(second, metrics["after"].get(second)),
            f"{run['train_seconds']:.1f} s",
            f"{run['peak_memory_mb']:.0f} MB",
            human_bytes(run.get("artifact_bytes")),
        ]
        rows.append(row + [""] if with_reason else row)
    return (headers + ["reason"] if with_reason else headers), rows


def settings_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "learning rate", "steps", "options", "artifact folder"]
    rows = []
    for run in completed_runs(results):
        options = ", ".join(f"{key}={value}" for key, value in (run.get("options") or {}).items()) or "-"
        rows.append([run["method"], f"{run['lr']:g}", str(run["train_steps"]), options, run.get("path") or "-"])
    return headers, rows


def summary_facts(results: dict) -> list[tuple[str, str]]:
    model, data, env = results["model"], results["data"], results.get("environment", {})
    splits = ", ".join(f"{name} {size}" for name, size in data.get("splits", {}).items())
    labels = data.get("label_names") or []
    packages = env.get("packages", {})
    versions = ", ".join(f"{name} {packages[name]}" for name in ("peftlab", "torch", "transformers", "peft") if packages.get(name))
    facts = [
        ("command", f"peftlab {results.get('command', 'compare')}, created {results.get('created', '?')}"),
        ("model", f"{model['name']} ({model.get('model_type', '?')})"),
        ("data", f"{data['source']}: {splits}"),
        *([("labels", f"{len(labels)} ({', '.join(labels)})")] if labels else []),
        *([("data shape", f"{data['kind']}, answers scored by {data.get('answer_match', 'none')} match")] if data.get("kind") else []),
        ("metrics on", f"the {data.get('eval_split', 'test')} split"),
        ("device", f"{env.get('device', '?')}, {env.get('torch_threads', '?')} torch threads on {env.get('cpu_count', '?')} CPUs"),
        ("versions", versions or "-"),
    ]
    facts += [("note", note) for note in data.get("notes", [])]
    truncated = {split: count for split, count in (data.get("truncated") or {}).items() if count}
    if truncated:
        facts.append(("truncated", ", ".join(f"{count} {split} texts" for split, count in truncated.items())))
    return facts


def pareto_sentence(results: dict) -> str | None:
    runs = [run for run in completed_runs(results) if run["params"]["trainable_params"] > 0]
    if not runs:
        return None
    front = pareto_front([(run["method"], run["params"]["trainable_params"], ranking_score(results, run)) for run in runs])
    split = results["data"].get("eval_split", "test")
    metric = primary(results)
    better = "higher" if metric["higher_is_better"] else "lower"
    return (
        f"Pareto front, from fewest trainable parameters up: {', '.join(front)}. "
        f"No other method reaches a {better} {split} {metric['label']} with fewer trainable parameters."
    )


def config_yaml(results: dict) -> str:
    return yaml.safe_dump(results.get("config", {}), sort_keys=False, default_flow_style=None).rstrip()


def title(results: dict) -> str:
    return f"peftlab {results.get('command', 'compare')}: {results['model']['name']} on {results['data']['source']}"


# ---------------------------------------------------------------------------
# Markdown


def markdown_report(results: dict, plots: dict[str, Path]) -> str:
    lines = [f"# {title(results)}", ""]
    lines += [f"- **{name}**: {_md_escape(value)}" for name, value in summary_facts(results)]
    lines += ["", "## Comparison", "", _md_table(*comparison_rows(results)), ""]
    sentence = pareto_sentence(results)
    if sentence:
        lines += [sentence, ""]
    if plots:
        lines += ["## Charts", ""]
        for name, path in plots.items():
            lines += [f"![{PLOT_TITLES[name]}]({path.name})", "", f"*{PLOT_CAPTIONS[name]}*", ""]
    headers, rows = settings_rows(results)
    if rows:
        lines += ["## Training settings", "", _md_table(headers, rows), ""]
    lines += ["## Run settings", "", "```yaml", config_yaml(results), "```", ""]
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 64rem; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.5rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failed td { background: #fff4f2; color: #6b2b20; }
tr.skipped td { background: #f7f7f2; color: #555; }
figure { margin: 1rem 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { font-size: 0.88rem; color: #555; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
"""

# Sets data-images-loaded="<loaded>/<total>" on <body> once the page has loaded, counting
# the images that decoded (naturalWidth > 0). The headless browser test reads it.
_IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", loaded + "/" + images.length);
});
"""

# Columns of the comparison table that hold numbers, so they align right.
_NUMBER_COLUMNS = {2, 3, 4, 5, 6, 7, 8, 9}


def html_report(results: dict, plots: dict[str, Path]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title(results))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(title(results))}</h1>",
        '<dl class="facts">',
        *(f"<dt>{_h(name)}</dt><dd>{_h(value)}</dd>" for name, value in summary_facts(results)),
        "</dl>",
        "<h2>Comparison</h2>",
        _html_comparison(results),
    ]
    sentence = pareto_sentence(results)
    if sentence:
        parts.append(f"<p>{_h(sentence)}</p>")
    if plots:
        parts.append("<h2>Charts</h2>")
        for name, path in plots.items():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            caption = PLOT_CAPTIONS[name]
            parts.append(f'<figure><img src="data:image/png;base64,{encoded}" alt="{_h(PLOT_TITLES[name])}"><figcaption>{_h(caption)}</figcaption></figure>')
    headers, rows = settings_rows(results)
    if rows:
        parts += ["<h2>Training settings</h2>", _html_table(headers, rows)]
    parts += [
        "<h2>Run settings</h2>",
        f"<pre>{_h(config_yaml(results))}</pre>",
        f"<script>{_IMAGE_CHECK}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _h(text) -> str:
    return html.escape(str(text), quote=True)


def _html_comparison(results: dict) -> str:
    headers, rows = comparison_rows(results)
    body = []
    for row in rows:
        status = row[1]
        cells = "".join(f'<td class="number">{_h(c)}</td>' if i in _NUMBER_COLUMNS else f"<td>{_h(c)}</td>" for i, c in enumerate(row))
        body.append(f'<tr class="{_h(status)}">{cells}</tr>')
    head = "".join(f"<th>{_h(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_h(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name and rename, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
