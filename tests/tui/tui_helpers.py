"""TUI test helpers: a fixed hardware reading injected into ``create_app``, and a way to run Pilot code.

A plain module (not conftest) so test files import it by a unique name.

pytest-asyncio is not installed, so each test wraps its async body in ``asyncio.run``
(:func:`run`). The hardware reading is faked by dependency injection (``read_hardware``),
never by patching NVML, so snapshots do not depend on the machine running them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

GiB = 1024**3


def fake_report() -> Any:
    """A desktop with one RTX 3060 12 GB (4 GiB in use), 32 GiB RAM (20 GiB available), 500 GB disk."""
    from portllm_edge.hardware import DiskReading, GpuDevice, HardwareReport, HostMemory

    gpu = GpuDevice(
        nvml_index=0,
        name="NVIDIA GeForce RTX 3060",
        uuid="GPU-00000000-0000-0000-0000-000000000000",
        total_bytes=12 * GiB,
        free_bytes=8 * GiB,
        used_bytes=4 * GiB,
        compute_capability=(8, 6),
        torch_index=0,
    )
    return HardwareReport(
        gpus=(gpu,),
        host=HostMemory(physical_total_bytes=32 * GiB, physical_available_bytes=20 * GiB, cgroup=None),
        disk=DiskReading(
            path=Path("/fake/store"), measured_at=Path("/fake"), total_bytes=500 * GiB, free_bytes=300 * GiB
        ),
        driver_version="550.54",
        cuda_driver_version="12.4",
        nvml_status="ok",
        cuda_visible_devices=None,
    )


def fake_cpu_report() -> Any:
    """A CPU-only box: no GPU, 16 GiB RAM with 12 GiB available (what the port tests run on)."""
    from portllm_edge.hardware import DiskReading, HardwareReport, HostMemory

    return HardwareReport(
        gpus=(),
        host=HostMemory(physical_total_bytes=16 * GiB, physical_available_bytes=12 * GiB, cgroup=None),
        disk=DiskReading(
            path=Path("/fake"), measured_at=Path("/fake"), total_bytes=100 * GiB, free_bytes=50 * GiB
        ),
        driver_version=None,
        cuda_driver_version=None,
        nvml_status="NVML unavailable (test)",
        cuda_visible_devices=None,
    )


def make_app(**kwargs: Any) -> Any:
    """The real app from the real factory, with the fake GPU desktop and no refresh timer."""
    from portllm_edge_tui.app import create_app

    kwargs.setdefault("read_hardware", fake_report)
    kwargs.setdefault("refresh_seconds", None)
    return create_app(**kwargs)


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async test body (no pytest-asyncio here)."""
    return asyncio.run(coro_fn())


async def settle(pilot: Any, rounds: int = 3) -> None:
    """Let workers finish and their messages be handled (workers can start other workers)."""
    for _ in range(rounds):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def wait_for(pilot: Any, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Pause until ``predicate()`` is true (a port runs for seconds in a thread worker)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for the UI")
        await pilot.pause(0.05)


def notifications(app: Any) -> list[Any]:
    """The app's current notifications (title, message, severity)."""
    return list(app._notifications)


def plain(widget: Any, width: int = 120) -> str:
    """A Static's current content as plain text (rendered with rich at ``width`` columns)."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None, record=True)
    console.print(widget.content)
    return console.export_text()
