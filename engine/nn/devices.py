"""Choosing the compute device: ``auto`` takes the GPU when there is one, else the CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import torch

from engine.core.errors import InputError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "gpu":
        name = "cuda"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {name!r}; use {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("no CUDA GPU is available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"there is no GPU {device.index} (found {torch.cuda.device_count()})")
    return device


def available_devices() -> list[str]:
    """What the UI offers: the CPU plus each visible GPU with its name."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return found


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process reuse the memory of large CPU tensors instead of mapping it fresh each time.

    glibc maps every allocation above its threshold (at most 32 MB) straight from the kernel and unmaps it
    when freed, so each new activation tensor pays a page fault and a zero-fill per 4 KB page: in a
    search's element-wise passes that cost 4-5x the arithmetic (BENCHMARKS.md, "What changed, each measured").
    With mmap off and trimming deferred, freed blocks stay in the heap and the next candidate reuses them;
    resident memory stays at the largest candidate's peak instead of falling between candidates, and that
    peak is higher (a paper-profile candidate: 3.1 GB against 1.8 GB, 1.6x faster; BENCHMARKS.md).
    ``SPIKERNEL_KEEP_FREED_MEMORY=0`` leaves glibc's default for a machine short of memory.
    Returns whether the setting took (False off glibc or when turned off, where nothing changes).
    """
    if os.environ.get("SPIKERNEL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
