"""The memory budget a job may use, from the live probe or a named hardware profile.

Why this module exists: "does it fit" needs one number — the usable bytes of
one device — and the rules for getting it are easy to get wrong. We never sum
several GPUs (a model on one card can't use another's memory), we use a MIG
slice's own memory, on unified boards the host RAM, and without a GPU the host
RAM within the cgroup limit. A headroom fraction is kept back for allocator
fragmentation and whatever else runs. Shaped after nvitop's
``select_devices(min_free_memory="8GiB")``. It must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from portllm_edge.catalog.schema import HardwareProfile
from portllm_edge.errors import ConfigError, HardwareError
from portllm_edge.hardware.probe import GpuDevice, HardwareReport, probe
from portllm_edge.hardware.sizes import format_size, parse_size

DEFAULT_HEADROOM = 0.10
"""Fraction of the available memory kept free (allocator fragmentation, other processes)."""


@dataclass(frozen=True)
class Budget:
    """Memory one job may use on one device.

    Attributes:
        name: What it was read from: a profile name or ``"GPU 0 (NVIDIA ...)"`` / ``"host RAM"``.
        source: ``profile`` or ``probe``.
        device: ``cuda`` (discrete GPU or MIG slice), ``unified`` (GPU sharing host RAM) or ``cpu``.
        total_bytes: Memory of the device.
        available_bytes: Memory free for this job now (probe) or ``memory - reserved`` (profile).
        headroom_fraction: Fraction of ``available_bytes`` kept back, in [0, 1).
        bf16: Whether bfloat16 runs natively (compute capability >= 8.0, or CPU).
        compute_capability: ``"8.6"``-style, or ``None``.
        torch_index: The ``cuda:N`` index of the probed GPU the budget is for, or ``None``.
        bandwidth_bytes_per_s: Memory bandwidth of the device, bytes/s, or ``None`` when unknown.
    """

    name: str
    source: str
    device: str
    total_bytes: int
    available_bytes: int
    headroom_fraction: float = DEFAULT_HEADROOM
    bf16: bool = True
    compute_capability: str | None = None
    torch_index: int | None = None
    bandwidth_bytes_per_s: float | None = None

    @property
    def load_device(self) -> str:
        """The device a load on this budget uses: ``"cuda:N"`` for a probed GPU, ``"cuda"`` for a
        GPU profile, else ``"cpu"`` (a unified-memory board loads on its GPU)."""
        if self.device == "cpu":
            return "cpu"
        return f"cuda:{self.torch_index}" if self.torch_index is not None else "cuda"

    @property
    def usable_bytes(self) -> int:
        """``available × (1 − headroom_fraction)``: the most an estimate may total to fit."""
        return int(self.available_bytes * (1.0 - self.headroom_fraction))

    def fits(self, needed_bytes: int) -> bool:
        """True when ``needed_bytes <= usable_bytes``."""
        return needed_bytes <= self.usable_bytes

    def spare_bytes(self, needed_bytes: int) -> int:
        """``usable − needed`` (negative when it does not fit)."""
        return self.usable_bytes - needed_bytes

    def total_human(self) -> str:
        return format_size(self.total_bytes)

    def available_human(self) -> str:
        return format_size(self.available_bytes)

    def usable_human(self) -> str:
        return format_size(self.usable_bytes)

    def describe(self) -> str:
        """One line: name, device, total, available, usable after headroom."""
        return (
            f"{self.name} [{self.device}, {self.source}]: {self.total_human()} total, "
            f"{self.available_human()} available, {self.usable_human()} usable after "
            f"{self.headroom_fraction:.0%} headroom"
        )


def _check_headroom(headroom_fraction: float) -> None:
    if not 0.0 <= headroom_fraction < 1.0:
        raise ConfigError(
            f"`headroom` must be in [0, 1), got {headroom_fraction!r}.",
            hint="pass a fraction such as 0.1 (10 %).",
        )


def budget_from_profile(profile: HardwareProfile, headroom_fraction: float = DEFAULT_HEADROOM) -> Budget:
    """Budget of a hardware profile: ``memory - reserved``, less headroom."""
    _check_headroom(headroom_fraction)
    return Budget(
        name=profile.name,
        source="profile",
        device=profile.kind,
        total_bytes=profile.memory_bytes,
        available_bytes=profile.available_bytes,
        headroom_fraction=headroom_fraction,
        bf16=profile.bf16,
        compute_capability=profile.compute_capability,
        bandwidth_bytes_per_s=profile.bandwidth_bytes_per_s,
    )


def _cc_text(gpu: GpuDevice) -> str | None:
    return f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}" if gpu.compute_capability else None


def budget_from_report(
    report: HardwareReport,
    headroom_fraction: float = DEFAULT_HEADROOM,
    device_index: int | None = None,
    *,
    cpu: bool = False,
    measure_bandwidth: bool = False,
) -> Budget:
    """Budget of the probed machine: the visible GPU with the most free memory, else host RAM.

    Args:
        report: A :func:`~portllm_edge.hardware.probe` result.
        headroom_fraction: Fraction kept back.
        device_index: Use ``cuda:N`` (torch index) instead of the GPU with most free memory.
        cpu: Plan for host RAM even when a GPU is visible (``--device cpu``).
        measure_bandwidth: Time a host memory copy for the CPU budget's bandwidth (about 0.3 s);
            a GPU's comes from NVML.

    Raises:
        HardwareError: ``device_index`` is not a visible GPU.
    """
    from portllm_edge.hardware.compute import (
        cpu_bf16_native,
        gpu_bandwidth_bytes_per_s,
        measure_cpu_bandwidth,
    )

    _check_headroom(headroom_fraction)
    gpus = [g for g in report.visible_gpus if g.free_bytes is not None and g.total_bytes is not None]
    if cpu:
        gpus = []
    if device_index is not None:
        chosen = [g for g in gpus if g.torch_index == device_index]
        if not chosen:
            raise HardwareError(
                f"no visible GPU cuda:{device_index} with readable memory.",
                hint="run `portllm-edge probe` to see the visible devices, or check CUDA_VISIBLE_DEVICES.",
            )
        gpus = chosen
    if gpus:
        best = max(gpus, key=lambda g: g.free_bytes or 0)
        cc = best.compute_capability
        return Budget(
            name=best.label,
            source="probe",
            device="unified" if best.unified_memory else "cuda",
            total_bytes=int(best.total_bytes or 0),
            available_bytes=int(best.free_bytes or 0),
            headroom_fraction=headroom_fraction,
            bf16=cc is None or cc[0] >= 8,
            compute_capability=_cc_text(best),
            torch_index=best.torch_index,
            bandwidth_bytes_per_s=gpu_bandwidth_bytes_per_s(best.nvml_index),
        )
    host = report.host
    return Budget(
        name="host RAM" + (f" (cgroup limit {host.limit_human()})" if host.limit_bytes is not None else ""),
        source="probe",
        device="cpu",
        total_bytes=host.total_bytes,
        available_bytes=host.available_bytes,
        headroom_fraction=headroom_fraction,
        bf16=cpu_bf16_native(),
        bandwidth_bytes_per_s=measure_cpu_bandwidth() if measure_bandwidth else None,
    )


def memory_budget(
    hardware_profile: str | HardwareProfile | None = None,
    headroom_fraction: float = DEFAULT_HEADROOM,
    *,
    report: HardwareReport | None = None,
    device_index: int | None = None,
    device: str | None = None,
    measure_bandwidth: bool = False,
) -> Budget:
    """The budget to plan against: a named profile, or this machine.

    Args:
        hardware_profile: Profile name (``"rtx-3060-12gb"``), a :class:`HardwareProfile`, or
            ``None`` to probe this machine (no torch import).
        headroom_fraction: Fraction of available memory kept back (default 10 %).
        report: A probe result to reuse (default: probe now).
        device_index: Pick ``cuda:N`` when probing.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` when probing: the device the load will use
            (``cuda`` = the GPU with the most free memory).
        measure_bandwidth: Measure host memory bandwidth for a CPU budget (see :func:`budget_from_report`).

    Raises:
        ConfigError: Unknown profile (with a "did you mean" hint) or bad headroom.
        HardwareError: ``device_index`` not visible.
    """
    if hardware_profile is not None:
        if isinstance(hardware_profile, str):
            from portllm_edge.catalog import load_catalog

            hardware_profile = load_catalog().hardware_profile(hardware_profile)
        return budget_from_profile(hardware_profile, headroom_fraction)
    cpu = device is not None and device.split(":")[0] == "cpu"
    if device is not None and device.startswith("cuda:"):
        device_index = int(device.split(":")[1])
    return budget_from_report(
        report if report is not None else probe(),
        headroom_fraction,
        device_index,
        cpu=cpu,
        measure_bandwidth=measure_bandwidth,
    )


def load_device(report: HardwareReport | None = None) -> str:
    """The device a load uses by default: the budget's (:attr:`Budget.load_device`) for this machine.

    Plan and load share it: the budget plans for the visible GPU with the most free memory,
    and the load goes to that GPU's ``cuda:N``; ``"cpu"`` without a visible GPU.
    """
    return budget_from_report(report if report is not None else probe()).load_device


def select_devices(
    min_free_memory: str | int = 0, *, report: HardwareReport | None = None
) -> list[GpuDevice]:
    """Visible GPUs (whole or MIG slices) with at least ``min_free_memory`` free, most free first.

    Args:
        min_free_memory: A size (``"8GiB"``) or bytes.
        report: A probe result to reuse (default: probe now).
    """
    need = parse_size(min_free_memory, field="min_free_memory")
    rep = report if report is not None else probe()
    chosen = [g for g in rep.visible_gpus if g.free_bytes is not None and g.free_bytes >= need]
    return sorted(chosen, key=lambda g: -(g.free_bytes or 0))
