"""What this machine has: NVIDIA GPUs (NVML), MIG slices, unified memory, torch backends, RAM, disk.

Why this module exists: the planner needs one honest number per device — the
memory a job can use there. Common mistakes this module avoids: reading memory
from a card's name, summing the memory of several GPUs (a model on one card
can't use another's), ignoring MIG (a slice has only its share), ignoring
container limits, and importing torch just to ask (that costs seconds and
memory; torch is imported only when ``with_torch=True``).

All NVML access goes through :func:`portllm_edge.hardware.nvml.nvml_query`.
Every missing library, driver or field is ``None`` (printed ``n/a``); nothing
here raises for missing hardware.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from portllm_edge.hardware.host import (
    CGROUP_ROOT,
    PROC_SELF_CGROUP,
    DiskReading,
    HostMemory,
    probe_disk,
    probe_host_memory,
)
from portllm_edge.hardware.nvml import NotAvailable, nvml_available, nvml_query
from portllm_edge.hardware.sizes import format_size

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
"""Present on Jetson boards (L4T); there the GPU shares host RAM."""


@dataclass(frozen=True)
class GpuDevice:
    """One CUDA device as a job sees it: a whole GPU or a MIG slice.

    Attributes:
        nvml_index: NVML index of the physical GPU (PCI bus order).
        name: Marketing name from NVML (``"NVIDIA GeForce RTX 3060"``), or ``None``.
        uuid: ``GPU-...`` or, for a MIG slice, ``MIG-...``; ``None`` if unknown.
        total_bytes: Memory of the device (for a MIG slice: the slice's), or ``None``.
        free_bytes: Free memory now, or ``None``.
        used_bytes: Used memory now, or ``None``.
        compute_capability: ``(major, minor)`` or ``None``.
        is_mig: True for a MIG slice.
        mig_index: Index of the slice within its parent GPU, or ``None``.
        unified_memory: True when the GPU shares host RAM (Jetson); memory numbers then come from the host.
        torch_index: The ``cuda:N`` index this device gets under ``CUDA_VISIBLE_DEVICES``, or ``None`` if hidden.
    """

    nvml_index: int
    name: str | None
    uuid: str | None
    total_bytes: int | None
    free_bytes: int | None
    used_bytes: int | None
    compute_capability: tuple[int, int] | None = None
    is_mig: bool = False
    mig_index: int | None = None
    unified_memory: bool = False
    torch_index: int | None = None

    def total_human(self) -> str:
        return format_size(self.total_bytes)

    def free_human(self) -> str:
        return format_size(self.free_bytes)

    def used_human(self) -> str:
        return format_size(self.used_bytes)

    @property
    def label(self) -> str:
        """A short display label, e.g. ``"GPU 0 (NVIDIA A100-SXM4-40GB)"`` or ``"GPU 0 MIG 1 (...)"``."""
        head = f"GPU {self.nvml_index}" + (f" MIG {self.mig_index}" if self.is_mig else "")
        return f"{head} ({self.name or 'unknown'})"


@dataclass(frozen=True)
class TorchBackends:
    """What torch sees (only filled when asked: importing torch takes seconds).

    Attributes:
        torch_version: ``torch.__version__``.
        cuda_available: ``torch.cuda.is_available()`` (True on ROCm builds too).
        rocm_version: ``torch.version.hip`` on ROCm builds, else ``None``.
        cuda_version: ``torch.version.cuda`` or ``None``.
        devices: ``(name, total_bytes, free_bytes)`` per visible CUDA/ROCm device.
        mps_available: Apple Metal backend available.
        mps_recommended_max_bytes: ``torch.mps.recommended_max_memory()`` where available.
    """

    torch_version: str
    cuda_available: bool
    rocm_version: str | None
    cuda_version: str | None
    devices: tuple[tuple[str, int | None, int | None], ...]
    mps_available: bool
    mps_recommended_max_bytes: int | None


@dataclass(frozen=True)
class HardwareReport:
    """Everything :func:`probe` found.

    Attributes:
        gpus: Whole GPUs without MIG, plus MIG slices (not their parents), in NVML order.
        host: Host RAM within the cgroup limit.
        disk: Free disk at the model store.
        driver_version: NVIDIA driver version, or ``None``.
        cuda_driver_version: CUDA version the driver supports (``"12.4"``), or ``None``.
        nvml_status: ``"ok"`` or why NVML is not available.
        cuda_visible_devices: The raw ``CUDA_VISIBLE_DEVICES`` value, or ``None`` when unset.
        torch: Torch's view, or ``None`` when not asked.
        notes: Human notes (e.g. "Jetson board: GPU memory is host RAM").
    """

    gpus: tuple[GpuDevice, ...]
    host: HostMemory
    disk: DiskReading
    driver_version: str | None
    cuda_driver_version: str | None
    nvml_status: str
    cuda_visible_devices: str | None
    torch: TorchBackends | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def visible_gpus(self) -> tuple[GpuDevice, ...]:
        """GPUs a CUDA job can use (``torch_index`` set), in ``cuda:N`` order."""
        vis = [g for g in self.gpus if g.torch_index is not None]
        return tuple(sorted(vis, key=lambda g: g.torch_index or 0))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as ints, paths as strings, ``None`` for n/a)."""
        data = asdict(self)
        data["disk"]["path"] = str(self.disk.path)
        data["disk"]["measured_at"] = str(self.disk.measured_at) if self.disk.measured_at else None
        cg = data["host"]["cgroup"]
        if cg is not None:
            cg["path"] = str(cg["path"])
        data["host"]["total_bytes"] = self.host.total_bytes
        data["host"]["available_bytes"] = self.host.available_bytes
        for gpu in data["gpus"]:
            if gpu["compute_capability"] is not None:
                gpu["compute_capability"] = list(gpu["compute_capability"])
        return data


def _val(x: Any) -> Any:
    return None if isinstance(x, NotAvailable) else x


def _mem(handle: Any) -> tuple[int | None, int | None, int | None, bool]:
    """(total, free, used, not_supported) from ``nvmlDeviceGetMemoryInfo``."""
    info = nvml_query("nvmlDeviceGetMemoryInfo", handle)
    if isinstance(info, NotAvailable):
        return None, None, None, info.not_supported
    total = int(info.total)
    free = int(info.free)
    used = int(getattr(info, "used", total - free))
    return total, free, used, False


def _cc(handle: Any) -> tuple[int, int] | None:
    cc = nvml_query("nvmlDeviceGetCudaComputeCapability", handle)
    if isinstance(cc, NotAvailable) or cc is None:
        return None
    return int(cc[0]), int(cc[1])


def _is_tegra(tegra_release: Path) -> bool:
    return tegra_release.exists()


def _nvml_gpus(host: HostMemory, *, is_tegra: bool) -> tuple[list[GpuDevice], list[str]]:
    notes: list[str] = []
    count = nvml_query("nvmlDeviceGetCount")
    if isinstance(count, NotAvailable):
        return [], notes
    out: list[GpuDevice] = []
    for i in range(int(count)):
        handle = nvml_query("nvmlDeviceGetHandleByIndex", i)
        if isinstance(handle, NotAvailable):
            continue
        name = _val(nvml_query("nvmlDeviceGetName", handle))
        uuid = _val(nvml_query("nvmlDeviceGetUUID", handle))
        cc = _cc(handle)
        mig_mode = nvml_query("nvmlDeviceGetMigMode", handle)
        mig_on = not isinstance(mig_mode, NotAvailable) and mig_mode is not None and int(mig_mode[0]) == 1
        if mig_on:
            max_slices = _val(nvml_query("nvmlDeviceGetMaxMigDeviceCount", handle)) or 0
            for m in range(int(max_slices)):
                mh = nvml_query("nvmlDeviceGetMigDeviceHandleByIndex", handle, m)
                if isinstance(mh, NotAvailable):
                    continue  # empty slot
                total, free, used, _ = _mem(mh)
                out.append(
                    GpuDevice(
                        nvml_index=i,
                        name=_val(nvml_query("nvmlDeviceGetName", mh)) or name,
                        uuid=_val(nvml_query("nvmlDeviceGetUUID", mh)),
                        total_bytes=total,
                        free_bytes=free,
                        used_bytes=used,
                        compute_capability=cc,
                        is_mig=True,
                        mig_index=m,
                    )
                )
            continue
        total, free, used, not_supported = _mem(handle)
        unified = False
        if total is None and (not_supported or is_tegra):
            # Unified memory (Jetson): NVML has no separate GPU memory; the host's RAM is the GPU's.
            unified = True
            total, free = host.total_bytes, host.available_bytes
            used = total - free
            notes.append(f"GPU {i}: NVML has no memory info (unified memory); using host RAM.")
        out.append(
            GpuDevice(
                nvml_index=i,
                name=name,
                uuid=uuid,
                total_bytes=total,
                free_bytes=free,
                used_bytes=used,
                compute_capability=cc,
                unified_memory=unified,
            )
        )
    return out, notes


def map_cuda_visible_devices(gpus: list[GpuDevice], cuda_visible_devices: str | None) -> list[GpuDevice]:
    """Give each device the ``cuda:N`` index it gets under ``CUDA_VISIBLE_DEVICES``.

    CUDA's rules: unset means every device in order (whole GPUs, and with MIG on,
    the MIG slices); a comma-separated list of indices or ``GPU-``/``MIG-`` UUID
    prefixes selects and orders devices; parsing stops at the first entry that
    matches nothing; an empty value or ``-1`` hides all devices. Indices are
    taken in NVML (PCI bus) order, which is CUDA's order when
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (the usual setting on multi-GPU hosts).

    Args:
        gpus: Devices in NVML order.
        cuda_visible_devices: The variable's value, or ``None`` when unset.

    Returns:
        The same devices with ``torch_index`` set (``None`` when hidden).
    """
    from dataclasses import replace

    if cuda_visible_devices is None:
        return [replace(g, torch_index=k) for k, g in enumerate(gpus)]
    chosen: list[int] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        if not entry:
            break
        match: int | None = None
        if entry.lstrip("-").isdigit():
            idx = int(entry)
            if idx < 0:
                break
            physical = sorted({g.nvml_index for g in gpus})
            if idx < len(physical):
                cands = [k for k, g in enumerate(gpus) if g.nvml_index == physical[idx]]
                match = cands[0] if cands else None
        else:
            for k, g in enumerate(gpus):
                if g.uuid and (g.uuid == entry or g.uuid.startswith(entry)):
                    match = k
                    break
        if match is None:
            break
        if match not in chosen:
            chosen.append(match)
    order = {k: n for n, k in enumerate(chosen)}
    return [replace(g, torch_index=order.get(k)) for k, g in enumerate(gpus)]


def probe_torch_backends() -> TorchBackends:
    """Ask torch which accelerators it can use (imports torch: seconds). Never raises."""
    import torch

    devices: list[tuple[str, int | None, int | None]] = []
    cuda_ok = False
    try:
        cuda_ok = bool(torch.cuda.is_available())
        if cuda_ok:
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                try:
                    free, _total = torch.cuda.mem_get_info(i)
                except Exception:
                    free = None
                devices.append(
                    (str(props.name), int(props.total_memory), None if free is None else int(free))
                )
    except Exception:
        cuda_ok = False
    mps_ok = False
    mps_max: int | None = None
    try:
        mps_ok = bool(torch.backends.mps.is_available())
        if mps_ok and hasattr(torch, "mps") and hasattr(torch.mps, "recommended_max_memory"):
            mps_max = int(torch.mps.recommended_max_memory())
    except Exception:
        mps_ok = False
    return TorchBackends(
        torch_version=str(torch.__version__),
        cuda_available=cuda_ok,
        rocm_version=getattr(torch.version, "hip", None),
        cuda_version=getattr(torch.version, "cuda", None),
        devices=tuple(devices),
        mps_available=mps_ok,
        mps_recommended_max_bytes=mps_max,
    )


def probe(
    *,
    with_torch: bool = False,
    store_path: Path | None = None,
    cgroup_root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
    environ: Mapping[str, str] | None = None,
    tegra_release: Path = TEGRA_RELEASE,
) -> HardwareReport:
    """Probe GPUs, host RAM and disk. Never raises for missing hardware or libraries.

    Args:
        with_torch: Also ask torch about CUDA/ROCm/MPS (imports torch; off by default).
        store_path: Folder whose free disk to report; default the model store
            (:func:`portllm_edge.paths.models_dir`).
        cgroup_root: cgroup mount point (tests pass a temporary folder).
        proc_self_cgroup: The process's cgroup file (tests pass a fake).
        environ: Environment to read ``CUDA_VISIBLE_DEVICES`` from (default ``os.environ``).
        tegra_release: File whose presence marks a Jetson board.

    Returns:
        A :class:`HardwareReport`.
    """
    from portllm_edge import paths

    env = os.environ if environ is None else environ
    host = probe_host_memory(cgroup_root, proc_self_cgroup)
    disk = probe_disk(store_path if store_path is not None else paths.models_dir())
    is_tegra = _is_tegra(tegra_release)
    status = nvml_available()
    notes: list[str] = []
    gpus: list[GpuDevice] = []
    driver: str | None = None
    cuda_driver: str | None = None
    if status is None:
        driver = _val(nvml_query("nvmlSystemGetDriverVersion"))
        cv = _val(nvml_query("nvmlSystemGetCudaDriverVersion"))
        if isinstance(cv, int) and cv > 0:
            cuda_driver = f"{cv // 1000}.{(cv % 1000) // 10}"
        gpus, notes = _nvml_gpus(host, is_tegra=is_tegra)
    elif is_tegra:
        # Jetson without NVML: one integrated GPU whose memory is host RAM.
        gpus = [
            GpuDevice(
                nvml_index=0,
                name="NVIDIA Jetson (integrated)",
                uuid=None,
                total_bytes=host.total_bytes,
                free_bytes=host.available_bytes,
                used_bytes=host.total_bytes - host.available_bytes,
                unified_memory=True,
            )
        ]
        notes.append("Jetson board without NVML: GPU memory is host RAM.")
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    gpus = map_cuda_visible_devices(gpus, cvd)
    torch_info = probe_torch_backends() if with_torch else None
    return HardwareReport(
        gpus=tuple(gpus),
        host=host,
        disk=disk,
        driver_version=driver,
        cuda_driver_version=cuda_driver,
        nvml_status="ok" if status is None else status.reason,
        cuda_visible_devices=cvd,
        torch=torch_info,
        notes=tuple(notes),
    )
