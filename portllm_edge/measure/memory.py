"""The one rule for a job's host-memory figure, and the sampler that applies it.

Rule (CPU headline, metric ``peak_anon_plus_mapped_weights``): the peak, over samples, of

    RssAnon (heap, tensors)  +  resident pages of mapped weight files

summed over the process and its children. "Weight files" are checkpoint formats
(:data:`WEIGHT_FILE_SUFFIXES`). Why both terms: a bf16 load whose weights stay in the
mmapped safetensors pages computes from file-backed memory; RssAnon alone leaves those
weights out (a bf16 fine-tune would look as cheap as a 4-bit port). Other file-backed
pages (shared libraries, the page cache of files read with ``read``/``pread``) are not the
job's: they are the same for every job (the runtime baseline holds the libraries) or are
reclaimable cache the process does not map. The floors in ``benchmarks/scale.py`` count
every weight once, at the bytes it occupies, wherever it lives, so they compare with this.

``RssAnon`` is read from ``/proc/PID/status`` every ``interval_s`` (5 ms); the mapped
weight pages (``Rss`` of the matching mappings in ``/proc/PID/smaps``, a costlier read)
every ``mapped_interval_s`` (200 ms), and each anonymous sample adds the latest mapped
figure. The result is a lower bound of the true peak, tight for allocations that live
longer than a few milliseconds. ``VmHWM`` (the kernel's high-water mark of all resident
pages, libraries and read-once checkpoint pages included) is reported only labelled as
such. Linux only: elsewhere :func:`read_memory` returns ``None``.

This module must not import torch (the sampler runs beside a job).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

WEIGHT_FILE_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")
"""Files whose mapped resident pages count as the job's memory (checkpoint formats)."""
HEADLINE_METRIC = "peak_anon_plus_mapped_weights"
"""The name a CPU measurement's headline carries in records (see the module docstring)."""
HEADLINE_LABEL = "anonymous memory + resident pages of mapped weight files"
"""How a printed CPU figure says what it counts."""


@dataclass(frozen=True)
class MemoryReading:
    """One reading of a process tree's memory, bytes.

    Attributes:
        anon_bytes: ``RssAnon`` summed over the processes.
        mapped_weight_bytes: resident pages of mapped weight files (``None`` when not read).
    """

    anon_bytes: int
    mapped_weight_bytes: int | None = None


def read_anon(pid: int | str = "self") -> int | None:
    """``RssAnon`` of one process, bytes (``None`` where ``/proc`` has no such field or process)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def read_mapped_weights(pid: int | str = "self") -> int | None:
    """Resident bytes of one process's mappings of weight files (``/proc/PID/smaps``), or ``None``."""
    try:
        with open(f"/proc/{pid}/smaps", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    total = 0
    counting = False
    suffixes = tuple(s.encode() for s in WEIGHT_FILE_SUFFIXES)
    for line in data.split(b"\n"):
        if line.startswith(b"Rss:"):
            if counting:
                total += int(line.split()[1]) * 1024
        elif line[:1] in b"0123456789abcdef" and b"-" in line[:20]:  # a mapping's header line
            name = line.rsplit(b" ", 1)[-1]
            counting = name.endswith(suffixes) or name.endswith(tuple(s + b" (deleted)" for s in suffixes))
    return total


def _tree(pid: int) -> list[int]:
    try:
        import psutil

        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except Exception:
        return [pid]


def read_memory(pid: int | None = None, *, children: bool = True) -> MemoryReading | None:
    """:class:`MemoryReading` of ``pid`` (default: this process) and, with ``children``, its descendants.

    Returns ``None`` where ``/proc`` is missing (not Linux) or the process is gone.
    """
    import os

    root = os.getpid() if pid is None else pid
    pids = _tree(root) if children else [root]
    anon = [read_anon(p) for p in pids]
    if anon[0] is None:
        return None
    mapped = [read_mapped_weights(p) for p in pids]
    return MemoryReading(sum(a or 0 for a in anon), sum(m or 0 for m in mapped))


class PeakSampler:
    """Samples a process tree's memory on a daemon thread; keeps the headline and anonymous peaks.

    Use as a context manager around the job. After exit: ``peak`` (the headline: anonymous +
    mapped weight pages, bytes), ``anon_peak``, ``mapped_at_peak``; all 0 when ``/proc`` is missing.

    Args:
        pid: the process to watch (default: this one); its descendants are included.
        interval_s: seconds between ``RssAnon`` readings.
        mapped_interval_s: seconds between readings of the mapped weight pages (and of the children list).
    """

    def __init__(
        self, pid: int | None = None, interval_s: float = 0.005, mapped_interval_s: float = 0.2
    ) -> None:
        import os

        self.pid = os.getpid() if pid is None else pid
        self.peak = 0
        self.anon_peak = 0
        self.mapped_at_peak = 0
        self._interval = interval_s
        self._every = max(1, round(mapped_interval_s / interval_s))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pids = [self.pid]
        self._mapped = 0

    def _sample(self, tick: int) -> bool:
        if tick % self._every == 0:
            self._pids = _tree(self.pid)
            self._mapped = sum(read_mapped_weights(p) or 0 for p in self._pids)
        values = [read_anon(p) for p in self._pids]
        if values[0] is None:
            return False
        anon = sum(v or 0 for v in values)
        self.anon_peak = max(self.anon_peak, anon)
        if anon + self._mapped > self.peak:
            self.peak, self.mapped_at_peak = anon + self._mapped, self._mapped
        return True

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            if not self._sample(tick):
                return
            tick += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(0)


__all__ = [
    "HEADLINE_LABEL",
    "HEADLINE_METRIC",
    "WEIGHT_FILE_SUFFIXES",
    "MemoryReading",
    "PeakSampler",
    "read_anon",
    "read_mapped_weights",
    "read_memory",
]
