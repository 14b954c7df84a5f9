"""Process set-up of a training run: GPU defaults, the global batch over any number of processes, a check of the
distributed launch, CPU tuning (intra-op threads, glibc's allocator), and the wall / CPU time per stage of a run."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


def gpu_training_defaults() -> dict:
    """The fast path on a GPU, under any argument the user gives: bf16 where the card supports it, and
    dataloader workers to read the video features while the GPU computes."""
    defaults = {"dataloader_num_workers": min(4, os.cpu_count() or 1)}
    if torch.cuda.is_bf16_supported():
        defaults["bf16"] = True
    return defaults


def apply_total_train_batch_size(training_args) -> None:
    """With --total_train_batch_size N: per-device batch x processes x accumulation = N on any number of
    processes. The per-device batch is the largest divisor of N / processes not above
    --per_device_train_batch_size (the memory cap); the rest is gradient accumulation."""
    total = training_args.total_train_batch_size
    if not total:
        return
    world_size = training_args.world_size
    if total % world_size:
        raise ValueError(f"--total_train_batch_size {total} is not divisible by the {world_size} processes of this run")
    per_process = total // world_size
    per_device = min(training_args.per_device_train_batch_size, per_process)
    while per_process % per_device:
        per_device -= 1
    training_args.per_device_train_batch_size = per_device
    training_args.gradient_accumulation_steps = per_process // per_device
    logger.warning(
        "Global batch %d = %d per device x %d processes x %d gradient accumulation steps",
        total, per_device, world_size, training_args.gradient_accumulation_steps,
    )


def check_distributed_launch(training_args) -> None:
    """A launch of N processes that the Trainer does not see as one N-process run would train N separate models
    into the same folder (e.g. a GPU config on a machine without GPUs and without --use_cpu)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise RuntimeError(
            f"launched as {launched} processes, but the Trainer sees a {training_args.world_size}-process run "
            f"(device {training_args.device}): the processes would train separately. On a machine without GPUs, pass --use_cpu true."
        )
    ignored = [name for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")) if os.environ.get(variable) == "true"]
    if ignored and training_args.device.type == "cpu" and training_args.process_index == 0:
        logger.warning("The %s settings of the accelerate config are not used on the CPU: accelerate runs plain DDP there.", ignored[0])


def configure_cpu_threads(training_args) -> None:
    """Intra-op threads of torch on the CPU: `--cpu_threads` when given (the demo: 1)."""
    if training_args.cpu_threads is not None and training_args.device.type == "cpu":
        torch.set_num_threads(max(1, int(training_args.cpu_threads)))


# glibc mallopt parameters (malloc.h)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory_for_reuse(training_args) -> bool:
    """On a CPU, let glibc keep freed memory for the next step instead of returning it to the system.

    Every training step allocates and frees the same activation buffers (a few MB each). With glibc's defaults
    the larger ones are mmap-ed and unmapped, and the top of the heap is trimmed, at every step, so each step
    page-faults its memory in again: 19 million faults and ~15% of the demo's time in the kernel. With the mmap
    threshold at its maximum (32 MiB) and no trimming, the demo trains ~1.2x faster (`MALLOC_*` variables
    that the user set win; other C libraries are left alone). The process keeps its peak memory until it ends.
    """
    if training_args.device.type != "cpu" or sys.platform != "linux" or any(key.startswith("MALLOC_") for key in os.environ):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(
        mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and mallopt(_M_TRIM_THRESHOLD, 2**30) and mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
    )


class StageTimes:
    """Wall and CPU seconds per stage of a run (data, model, training, evaluation, decoding, scoring), summed over
    the times a stage is entered. CPU = user + system time of this process and of the children it waited for
    (the METEOR scorer's Java), so that runs on a shared machine can be compared by what they cost, not by how
    long they waited for a core."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @staticmethod
    def cpu_now() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def start(self, name: str) -> None:
        """Start timing `name` (for a stage that spans more than one block; otherwise `with stage(name)`)."""
        self._started = getattr(self, "_started", {})
        self._started[name] = (time.perf_counter(), self.cpu_now())

    def stop(self, name: str) -> None:
        wall, cpu = self._started.pop(name)
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
        self.cpu[name] = self.cpu.get(name, 0.0) + self.cpu_now() - cpu

    @contextmanager
    def stage(self, name: str):
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {name: {"wall_s": round(self.wall[name], 2), "cpu_s": round(self.cpu[name], 2)} for name in self.wall}

    def print_table(self, title: str = "time per stage"):
        names = list(self.wall)
        width = max([len(name) for name in names] + [5])
        print(f"\n***** {title} *****")
        print(f"{'stage':<{width}}  {'wall s':>8}  {'CPU s':>8}")
        for name in names:
            print(f"{name:<{width}}  {self.wall[name]:8.1f}  {self.cpu[name]:8.1f}")
        print(f"{'total':<{width}}  {sum(self.wall.values()):8.1f}  {sum(self.cpu.values()):8.1f}")
        print(f"(CPU = user + system seconds of the run, Java scorer included; torch threads: {torch.get_num_threads()})")
