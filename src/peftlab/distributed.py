"""Data-parallel runs under torchrun or accelerate launch, and the thread count of each process.

    torchrun --standalone --nproc_per_node 2 -m peftlab train --data path/to/sst2 --method lora
    accelerate launch --multi_gpu --num_processes 2 -m peftlab compare --data path/to/sst2

Every process loads the model and the data, and the Trainer wraps the model in
DistributedDataParallel (gloo on the CPU, NCCL on CUDA), so each process trains
on its share of every batch. Evaluation gathers the predictions of all ranks,
so every rank computes the metrics of the whole split. Only rank 0 (the main
process) writes files and logs; the other ranks wait for it at a barrier.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Return the number of processes of the run (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_world_size() -> int:
    """Return the number of processes of the run on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    return rank() == 0


def init_process_group() -> None:
    """Join the process group that the launcher's environment describes; a single process does nothing.

    accelerate's PartialState is the object the Trainer uses too, so the group
    built here is the one the Trainer trains in.
    """
    if is_distributed():
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    """Wait until every rank reaches this point."""
    if is_distributed():
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def broadcast_from_main(value):
    """Return rank 0's ``value`` on every rank (any picklable object)."""
    if not is_distributed():
        return value
    from accelerate.utils import broadcast_object_list

    holder = [value]
    broadcast_object_list(holder, from_process=0)
    return holder[0]


def check_sharding() -> None:
    """Reject FSDP and DeepSpeed ZeRO-3 launches, whose rank 0 holds only a shard of the weights it would save.

    accelerate launch describes its config to the processes through these
    environment variables (accelerate 1.16, accelerate/utils/launch.py).
    """
    from peftlab.errors import PeftlabError

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise PeftlabError("FSDP is not supported: rank 0 would save only its shard of the weights; use plain data parallelism or DeepSpeed ZeRO stage 1 or 2")
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise PeftlabError("DeepSpeed ZeRO stage 3 is not supported: rank 0 would save only its shard of the weights; use zero_stage 1 or 2")


def set_thread_count() -> int:
    """Give each process of this machine an equal share of the CPUs it may run on; return the thread count.

    OMP_NUM_THREADS, when set, wins: torchrun sets it to 1 for several processes
    unless the user sets it. PyTorch's own default is the number of physical
    cores, which ignores a CPU affinity mask (taskset, a container's cpuset) and
    the other processes of a data-parallel run on the same machine.
    """
    import torch  # here, so that the command line's report command starts without loading torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cpus // local_world_size())
    torch.set_num_threads(threads)
    return threads
