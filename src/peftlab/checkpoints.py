"""Run folders that survive a crash: the --out policy, training checkpoints, resume, Ctrl-C and failed methods.

A run folder contains results.json from its first moment, rewritten atomically
after every method, so it always lists the methods that finished. Training
checkpoints are transformers' own (weights in safetensors, optimizer,
scheduler, RNG states and the data position) under ``checkpoints/<method>/``;
``--resume`` keeps the finished methods and continues the others from their
last complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import threading
from datetime import datetime
from pathlib import Path

from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peftlab.config import RunConfig
from peftlab.errors import PeftlabError, RunInterrupted

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"  # the last file Trainer._save_checkpoint writes (transformers 5.25)
FINISHED = ("ok", "skipped")  # statuses a resumed run keeps; failed and interrupted methods run again
# Settings that may change between a run and its resumption because they do not change what is trained.
RUN_CONTROL_FIELDS = ("out", "resume", "overwrite", "save_steps")
# Files a run writes into its folder besides the method folders, removed by --overwrite.
RUN_FILES = ("config.yaml", "results.csv", "report.md", "report.html", "tensorboard", CHECKPOINTS_DIR)
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")


# ---------------------------------------------------------------------------
# Paths inside the run folder


def safe_child(root: Path, name: str, what: str) -> Path:
    """Return ``root / name``, raising PeftlabError when ``name`` would leave ``root`` or is not a plain file name."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise PeftlabError(
            f"{what} {name!r} cannot be used as a folder name inside {str(root)!r}; use letters, digits and . _ : + - (not starting with a dot)"
        )
    path = root / name
    if path.resolve().parent != root.resolve():
        raise PeftlabError(f"{what} {name!r} points outside the output folder {str(root)!r}")
    return path


def checkpoint_dir(out: Path, method: str) -> Path:
    return safe_child(safe_child(out, CHECKPOINTS_DIR, "checkpoint folder"), method, "method name")


# ---------------------------------------------------------------------------
# The --out policy


