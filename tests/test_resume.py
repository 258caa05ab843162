"""Checkpoints, --resume, --overwrite, Ctrl-C and failed methods, on a tiny random BERT (seconds per run)."""

import json
import os
import signal

import pytest
import torch
import transformers
from transformers import TrainerCallback

from peftlab import RunConfig, runner
from peftlab.checkpoints import last_checkpoint, safe_child
from peftlab.cli import main
from peftlab.errors import PeftlabError, RunInterrupted

METHODS = ["full", "lora"]


class Crash(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in peftlab catches it and no cleanup runs."""


class _CrashAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"crash at step {state.global_step}")


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rows = [("great film, loved it", "positive"), ("dull and far too long", "negative"), ("wonderful and moving", "positive"), ("a waste of an evening", "negative")]
    (folder / "train.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows * 5))
    (folder / "test.csv").write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    return folder


def _config(tiny_bert, data_folder, out, **changes):
    settings = dict(model=str(tiny_bert), data=str(data_folder), methods=METHODS, max_steps=6, batch_size=4, save_steps=2, out=str(out))
    return RunConfig(**(settings | changes))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert, data_folder):
    """An uninterrupted compare, the result every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    return runner.compare(_config(tiny_bert, data_folder, out), quiet=True)


def _crash_in(monkeypatch, method, step):
    original = runner.train_resumable

    def crashing(trainer, name, resume_from):
        if name == method:
            trainer.add_callback(_CrashAtStep(step))
        return original(trainer, name, resume_from)

    monkeypatch.setattr(runner, "train_resumable", crashing)


def _metrics(results):
    return {run["method"]: run["metrics"] for run in results["runs"]}


def test_same_seed_gives_identical_metrics(reference, tiny_bert, data_folder, tmp_path):
    again = runner.compare(_config(tiny_bert, data_folder, tmp_path / "again"), quiet=True)
    assert _metrics(again) == _metrics(reference)
    assert [run["loss_curve"] for run in again["runs"]] == [run["loss_curve"] for run in reference["runs"]]
    assert again["seeds"] == {"seed": 42, "data_seed": 42}
    assert again["environment"]["packages"]["transformers"] == transformers.__version__


def test_finished_run_leaves_no_checkpoints(reference):
    out = reference["out"]
    assert not os.path.exists(os.path.join(out, "checkpoints"))
    assert [run["resumed_from_step"] for run in reference["runs"]] == [None, None]


@pytest.mark.parametrize("method, step, checkpoint", [("full", 1, None), ("lora", 3, 2), ("lora", 5, 4)])
def test_crash_then_resume_matches_uninterrupted(reference, tiny_bert, data_folder, tmp_path, monkeypatch, method, step, checkpoint):
    out = tmp_path / "run"
    _crash_in(monkeypatch, method, step)
    with pytest.raises(Crash):
        runner.compare(_config(tiny_bert, data_folder, out), quiet=True)

    saved = json.loads((out / "results.json").read_text())
    finished = [run["method"] for run in saved["runs"]]
    assert finished == METHODS[: METHODS.index(method)]
    found = last_checkpoint(out / "checkpoints" / method)
    if checkpoint is None:
        assert found is None
    else:
        assert found.name == f"checkpoint-{checkpoint}"

    monkeypatch.undo()
    resumed = runner.compare(_config(tiny_bert, data_folder, out, resume=True), quiet=True)
    assert _metrics(resumed) == _metrics(reference)
    assert [run["train_steps"] for run in resumed["runs"]] == [6, 6]
    by_method = {run["method"]: run for run in resumed["runs"]}
    assert by_method[method]["resumed_from_step"] == checkpoint
    assert by_method[method]["loss_curve"] == next(r for r in reference["runs"] if r["method"] == method)["loss_curve"]
    assert json.loads((out / "results.json").read_text())["resumed"] == resumed["resumed"]
    assert len(resumed["resumed"]) == 1


def test_resume_keeps_finished_methods_without_rerunning(tiny_bert, data_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _crash_in(monkeypatch, "lora", 1)
    with pytest.raises(Crash):
        runner.compare(_config(tiny_bert, data_folder, out), quiet=True)
    first = json.loads((out / "results.json").read_text())["runs"][0]
    monkeypatch.undo()

    trained = []
    original = runner.run_method
    monkeypatch.setattr(runner, "run_method", lambda prepared, method, *args, **kwargs: trained.append(method.name) or original(prepared, method, *args, **kwargs))
    resumed = runner.compare(_config(tiny_bert, data_folder, out, resume=True), quiet=True)
    assert trained == ["lora"]
    assert resumed["runs"][0] == first


def test_half_written_checkpoint_is_skipped(tmp_path):
    folder = tmp_path / "checkpoints" / "lora"
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (folder / "checkpoint-4").mkdir()
    (folder / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')
    (folder / "checkpoint-6").mkdir()
    assert last_checkpoint(folder) == folder / "checkpoint-2"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-2"]


def test_ctrl_c_saves_checkpoint_and_resumes(reference, tiny_bert, data_folder, tmp_path, monkeypatch, capsys):
    class SendSigint(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    original = runner.train_resumable

    def interrupted(trainer, name, resume_from):
        if name == "lora":
            trainer.add_callback(SendSigint())
        return original(trainer, name, resume_from)

    monkeypatch.setattr(runner, "train_resumable", interrupted)
    out = tmp_path / "run"
    argv = ["compare", "--model", str(tiny_bert), "--data", str(data_folder), "--methods", "full,lora", "--max-steps", "6", "--batch-size", "4", "--out", str(out)]
    code = main(["--quiet"] + argv)
    err = capsys.readouterr().err
    assert code == 130, err
    assert f"interrupted: lora stopped at step 4 of 6; checkpoint saved in {out / 'checkpoints' / 'lora' / 'checkpoint-4'}; to continue, run the same command again with --resume --out {out}" in err
    saved = json.loads((out / "results.json").read_text())
    assert [(run["method"], run["status"]) for run in saved["runs"]] == [("full", "ok"), ("lora", "interrupted")]
    assert (out / "checkpoints" / "lora" / "checkpoint-4" / "trainer_state.json").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    monkeypatch.undo()
    assert main(["--quiet"] + argv + ["--resume", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert _metrics(resumed) == _metrics(reference)
    assert resumed["runs"][1]["resumed_from_step"] == 4


def test_diverging_method_fails_others_still_run(tiny_bert, data_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--quiet", "compare", "--model", str(tiny_bert), "--data", str(data_folder), "--methods", "head,full", "--max-steps", "6",
                 "--batch-size", "4", "--lr", "1e30", "--out", str(out)])
    saved = json.loads((out / "results.json").read_text())
    statuses = {run["method"]: run["status"] for run in saved["runs"]}
    assert code == 1
    assert statuses["full"] == "failed"
    assert saved["runs"][1]["reason"].startswith("training loss became nan at step ")
    assert saved["runs"][1]["reason"].endswith("; try a lower --lr")
    assert not (out / "full").exists()  # no artifact of a diverged model
    assert "full: failed: training loss became nan" in capsys.readouterr().err


def test_out_of_memory_is_isolated(tiny_bert, data_folder, tmp_path, monkeypatch):
    original = runner.train_resumable

    def out_of_memory(trainer, name, resume_from):
        if name == "full":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(trainer, name, resume_from)

    monkeypatch.setattr(runner, "train_resumable", out_of_memory)
    out = tmp_path / "run"
    results = runner.compare(_config(tiny_bert, data_folder, out), quiet=True)
    assert [(run["method"], run["status"]) for run in results["runs"]] == [("full", "failed"), ("lora", "ok")]
    assert results["runs"][0]["reason"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert not (out / "checkpoints").exists()
    assert (out / "lora" / "adapter_model.safetensors").is_file()


def test_resume_reruns_failed_method(tiny_bert, data_folder, tmp_path, monkeypatch):
    original = runner.train_resumable

    def fail_once(trainer, name, resume_from):
        if name == "lora":
            raise RuntimeError("flaky device")
        return original(trainer, name, resume_from)

    monkeypatch.setattr(runner, "train_resumable", fail_once)
    out = tmp_path / "run"
    runner.compare(_config(tiny_bert, data_folder, out, methods=["lora"]), quiet=True)
    monkeypatch.undo()
    resumed = runner.compare(_config(tiny_bert, data_folder, out, methods=["lora"], resume=True), quiet=True)
    assert [(run["method"], run["status"]) for run in resumed["runs"]] == [("lora", "ok")]


def test_overwrite_replaces_previous_run(tiny_bert, data_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"runs": [{"method": "old", "status": "ok", "path": "old"}]}))
    (out / "old").mkdir()
    (out / "notes.txt").write_text("mine")
    results = runner.compare(_config(tiny_bert, data_folder, out, methods=["lora"], max_steps=1, overwrite=True), quiet=True)
    assert [run["method"] for run in results["runs"]] == ["lora"]
    assert not (out / "old").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_with_other_settings_rejected(reference, tiny_bert, data_folder):
    with pytest.raises(PeftlabError, match=r"^--resume: --lr is 0.5 but the run in '.*' used None; pass the same settings, or --overwrite to start again$"):
        runner.compare(_config(tiny_bert, data_folder, reference["out"], lr=0.5, resume=True), quiet=True)


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".hidden", "", "x/../../y"])
def test_names_cannot_leave_output_folder(tmp_path, name):
    with pytest.raises(PeftlabError, match="cannot be used as a folder name|points outside"):
        safe_child(tmp_path, name, "method name")


def test_plain_method_names_are_folders(tmp_path):
    assert safe_child(tmp_path, "top-layers:2", "method name") == tmp_path / "top-layers:2"


def test_run_interrupted_is_not_a_peftlab_error():
    assert not issubclass(RunInterrupted, PeftlabError)
    assert RunInterrupted.exit_code == 130
