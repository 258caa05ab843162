"""Human-readable tables of parameter reports and comparison results."""

from __future__ import annotations


def human_count(n: int) -> str:
    """Format a parameter count compactly: 22.7M, 110.6K, 770."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}"
    return str(n)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for limit, suffix in ((2**30, "GB"), (2**20, "MB"), (2**10, "KB")):
        if n >= limit:
            return f"{n / limit:.1f} {suffix}"
    return f"{n} B"


def format_pct(pct: float) -> str:
    """Format a trainable share; tiny shares keep enough digits to tell them apart from zero."""
    return f"{pct:.2f}%" if pct >= 0.1 or pct == 0 else f"{pct:.4f}%"


def format_table(headers: list[str], rows: list[list[str]], align_right: set[int] = frozenset()) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in align_right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def comparison_table(results: dict) -> str:
    """The compare summary: one row per method."""
    from peftlab.report import METRIC_LABELS, format_metric, primary, secondary

    split = results["data"]["eval_split"]
    metric, second = primary(results), secondary(results)
    name = metric["name"]
    headers = ["method", "trainable", "trainable %", f"{split} {metric['label']} before -> after", METRIC_LABELS.get(second, second), "train time", "peak memory", "artifact"]
    rows = []
    notes = []  # reasons of skipped and failed methods, printed below the table so its columns stay narrow
    for run in results["runs"]:
        if run["status"] != "ok":
            rows.append([run["method"], "-", "-", f"{run['status']} (see below)", "-", "-", "-", "-"])
            notes.append(f"{run['method']} {run['status']}: {run.get('reason') or 'no reason recorded'}")
            continue
        params, metrics = run["params"], run["metrics"]
        rows.append(
            [
                run["method"],
                human_count(params["trainable_params"]),
                format_pct(params["trainable_pct"]),
                f"{format_metric(name, metrics['before'].get(name))} -> {format_metric(name, metrics['after'].get(name))}",
                format_metric(second, metrics["after"].get(second)),
                f"{run['train_seconds']:.1f} s",
                f"{run['peak_memory_mb']:.0f} MB",
                human_bytes(run["artifact_bytes"]),
            ]
        )
    table = format_table(headers, rows, align_right={1, 2, 5, 6, 7})
    return "\n\n".join([table, "\n".join(notes)]) if notes else table


def params_table(reports: list[dict]) -> str:
    headers = ["method", "base params", "trainable", "trainable %", "added"]
    rows = [
        [r["method"], f"{r['base_params']:,}", f"{r['trainable_params']:,}", f"{r['trainable_pct']:.4f}%", f"{r['added_params']:,}"]
        for r in reports
    ]
    return format_table(headers, rows, align_right={1, 2, 3, 4})


def modules_table(report: dict) -> str:
    headers = ["trainable module (layers folded into *)", "modules", "trainable params"]
    rows = [[m["name"], str(m["count"]), f"{m['trainable_params']:,}"] for m in report["modules"]]
    return format_table(headers, rows, align_right={1, 2})
