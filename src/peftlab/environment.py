"""What a result was measured on: package versions, device and threads."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

from peftlab.distributed import world_size

PACKAGES = ("peftlab", "torch", "transformers", "peft", "datasets", "accelerate", "numpy", "pandas", "scikit-learn")


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),  # per process
        "processes": world_size(),  # data-parallel processes (torchrun, accelerate launch)
    }
