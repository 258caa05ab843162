"""End to end on the real all-MiniLM-L6-v2 with real data: slow (minutes), run in CI."""

import json
import subprocess
import sys

import pytest

from peftlab import RunConfig
from peftlab.runner import compare

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    return out, compare(RunConfig(out=str(out)), quiet=True)


def test_demo_defaults_every_method_improves(demo_run):
    _, results = demo_run
    assert [run["method"] for run in results["runs"]] == ["full", "head", "lora"]
    for run in results["runs"]:
        assert run["metrics"]["after"]["accuracy"] > run["metrics"]["before"]["accuracy"], run["method"]


def test_demo_lora_trains_under_one_percent(demo_run):
    _, results = demo_run
    lora = next(run for run in results["runs"] if run["method"] == "lora")
    assert lora["params"]["trainable_pct"] < 1.0
    assert lora["params"]["trainable_params"] == 6 * 3 * 8 * (384 + 384) + 384 * 2 + 2


def test_demo_eval_new_process_reproduces_accuracy(demo_run):
    out, results = demo_run
    for run in results["runs"]:
        done = subprocess.run(
            [sys.executable, "-m", "peftlab", "eval", str(out / run["path"]), "--json"], capture_output=True, text=True, check=True
        )
        assert json.loads(done.stdout)["accuracy"] == run["metrics"]["after"]["accuracy"], run["method"]


def test_sst2_lora_short_budget_learns(shared_data, tmp_path):
    config = RunConfig(data=str(shared_data / "sst2"), label_names=["negative", "positive"], methods=["lora"], max_steps=60, out=str(tmp_path / "sst2"))
    lora = compare(config, quiet=True)["runs"][0]
    assert lora["metrics"]["before"]["accuracy"] < 0.6
    assert lora["metrics"]["after"]["accuracy"] >= 0.75


def test_trec_string_labels_end_to_end(shared_data, tmp_path):
    config = RunConfig(data=str(shared_data / "trec"), methods=["lora"], max_steps=60, out=str(tmp_path / "trec"))
    results = compare(config, quiet=True)
    assert results["data"]["label_names"] == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert results["data"]["splits"] == {"train": 4906, "validation": 546, "test": 500}
    lora = results["runs"][0]
    assert lora["metrics"]["after"]["accuracy"] > lora["metrics"]["before"]["accuracy"] + 0.2
