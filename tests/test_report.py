"""Reports rendered from a results.json built here: CSV, Markdown, self-contained HTML, charts and the Pareto front."""

import base64
import csv
import io
import json
import re

import pytest

from peftlab.cli import main
from peftlab.plots import PLOT_FILES, pareto_front
from peftlab.report import CSV_COLUMNS, render_run, write_report


def _ok_run(method, trainable, before, after, seconds, memory, steps=4):
    return {
        "method": method,
        "status": "ok",
        "params": {"base_params": 1000, "trainable_params": trainable, "added_params": 0, "trainable_pct": trainable / 10},
        "modules": [],
        "options": {},
        "lr": 1e-3,
        "metrics": {
            "before": {"accuracy": before, "f1_macro": before - 0.1, "loss": 0.7},
            "after": {"accuracy": after, "f1_macro": after - 0.1, "loss": 0.5},
            "validation_after": {"accuracy": after, "f1_macro": after - 0.1, "loss": 0.5},
        },
        "train_seconds": seconds,
        "train_steps": steps,
        "peak_memory_mb": memory,
        "artifact_bytes": 2048,
        "path": method,
        "loss_curve": [{"step": s, "loss": 0.7 - 0.05 * s} for s in range(1, steps + 1)],
    }


def sample_results() -> dict:
    """Three completed methods, one failed and one skipped, as runner.compare writes them."""
    full = _ok_run("full", 1000, 0.5, 0.9, 30.0, 600.0)
    head = _ok_run("head", 10, 0.5, 0.7, 5.0, 50.0)
    lora = _ok_run("lora", 100, 0.5, 0.65, 20.0, 300.0)
    lora["options"] = {"use_dora": True}
    return {
        "peftlab_version": "0.1.0",
        "command": "compare",
        "created": "2026-01-01T00:00:00+00:00",
        "model": {"name": "tiny", "path": "/models/tiny", "model_type": "bert", "task": "seq-cls"},
        "data": {
            "source": "demo", "text_column": "text", "label_column": "label", "label_names": ["negative", "positive"],
            "splits": {"train": 18, "validation": 2, "test": 4}, "eval_split": "test", "notes": [], "truncated": {"train": 0},
        },
        "config": {"model": "tiny", "methods": ["full", "head", "lora", "ia3", "prefix"], "max_steps": 4},
        "environment": {"device": "cpu", "cpu_count": 2, "torch_threads": 2, "packages": {"torch": "2.0"}},
        "runs": [
            full,
            head,
            lora,
            {"method": "ia3", "status": "failed", "reason": "out of memory <at step 3> | try --batch-size 8"},
            {"method": "prefix", "status": "skipped", "reason": "does not support bert"},
        ],
    }


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(sample_results()))
    return tmp_path


def test_pareto_front_drops_dominated_points():
    points = [("full", 1000, 0.9), ("head", 10, 0.7), ("lora", 100, 0.65)]
    assert pareto_front(points) == ["head", "full"]


def test_pareto_front_keeps_ties_and_orders_by_cost():
    points = [("a", 50, 0.8), ("b", 50, 0.8), ("c", 10, 0.6), ("d", 100, 0.8)]
    assert pareto_front(points) == ["c", "a", "b"]


def test_write_report_files(run_dir):
    written = write_report(sample_results(), run_dir)
    names = {path.name for path in written}
    assert names == set(PLOT_FILES.values()) | {"results.csv", "report.md", "report.html"}
    for name in PLOT_FILES.values():
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob(".*.tmp"))


def test_csv_one_flat_row_per_method(run_dir):
    write_report(sample_results(), run_dir)
    rows = list(csv.DictReader(io.StringIO((run_dir / "results.csv").read_text())))
    assert list(rows[0]) == CSV_COLUMNS
    assert [row["method"] for row in rows] == ["full", "head", "lora", "ia3", "prefix"]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok", "failed", "skipped"]
    full = rows[0]
    assert full["trainable_params"] == "1000"
    assert full["before_accuracy"] == "0.5"
    assert full["after_accuracy"] == "0.9"
    assert full["validation_after_loss"] == "0.5"
    assert full["train_seconds"] == "30.0"
    assert full["eval_split"] == "test"
    assert rows[2]["options"] == '{"use_dora": true}'
    assert rows[3]["reason"] == "out of memory <at step 3> | try --batch-size 8"
    assert rows[3]["after_accuracy"] == ""


