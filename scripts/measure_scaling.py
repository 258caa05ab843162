"""Measure how the wall time of `peftlab compare` grows with the data size and with the number of methods.

    python scripts/measure_scaling.py --data path/to/sst2 --fractions 0.25,0.5,1 --methods full,head,lora --max-steps 50

Data size: one compare of --size-method for one epoch on the first 25%, 50% and
100% of the train split (validation and test stay whole), each in a new
process; an empty --fractions skips these runs. Methods: one compare with the
first 1, 2, ... of --methods for --max-steps steps each, on --methods-data
(default: --data; "demo" for the built-in demo data). The time is the wall time of the
process: imports, loading, tokenization, training, evaluation and saving. A
Markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_fraction(source: Path, fraction: float, folder: Path) -> int:
    """Copy the split files of ``source`` to ``folder``, keeping the first ``fraction`` of the train rows; return their count."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = 0
    for path in sorted(source.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        header, body = rows[0], rows[1:]
        if path.stem == "train":
            body = body[: round(len(body) * fraction)]
            kept = len(body)
        with (folder / path.name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([header, *body])
    return kept


def timed_compare(arguments: list[str], out: Path) -> tuple[float, dict]:
    command = [sys.executable, "-m", "peftlab", "-q", "compare", *arguments, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Folder with train.csv, and validation.csv and test.csv.")
    parser.add_argument("--fractions", default="0.25,0.5,1", help="Shares of the train split, comma-separated; empty to skip the data-size runs.")
    parser.add_argument("--methods-data", help="Data of the method-count runs: a folder, or demo for the built-in demo data (default: --data).")
    parser.add_argument("--size-method", default="lora", help="Method of the data-size runs (one epoch each).")
    parser.add_argument("--methods", default="full,head,lora", help="Methods of the method-count runs, added one at a time.")
    parser.add_argument("--max-steps", type=int, default=50, help="Training steps per method in the method-count runs.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="peftlab-scaling-") as scratch:
        scratch = Path(scratch)
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
        if fractions:
            print("| train rows | share | wall s | train s (sum over methods) | steps |")
            print("| ---: | ---: | ---: | ---: | ---: |")
        for fraction in fractions:
            folder = scratch / f"data-{fraction}"
            rows = write_fraction(Path(args.data), fraction, folder)
            seconds, results = timed_compare(["--data", str(folder), "--methods", args.size_method, "--epochs", "1"], scratch / f"size-{fraction}")
            train_seconds = sum(run["train_seconds"] for run in results["runs"])
            steps = sum(run["train_steps"] for run in results["runs"])
            print(f"| {rows} | {fraction:.0%} | {seconds:.0f} | {train_seconds:.0f} | {steps} |", flush=True)

        methods = args.methods.split(",")
        methods_data = args.methods_data or args.data
        data_option = [] if methods_data == "demo" else ["--data", methods_data]
        print()
        print("| methods | wall s | train s per method |")
        print("| --- | ---: | --- |")
        for count in range(1, len(methods) + 1):
            chosen = ",".join(methods[:count])
            seconds, results = timed_compare([*data_option, "--methods", chosen, "--max-steps", str(args.max_steps)], scratch / f"methods-{count}")
            per_method = ", ".join(f"{run['method']} {run['train_seconds']:.0f}" for run in results["runs"])
            print(f"| {chosen} | {seconds:.0f} | {per_method} |", flush=True)


if __name__ == "__main__":
    main()
