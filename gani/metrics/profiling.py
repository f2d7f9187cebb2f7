"""Wall time and peak memory of a block of work (the `seconds` / `peak_mem_bytes` metrics).

    with ResourceMeter(device) as meter:
        ...invert one image...
    meter.seconds, meter.peak_mem_bytes

- seconds: `time.perf_counter` wall time; on CUDA the device is synchronised at both ends,
  so queued kernels are counted.
- peak_mem_bytes on CUDA: `torch.cuda.max_memory_allocated(device)` after
  `reset_peak_memory_stats` at the start, i.e. the peak of tensors allocated by PyTorch on
  that device during the block (the caching allocator's reserve and other processes are
  not counted).
- peak_mem_bytes on CPU: the growth of the process's peak resident set size over the block,
  peak RSS during the block − RSS at its start, read from /proc/self/status (VmHWM, VmRSS).
  The kernel's high-water mark is reset at the start by writing "5" to /proc/self/clear_refs
  (Linux ≥ 4.0), so the peak belongs to this block. Where that is not allowed, the
  lifetime peak `resource.getrusage(RUSAGE_SELF).ru_maxrss` is used: exact when the block
  set a new lifetime peak, otherwise only the RSS growth at the end is known and
  `peak_exact` is False (a lower bound). No psutil needed. It is per process: other threads'
  allocations count too, and nested meters reset each other's high-water mark. Memory the
  allocator hands back from its own free lists (freed earlier, still resident) adds no RSS
  and is not counted: this is the memory the block took from the system.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Union

import torch


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> Optional[int]:
    try:
        import resource
        import sys

        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(v) if sys.platform == "darwin" else int(v) * 1024  # Linux: KiB
    except (ImportError, OSError):
        return None


class ResourceMeter:
    """Context manager measuring wall seconds and peak memory (module doc)."""

    def __init__(self, device: Union[str, torch.device, None] = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.seconds: Optional[float] = None
        self.peak_mem_bytes: Optional[int] = None
        self.peak_exact = True
        self._t0 = 0.0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    def __enter__(self) -> "ResourceMeter":
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._hwm_reset = _reset_hwm()
            self._rss0 = _proc_status_kib("VmRSS")
            self._maxrss0 = _ru_maxrss_bytes()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        if self.is_cuda:
            self.peak_mem_bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        rss0 = self._rss0 * 1024 if self._rss0 is not None else None
        if self._hwm_reset:
            hwm = _proc_status_kib("VmHWM")
            if hwm is not None and rss0 is not None:
                self.peak_mem_bytes = max(0, hwm * 1024 - rss0)
                return
        maxrss1 = _ru_maxrss_bytes()
        rss1 = _proc_status_kib("VmRSS")
        if maxrss1 is not None and self._maxrss0 is not None and rss0 is not None \
                and maxrss1 > self._maxrss0:
            self.peak_mem_bytes = max(0, maxrss1 - rss0)
        elif rss1 is not None and rss0 is not None:
            self.peak_mem_bytes = max(0, rss1 * 1024 - rss0)
            self.peak_exact = False
        else:
            self.peak_mem_bytes = None
            self.peak_exact = False