def open_out_dir(config: RunConfig, command: str) -> tuple[Path, dict | None]:
    """Create the run folder, or reopen it for --resume or --overwrite; return it and the results to resume from.

    An --out that already contains results.json is rejected unless --resume or
    --overwrite says what to do with it.
    """
    if config.resume and config.overwrite:
        raise PeftlabError("--resume and --overwrite contradict each other: pass --resume to continue the run in --out, or --overwrite to replace it")
    if config.out is None:
        if config.resume:
            raise PeftlabError("--resume needs --out naming the run folder to continue")
        return _new_timestamped_folder(command), None

    folder = Path(config.out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise PeftlabError(f"--out {config.out!r} is a file; pass a folder")
    results_path = folder / RESULTS_FILE
    if not results_path.exists():
        if config.resume:
            raise PeftlabError(f"--out {config.out!r} contains no run to resume (no {RESULTS_FILE}); drop --resume to start a new run there")
        folder.mkdir(parents=True, exist_ok=True)
        return folder, None

    if config.resume:
        previous = read_previous_results(results_path)
        check_same_run(previous, config, command)
        return folder, previous
    if config.overwrite:
        previous = _read_json_or_none(results_path)
        remove_previous_run(folder, previous)
        return folder, None
    raise PeftlabError(f"--out {config.out!r} already holds a run ({RESULTS_FILE}); pass --resume to continue it, --overwrite to replace it, or choose a new folder")


def _new_timestamped_folder(command: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path("runs") / f"{stamp}-{command}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = Path("runs") / f"{stamp}-{command}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def _read_json_or_none(path: Path) -> dict | None:
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def read_previous_results(path: Path) -> dict:
    previous = _read_json_or_none(path)
    if previous is None or not isinstance(previous.get("runs"), list) or not isinstance(previous.get("config"), dict):
        raise PeftlabError(f"{str(path)!r} is not a results file peftlab wrote, so the run cannot be resumed; pass --overwrite to start it again")
    return previous


def check_same_run(previous: dict, config: RunConfig, command: str) -> None:
    """Reject a resume whose settings differ from the run it continues: its metrics would mix two experiments."""
    if previous.get("command") != command:
        raise PeftlabError(f"--resume: the run in {config.out!r} was started by `peftlab {previous.get('command')}`, not `peftlab {command}`; resume it with the same command")
    now = json.loads(json.dumps(config.to_dict()))
    before = previous["config"]
    for key in sorted(set(now) | set(before)):
        if key in RUN_CONTROL_FIELDS:
            continue
        if now.get(key) != before.get(key):
            flag = "--" + key.replace("_", "-")
            raise PeftlabError(
                f"--resume: {flag} is {now.get(key)!r} but the run in {config.out!r} used {before.get(key)!r}; pass the same settings, or --overwrite to start again"
            )


def check_same_data(previous: dict, results: dict) -> None:
    """Reject a resume whose data splits differ in size or labels from the run it continues (the files changed)."""
    keys = ("splits", "label_names")
    before = {key: previous.get("data", {}).get(key) for key in keys}
    now = {key: results["data"][key] for key in keys}
    if before != now:
        raise PeftlabError(
            f"--resume: the data now has splits {now['splits']} and labels {now['label_names']}, but the run used {before['splits']} and {before['label_names']}; "
            "restore the data files, or pass --overwrite to start again"
        )


def remove_previous_run(folder: Path, previous: dict | None) -> None:
    """Delete what an earlier run wrote into ``folder``: its results, reports, checkpoints and method folders.

    Other files in the folder are left alone. Method folders are taken from the
    earlier results.json and must be plain names inside ``folder``.
    """
    names = list(RUN_FILES)
    for run in (previous or {}).get("runs", []):
        if isinstance(run, dict) and isinstance(run.get("path"), str):
            names.append(run["path"])
    for name in names:
        path = safe_child(folder, name, "folder of the previous run")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    (folder / RESULTS_FILE).unlink()
    log.info("--overwrite: removed the previous run in %s", folder)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write to a temporary name, flush it to disk and rename, so a crash never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as file:
        file.write(json.dumps(payload, indent=2) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def finished_runs(previous: dict | None) -> dict[str, dict]:
    """Return the runs of an earlier attempt that a resume keeps, by method name."""
    if previous is None:
        return {}
    return {run["method"]: run for run in previous["runs"] if run.get("status") in FINISHED}


# ---------------------------------------------------------------------------
# Checkpoints


def last_checkpoint(folder: Path) -> Path | None:
    """Return the newest complete checkpoint in ``folder``, deleting any that a crash left half-written.

    Trainer writes trainer_state.json last, so a checkpoint folder without a
    readable one was cut off while saving and cannot be resumed from.
    """
    if not folder.is_dir():
        return None
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := pattern.match(p.name)))
    for _, path in reversed(found):
        state = _read_json_or_none(path / TRAINER_STATE_FILE)
        if state is not None and "global_step" in state:
            return path
        log.warning("removing the incomplete checkpoint %s: it has no readable %s", path, TRAINER_STATE_FILE)
        shutil.rmtree(path)
    return None


def remove_checkpoints(out: Path, method: str) -> None:
    shutil.rmtree(checkpoint_dir(out, method), ignore_errors=True)
    parent = out / CHECKPOINTS_DIR
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


class MethodFailed(PeftlabError):
    """A method's training failed (for example its loss diverged); a compare records it and goes on."""


class StopOnNonFiniteLoss(TrainerCallback):
    """Stop training at the first logged loss that is NaN or infinite and keep the reason.

    The loss is seen at logging steps only, so training stops at the logging step
    after the divergence. It relies on ``logging_nan_inf_filter=False``, which
    makes the Trainer log a NaN loss instead of averaging it away.
    """

    def __init__(self):
        self.reason: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss) and self.reason is None:
            self.reason = f"training loss became {loss} at step {state.global_step}; try a lower --lr"
            control.should_training_stop = True


class StopOnInterrupt(TrainerCallback):
    """Turn the first Ctrl-C into a checkpoint at the end of the current step and a clean stop.

    A second Ctrl-C raises KeyboardInterrupt at once, without a checkpoint.
    """

    def __init__(self):
        self.requested = False

    def handle_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt received: saving a checkpoint at the end of this step (press Ctrl-C again to stop at once)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def train_resumable(trainer: Trainer, method: str, resume_from: Path | None):
    """Run ``trainer.train``, from ``resume_from`` if given, stopping cleanly on Ctrl-C and on a non-finite loss.

    Raises RunInterrupted after Ctrl-C, once the checkpoint is saved, and
    MethodFailed when the loss diverged.

    NOTE: the Trainer does not checkpoint the loss summed since its last
    logging step. When a checkpoint step is not a logging step, the first loss
    logged after a resume averages fewer steps than in an uninterrupted run.
    The weights, and so the metrics, are the same.
    """
    divergence = StopOnNonFiniteLoss()
    interrupt = StopOnInterrupt()
    trainer.add_callback(divergence)
    trainer.add_callback(interrupt)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, interrupt.handle_sigint) if in_main_thread else None
    try:
        if resume_from is not None:
            log.info("%s: resuming from %s", method, resume_from)
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_handler)
    if interrupt.requested:
        saved = Path(trainer.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
        raise RunInterrupted(f"{method} stopped at step {trainer.state.global_step} of {trainer.state.max_steps}; checkpoint saved in {saved}")
    if divergence.reason is not None:
        raise MethodFailed(divergence.reason)
    return output


def failure_reason(error: Exception) -> str:
    """Return the one-line reason a failed method is recorded with."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
    return text if isinstance(error, PeftlabError) else f"{type(error).__name__}: {text}"
