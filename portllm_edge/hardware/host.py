"""Host memory (RAM within the container's cgroup limit) and free disk at the store.

Why this module exists: psutil reports the machine's RAM, but a process in a
container can only use what its cgroup allows. Tools that ignore the limit plan
for memory the kernel will never give and get OOM-killed. We read the cgroup
v2 ``memory.max`` (where ``max`` means unlimited) or the cgroup v1
``memory.limit_in_bytes`` (where a value near 2**63 means unlimited) along the
process's cgroup path, take the tightest limit, and cap psutil's numbers by it.

The cgroup root and the ``/proc/self/cgroup`` file are parameters so tests can
point them at a temporary folder. It must not import torch.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from portllm_edge.hardware.sizes import format_size

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
_V1_UNLIMITED = 1 << 60
"""cgroup v1 writes 'no limit' as a page-aligned value near 2**63; anything above 2**60 is unlimited."""


@dataclass(frozen=True)
class CgroupLimit:
    """The tightest memory limit of this process's cgroup.

    Attributes:
        version: 1 or 2.
        limit_bytes: The limit, or ``None`` when unlimited (``max``).
        usage_bytes: Memory charged to the cgroup now (includes page cache), or ``None``.
        reclaimable_bytes: Inactive file cache the kernel can drop (``inactive_file``), 0 if unknown.
        path: The cgroup folder the limit was read from.
    """

    version: int
    limit_bytes: int | None
    usage_bytes: int | None
    reclaimable_bytes: int
    path: Path


@dataclass(frozen=True)
class HostMemory:
    """Host RAM as this process may use it.

    Attributes:
        physical_total_bytes: RAM of the machine (psutil ``total``).
        physical_available_bytes: RAM available without swapping (psutil ``available``).
        cgroup: The cgroup limit, or ``None`` when no cgroup files were found.
    """

    physical_total_bytes: int
    physical_available_bytes: int
    cgroup: CgroupLimit | None

    @property
    def limit_bytes(self) -> int | None:
        """The cgroup limit in bytes, or ``None`` when unlimited or unknown."""
        return self.cgroup.limit_bytes if self.cgroup is not None else None

    @property
    def total_bytes(self) -> int:
        """``min(physical total, cgroup limit)``: the most this process can ever hold."""
        limit = self.limit_bytes
        return min(self.physical_total_bytes, limit) if limit is not None else self.physical_total_bytes

    @property
    def available_bytes(self) -> int:
        """``min(psutil available, limit - (usage - reclaimable cache))``, never below 0."""
        avail = self.physical_available_bytes
        cg = self.cgroup
        if cg is not None and cg.limit_bytes is not None:
            used = max(0, (cg.usage_bytes or 0) - cg.reclaimable_bytes)
            avail = min(avail, max(0, cg.limit_bytes - used))
        return avail

    def total_human(self) -> str:
        return format_size(self.total_bytes)

    def available_human(self) -> str:
        return format_size(self.available_bytes)

    def limit_human(self) -> str:
        return "unlimited" if self.limit_bytes is None else format_size(self.limit_bytes)


@dataclass(frozen=True)
class DiskReading:
    """Free space of the file system that holds ``path``.

    Attributes:
        path: The folder asked about (the model store).
        measured_at: The nearest existing folder at or above ``path`` that was measured.
        total_bytes: Size of the file system, or ``None`` when it can't be read.
        free_bytes: Free bytes for this user, or ``None``.
    """

    path: Path
    measured_at: Path | None
    total_bytes: int | None
    free_bytes: int | None

    def free_human(self) -> str:
        return format_size(self.free_bytes)

    def total_human(self) -> str:
        return format_size(self.total_bytes)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """Return (v2 relative path, v1 memory-controller relative path) from ``/proc/self/cgroup``."""
    v2: str | None = None
    v1: str | None = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, rel = parts
        if hid == "0" and controllers == "":
            v2 = rel
        elif "memory" in controllers.split(","):
            v1 = rel
    return v2, v1


def _ancestors(base: Path, rel: str | None) -> list[Path]:
    """``base/rel``, its parents up to ``base`` (leaf first); just ``[base]`` when rel is unknown."""
    out: list[Path] = []
    if rel:
        parts = [p for p in rel.strip("/").split("/") if p]
        for i in range(len(parts), 0, -1):
            out.append(base.joinpath(*parts[:i]))
    out.append(base)
    return out


def read_cgroup_limit(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> CgroupLimit | None:
    """Read this process's tightest cgroup memory limit (v2 first, then v1).

    A limit anywhere on the path from the process's cgroup up to the root applies
    (limits are hierarchical), so the smallest one found wins. Folders that are
    not visible (a container that mounts only its own cgroup at the root) are
    skipped.

    Args:
        cgroup_root: Mount point of the cgroup file system (``/sys/fs/cgroup``).
        proc_self_cgroup: The ``/proc/self/cgroup`` file naming the process's cgroup.

    Returns:
        The limit record, or ``None`` when no cgroup memory files exist.
    """
    v2_rel, v1_rel = _cgroup_paths(proc_self_cgroup)
    # cgroup v2: memory.max, "max" = unlimited.
    v2_dirs = [d for d in _ancestors(cgroup_root, v2_rel) if (d / "memory.max").is_file()]
    if v2_dirs or (cgroup_root / "memory.current").is_file():
        limit: int | None = None
        for d in v2_dirs:
            value = _read_int(d / "memory.max")
            if value is not None and (limit is None or value < limit):
                limit = value
        leaf = v2_dirs[0] if v2_dirs else cgroup_root
        return CgroupLimit(
            version=2,
            limit_bytes=limit,
            usage_bytes=_read_int(leaf / "memory.current"),
            reclaimable_bytes=_stat_value(leaf / "memory.stat", "inactive_file"),
            path=leaf,
        )
    # cgroup v1: memory/memory.limit_in_bytes, huge value = unlimited.
    base = cgroup_root / "memory"
    v1_dirs = [d for d in _ancestors(base, v1_rel) if (d / "memory.limit_in_bytes").is_file()]
    if not v1_dirs:
        return None
    limit = None
    for d in v1_dirs:
        value = _read_int(d / "memory.limit_in_bytes")
        if value is not None and value < _V1_UNLIMITED and (limit is None or value < limit):
            limit = value
    leaf = v1_dirs[0]
    return CgroupLimit(
        version=1,
        limit_bytes=limit,
        usage_bytes=_read_int(leaf / "memory.usage_in_bytes"),
        reclaimable_bytes=_stat_value(leaf / "memory.stat", "total_inactive_file"),
        path=leaf,
    )


def probe_host_memory(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> HostMemory:
    """Host RAM through psutil, capped by the cgroup limit (see :func:`read_cgroup_limit`)."""
    import psutil

    vm = psutil.virtual_memory()
    return HostMemory(
        physical_total_bytes=int(vm.total),
        physical_available_bytes=int(vm.available),
        cgroup=read_cgroup_limit(cgroup_root, proc_self_cgroup),
    )


def probe_disk(path: Path) -> DiskReading:
    """Free disk space for ``path`` (measured at its nearest existing ancestor); ``None`` fields on failure."""
    probe_at: Path | None = Path(path).expanduser()
    while probe_at is not None and not probe_at.exists():
        probe_at = probe_at.parent if probe_at.parent != probe_at else None
    if probe_at is None:
        return DiskReading(path=Path(path), measured_at=None, total_bytes=None, free_bytes=None)
    try:
        usage = shutil.disk_usage(probe_at)
    except OSError:
        return DiskReading(path=Path(path), measured_at=probe_at, total_bytes=None, free_bytes=None)
    return DiskReading(
        path=Path(path), measured_at=probe_at, total_bytes=int(usage.total), free_bytes=int(usage.free)
    )
