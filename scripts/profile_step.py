"""Profile peftlab's training step of each method with torch.profiler and print where the time goes.

    python scripts/profile_step.py --data path/to/sst2 --methods full,lora --steps 4

The steps are those of `peftlab bench` (peftlab.bench.PeftlabVariant: the
Trainer as `peftlab train` builds it) on MiniLM with batches of 32 SST-2 texts
padded or cut to the median length of the length-grouped batches. The first
step, which allocates the optimizer states, is left out of the profile. For
each method the table lists the operators with the largest self CPU time,
summed over the profiled steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from peftlab.bench import PeftlabVariant, minilm_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Classification data (default: the built-in demo data).")
    parser.add_argument("--methods", default="full,lora", help="Methods to profile, comma-separated.")
    parser.add_argument("--steps", type=int, default=4, help="Profiled steps per method.")
    parser.add_argument("--rows", type=int, default=12, help="Operators listed per method.")
    args = parser.parse_args()

    bench = minilm_model(args.data, batch_size=32, seq_len=None, rows_needed=32 * (args.steps + 1))
    with tempfile.TemporaryDirectory(prefix="peftlab-profile-") as scratch:
        for name in args.methods.split(","):
            variant = PeftlabVariant(bench, name, Path(scratch))
            variant.train_steps(1)
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                seconds = variant.train_steps(args.steps + 1)
            print(f"\n{name}: {bench.batch_size} x {bench.seq_len} tokens per step, median step {sorted(seconds)[len(seconds) // 2]:.3f} s")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