def test_markdown_shows_reasons_and_front(run_dir):
    write_report(sample_results(), run_dir)
    text = (run_dir / "report.md").read_text()
    assert "| ia3 | failed | - |" in text
    assert "out of memory <at step 3> \\| try --batch-size 8" in text
    assert "| prefix | skipped |" in text
    assert "does not support bert" in text
    assert "Pareto front, from fewest trainable parameters up: head, full." in text
    for name in PLOT_FILES.values():
        assert f"]({name})" in text


def test_html_is_self_contained(run_dir):
    write_report(sample_results(), run_dir)
    page = (run_dir / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == len(PLOT_FILES)
    for source in images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r'(src|href)="(?!data:)', page)  # no file or network references
    assert "<link" not in page
    assert "url(" not in page
    assert "@import" not in page
    assert "<style>" in page


def test_html_escapes_reasons(run_dir):
    write_report(sample_results(), run_dir)
    page = (run_dir / "report.html").read_text()
    assert "out of memory &lt;at step 3&gt; | try --batch-size 8" in page
    assert "<at step 3>" not in page
    assert '<tr class="failed">' in page
    assert '<tr class="skipped">' in page


def test_no_completed_run_draws_no_charts(run_dir):
    results = sample_results()
    results["runs"] = results["runs"][3:]
    (run_dir / "params_vs_metric.png").write_bytes(b"stale")
    written = write_report(results, run_dir)
    assert {path.name for path in written} == {"results.csv", "report.md", "report.html"}
    assert not list(run_dir.glob("*.png"))
    assert "<img" not in (run_dir / "report.html").read_text()
    assert "Pareto front" not in (run_dir / "report.md").read_text()


def test_report_command_renders_again(run_dir, capsys):
    code = main(["report", str(run_dir)])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    assert str(run_dir / "report.html") in printed
    assert (run_dir / "results.csv").is_file()


def test_render_run_errors(tmp_path):
    from peftlab.errors import PeftlabError

    with pytest.raises(PeftlabError, match="no results.json in"):
        render_run(tmp_path)
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(PeftlabError, match="is not valid JSON"):
        render_run(tmp_path)


def test_report_command_missing_folder(tmp_path, capsys):
    code = main(["report", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: no results.json in")
    assert len(err.splitlines()) == 1


# ---------------------------------------------------------------------------
# In a real browser: headless Chromium, local files only


def _chromium() -> str:
    import shutil

    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")


def _run_chromium(args, tmp_path):
    import subprocess

    profile = tmp_path / "chromium-profile"
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_html_renders_in_chromium(run_dir, tmp_path):
    write_report(sample_results(), run_dir)
    page = (run_dir / "report.html").resolve().as_uri()
    dom = _run_chromium(["--dump-dom", page], tmp_path).stdout
    assert f'data-images-loaded="{len(PLOT_FILES)}/{len(PLOT_FILES)}"' in dom
    assert "<h1>peftlab compare: tiny on demo</h1>" in dom


def test_html_screenshot_not_blank(run_dir, tmp_path):
    from PIL import Image, ImageStat

    write_report(sample_results(), run_dir)
    shot = tmp_path / "report.png"
    _run_chromium(["--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}", (run_dir / "report.html").resolve().as_uri()], tmp_path)
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    extrema = image.getextrema()
    assert extrema[0] < 100  # dark text and chart lines are present
    assert ImageStat.Stat(image).stddev[0] > 20  # not a single flat colour
    # The charts start below the tables: the lower half must hold drawn content too.
    lower = image.crop((0, 1200, 1200, 2400))
    assert ImageStat.Stat(lower).stddev[0] > 20
