"""Charts of a train or compare run, drawn from results.json into PNG files in the run folder.

Figures are built as ``matplotlib.figure.Figure`` objects on the Agg canvas,
never through pyplot, so drawing a report does not change the backend of the
process that calls it (a notebook keeps its inline backend).
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# File name of each chart in the run folder, in the order the reports show them.
PLOT_FILES = {
    "pareto": "params_vs_metric.png",
    "before_after": "metric_before_after.png",
    "loss": "loss_curves.png",
    "cost": "time_and_memory.png",
}

DPI = 110


def completed_runs(results: dict) -> list[dict]:
    """Return the runs with status "ok", because failed and skipped runs have no numbers to plot."""
    return [run for run in results["runs"] if run.get("status") == "ok"]


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Return the names of the points that no other point beats, sorted by cost.

    Each point is ``(name, cost, score)``: fewer trainable parameters and a
    higher metric are better. A point is dominated when another point has a
    cost no higher and a score no lower, and is strictly better in one of them.
    """
    front = []
    for name, cost, score in points:
        dominated = any(
            other_cost <= cost and other_score >= score and (other_cost < cost or other_score > score)
            for _, other_cost, other_score in points
        )
        if not dominated:
            front.append((cost, -score, name))
    return [name for _, _, name in sorted(front)]


def method_colors(results: dict) -> dict[str, str]:
    """Give each method one colour of the tab10 cycle, the same in every chart of the run."""
    palette = [f"C{i}" for i in range(10)]
    return {run["method"]: palette[i % len(palette)] for i, run in enumerate(results["runs"])}


def metric_label(results: dict, metric: str) -> str:
    split = results["data"].get("eval_split", "test")
    return f"{split} {'macro-F1' if metric == 'f1_macro' else metric.replace('_', ' ')}"


def _primary(results: dict) -> dict:
    return results.get("metric") or {"name": "accuracy", "higher_is_better": True}


# ---------------------------------------------------------------------------
# The four charts


def plot_params_vs_metric(results: dict, metric: str | None = None) -> Figure | None:
    """Plot trainable parameters (log scale) against the metric after training, with the Pareto front as a step line."""
    runs = [run for run in completed_runs(results) if run["params"]["trainable_params"] > 0]
    if not runs:
        return None
    metric = metric or _primary(results)["name"]
    sign = 1 if _primary(results).get("higher_is_better", True) or metric != _primary(results)["name"] else -1
    colors = method_colors(results)
    points = [(run["method"], run["params"]["trainable_params"], run["metrics"]["after"][metric]) for run in runs]
    front = pareto_front([(name, cost, sign * score) for name, cost, score in points])
    by_name = {name: (cost, score) for name, cost, score in points}

    figure = _new_figure(6.4, 4.2)
    axes = figure.add_subplot()
    for name, cost, score in points:
        on_front = name in front
        axes.scatter(cost, score, s=70 if on_front else 45, color=colors[name], edgecolor="black" if on_front else "none", zorder=3)
        axes.annotate(name, (cost, score), textcoords="offset points", xytext=(6, 5), fontsize=9)
    front_x = [by_name[name][0] for name in front]
    front_y = [by_name[name][1] for name in front]
    # Past a front point, nothing cheaper scores higher: a step drawn after each point shows that.
    axes.step(front_x, front_y, where="post", color="black", linewidth=1, linestyle="--", label="Pareto front", zorder=2)
    axes.set_xscale("log")
    axes.set_xlabel("trainable parameters (log scale)")
    axes.set_ylabel(f"{metric_label(results, metric)} after training")
    axes.set_title("Trainable parameters against the metric")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right" if sign > 0 else "upper right", fontsize=9)
    _pad_log_axis(axes, front_x + [cost for _, cost, _ in points])
    return figure


