"""Data-parallel runs: rank helpers from the launcher's environment, and two torchrun processes on the CPU."""

import json
import os
import subprocess
import sys

import pytest
import torch

from peftlab import RunConfig, distributed
from peftlab.runner import train


def test_rank_and_world_size_from_launcher_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.rank() == 1
    assert distributed.world_size() == 4
    assert distributed.local_world_size() == 2
    assert distributed.is_distributed()
    assert not distributed.is_main_process()


def test_single_process_without_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.rank() == 0
    assert distributed.world_size() == 1
    assert distributed.is_main_process()
    assert not distributed.is_distributed()
    assert distributed.broadcast_from_main({"out": "runs/x"}) == {"out": "runs/x"}
    distributed.barrier()  # returns at once: there is no process group to wait for


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_threads_shared_between_local_processes(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert distributed.set_thread_count() == expected
    assert torch.get_num_threads() == expected


def test_threads_follow_omp_num_threads(monkeypatch, restore_threads):
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert distributed.set_thread_count() == 1
    assert torch.get_num_threads() == 1


def test_torchrun_two_processes_match_one(tiny_bert, tmp_path):
    """Two data-parallel processes write one run folder whose counts and pre-training metrics equal a one-process run's."""
    two = tmp_path / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "peftlab", "train", "--model", str(tiny_bert), "--method", "lora", "--max-steps", "3", "--batch-size", "8", "--out", str(two),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.count("results: ") == 1  # only rank 0 prints the table

    one = train(RunConfig(model=str(tiny_bert), methods=["lora"], max_steps=3, batch_size=8, out=str(tmp_path / "one")), quiet=True)
    saved = json.loads((two / "results.json").read_text())
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("results.json")) == ["one/results.json", "two/results.json"]
    assert saved["environment"]["processes"] == 2
    assert one["environment"]["processes"] == 1

    run, reference = saved["runs"][0], one["runs"][0]
    assert run["status"] == "ok"
    assert run["params"] == reference["params"]
    assert run["modules"] == reference["modules"]
    assert run["train_steps"] == 3
    # Before training both start from the same seeded model, so equal metrics show that
    # the two ranks together evaluated every row of the test split, each row once.
    assert run["metrics"]["before"]["accuracy"] == reference["metrics"]["before"]["accuracy"]
    assert run["metrics"]["before"]["f1_macro"] == reference["metrics"]["before"]["f1_macro"]
    assert run["metrics"]["before"]["loss"] == pytest.approx(reference["metrics"]["before"]["loss"], rel=1e-5)

    assert (two / "lora" / "adapter_model.safetensors").is_file()
    assert run["artifact_bytes"] == sum(p.stat().st_size for p in (two / "lora").rglob("*") if p.is_file())
    assert not list(two.glob(".*"))  # no Trainer scratch folder left behind by either rank


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("ACCELERATE_USE_FSDP", "true", "FSDP is not supported: rank 0 would save only its shard of the weights"),
        ("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3", "DeepSpeed ZeRO stage 3 is not supported: rank 0 would save only its shard of the weights"),
    ],
)
def test_sharded_launch_rejected(monkeypatch, name, value, message):
    from peftlab.errors import PeftlabError

    monkeypatch.setenv(name, value)
    with pytest.raises(PeftlabError, match=f"^{message}"):
        distributed.check_sharding()


def test_zero_stage_2_accepted(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    distributed.check_sharding()
