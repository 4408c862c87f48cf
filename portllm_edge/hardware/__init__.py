"""What this machine has, read without importing torch.

Public API::

    probe(*, with_torch=False, store_path=None, cgroup_root=..., proc_self_cgroup=...,
          environ=None, tegra_release=...) -> HardwareReport
    HardwareReport.gpus / .visible_gpus: tuple[GpuDevice]   # whole GPUs and MIG slices, bytes
    HardwareReport.host: HostMemory                          # psutil capped by cgroup v1/v2
    HardwareReport.disk: DiskReading                         # free disk at the model store
    probe_host_memory(cgroup_root, proc_self_cgroup) -> HostMemory
    read_cgroup_limit(cgroup_root, proc_self_cgroup) -> CgroupLimit | None
    probe_disk(path) -> DiskReading
    probe_torch_backends() -> TorchBackends                  # imports torch: only when asked
    map_cuda_visible_devices(gpus, value) -> list[GpuDevice]
    nvml_query(fn_name, *args) -> value | NotAvailable       # the one NVML choke point
    parse_size("8GiB") -> int;  format_size(n) -> "8.00 GiB"

Readings are frozen dataclasses in bytes with ``*_human()`` twins; anything
missing is ``None`` (printed ``n/a``). The budget built from a probe lives in
:func:`portllm_edge.planning.memory_budget`.
"""

from __future__ import annotations

from portllm_edge.hardware.host import (
    CgroupLimit,
    DiskReading,
    HostMemory,
    probe_disk,
    probe_host_memory,
    read_cgroup_limit,
)
from portllm_edge.hardware.nvml import NotAvailable, nvml_available, nvml_query
from portllm_edge.hardware.probe import (
    GpuDevice,
    HardwareReport,
    TorchBackends,
    map_cuda_visible_devices,
    probe,
    probe_torch_backends,
)
from portllm_edge.hardware.sizes import format_size, parse_size

__all__ = [
    "CgroupLimit",
    "DiskReading",
    "GpuDevice",
    "HardwareReport",
    "HostMemory",
    "NotAvailable",
    "TorchBackends",
    "format_size",
    "map_cuda_visible_devices",
    "nvml_available",
    "nvml_query",
    "parse_size",
    "probe",
    "probe_disk",
    "probe_host_memory",
    "probe_torch_backends",
    "read_cgroup_limit",
]