def plot_before_after(results: dict, metric: str | None = None) -> Figure | None:
    """Plot each method's metric before and after training as paired bars."""
    runs = completed_runs(results)
    if not runs:
        return None
    metric = metric or _primary(results)["name"]
    names = [run["method"] for run in runs]
    before = [run["metrics"]["before"][metric] for run in runs]
    after = [run["metrics"]["after"][metric] for run in runs]
    positions = range(len(runs))
    width = 0.38

    figure = _new_figure(max(5.0, 1.3 * len(runs) + 2.5), 4.0)
    axes = figure.add_subplot()
    bars_before = axes.bar([x - width / 2 for x in positions], before, width, label="before", color="#b0b0b0")
    bars_after = axes.bar([x + width / 2 for x in positions], after, width, label="after", color="#2f6db5")
    axes.bar_label(bars_before, fmt="%.3f", fontsize=8, padding=2)
    axes.bar_label(bars_after, fmt="%.3f", fontsize=8, padding=2)
    axes.set_xticks(list(positions), names)
    axes.set_ylabel(metric_label(results, metric))
    highest = max(before + after)
    axes.set_ylim(0, highest * 1.2 if highest > 0 else 1.0)  # room above the bars for the legend
    axes.set_title("Metric before and after training")
    axes.legend(loc="upper center", ncols=2, fontsize=9)
    axes.grid(True, axis="y", alpha=0.3)
    return figure


def plot_loss_curves(results: dict) -> Figure | None:
    """Plot the training loss against the optimizer step, one line per method."""
    runs = [run for run in completed_runs(results) if run.get("loss_curve")]
    if not runs:
        return None
    colors = method_colors(results)

    figure = _new_figure(6.4, 4.0)
    axes = figure.add_subplot()
    for run in runs:
        steps = [point["step"] for point in run["loss_curve"]]
        losses = [point["loss"] for point in run["loss_curve"]]
        axes.plot(steps, losses, marker="o", markersize=3, linewidth=1.5, color=colors[run["method"]], label=run["method"])
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss")
    axes.set_title("Training loss")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=9)
    return figure


def plot_time_and_memory(results: dict) -> Figure | None:
    """Plot training time and peak memory per method, side by side."""
    runs = completed_runs(results)
    if not runs:
        return None
    colors = method_colors(results)
    names = [run["method"] for run in runs]
    bar_colors = [colors[name] for name in names]
    device = results.get("environment", {}).get("device", "cpu")
    memory_label = "peak resident memory growth (MB)" if device == "cpu" else "peak allocated memory (MB)"

    figure = _new_figure(8.0, max(2.6, 0.5 * len(runs) + 1.6))
    time_axes, memory_axes = figure.subplots(1, 2)
    for axes, values, label, fmt in (
        (time_axes, [run["train_seconds"] for run in runs], "training time (s)", "%.1f"),
        (memory_axes, [run["peak_memory_mb"] for run in runs], memory_label, "%.0f"),
    ):
        bars = axes.barh(names, values, color=bar_colors)
        axes.bar_label(bars, fmt=fmt, fontsize=8, padding=3)
        axes.set_xlabel(label)
        axes.invert_yaxis()  # first method on top, as in the tables
        axes.grid(True, axis="x", alpha=0.3)
        axes.margins(x=0.2)
    figure.suptitle(f"Training cost on {device}")
    return figure


# ---------------------------------------------------------------------------
# Files


def save_plots(results: dict, folder: Path) -> dict[str, Path]:
    """Draw every chart that has data, write it as a PNG into ``folder`` and return the written files by chart name.

    A chart without data (no completed run, no logged loss) is not drawn, and a
    file of that name left by an earlier rendering is removed, so the folder
    never shows a chart that the results no longer support.
    """
    builders = {
        "pareto": plot_params_vs_metric,
        "before_after": plot_before_after,
        "loss": plot_loss_curves,
        "cost": plot_time_and_memory,
    }
    written = {}
    for name, build in builders.items():
        path = Path(folder) / PLOT_FILES[name]
        figure = build(results)
        if figure is None:
            path.unlink(missing_ok=True)
            continue
        tmp = path.with_name(f".{path.name}.tmp")  # rename into place, so a crash never leaves half a PNG
        figure.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
        written[name] = path
    return written


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _pad_log_axis(axes, values: list[float]) -> None:
    """Widen a log-scaled x axis so labels beside the outermost points stay inside the chart."""
    low, high = min(values), max(values)
    axes.set_xlim(low / 3, high * 6)
