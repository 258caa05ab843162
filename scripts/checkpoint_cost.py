"""Time every checkpoint save of a compare and print its size, per method.

    python scripts/checkpoint_cost.py --data path/to/sst2 --label-names negative,positive --out /tmp/checkpoint-cost

Runs `full` and `lora` on MiniLM with a checkpoint after each of 5 steps. A
save is timed from the end of the step that triggers it to the Trainer's
on_save callback, which runs once the checkpoint folder is complete.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from transformers import TrainerCallback

from peftlab import RunConfig, runner

save_seconds: dict[str, list[float]] = {}
checkpoint_bytes: dict[str, int] = {}


class SaveTimer(TrainerCallback):
    def __init__(self, method: str):
        self.method = method
        self.start = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self.start = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        save_seconds.setdefault(self.method, []).append(time.perf_counter() - self.start)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        checkpoint_bytes[self.method] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Data folder or file, as for peftlab compare.")
    parser.add_argument("--label-names", default=None, help="Names of integer labels, comma-separated.")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--steps", type=int, default=5, help="Training steps per method, each followed by a checkpoint.")
    parser.add_argument("--out", required=True, help="A new run folder.")
    args = parser.parse_args()

    train_resumable = runner.train_resumable

    def timed(trainer, method, resume_from):
        trainer.add_callback(SaveTimer(method))
        return train_resumable(trainer, method, resume_from)

    runner.train_resumable = timed
    config = RunConfig(
        model=args.model, data=args.data, label_names=args.label_names.split(",") if args.label_names else None,
        methods=args.methods.split(","), max_steps=args.steps, save_steps=1, out=args.out,
    )
    results = runner.compare(config, quiet=True)

    for run in results["runs"]:
        method = run["method"]
        times = save_seconds[method]
        step_seconds = (run["train_seconds"] - sum(times)) / run["train_steps"]
        print(
            f"{method}: {len(times)} saves, median {statistics.median(times):.3f} s, max {max(times):.3f} s, "
            f"checkpoint {checkpoint_bytes[method] / 2**20:.1f} MiB, training step {step_seconds:.2f} s without saves"
        )


if __name__ == "__main__":
    main()
