"""The Textual app: five screens over the headless core, and the one factory the CLI and tests share.

Why this module exists: ``portllm-edge tui`` and the tests must build the *same*
app, with the same screens, bindings and command-palette entries; only the
dependencies differ (tests inject a fixed hardware reading so snapshots are
deterministic). :func:`create_app` is that single factory.

What it must not do: import torch, transformers or any other heavy library at
import time (first paint must come in well under 1.5 s), or call the core on the
UI thread for anything that can block. Screens run the core in thread workers.
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from .common import NAV_ITEMS

if TYPE_CHECKING:
    from portllm_edge.workflow.queries import Budget, HardwareReport

ENV_TIMING = "PORTLLM_EDGE_TUI_TIMING"
"""When set, the app shows the measured time to first paint as a notification."""


_IMPORTED_AT = time.perf_counter()


def seconds_since_process_start(fallback_start: float | None = None) -> float:
    """Seconds since this process started (interpreter start-up and imports included).

    On Linux: ``/proc/uptime`` minus the process's start time from ``/proc/self/stat``
    (clock ticks since boot; 10 ms resolution). Elsewhere: since this module was imported.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - (fallback_start if fallback_start is not None else _IMPORTED_AT)


def _default_read_hardware() -> HardwareReport:
    """This machine's memory, read without torch (psutil, cgroup files, NVML)."""
    from portllm_edge.workflow.queries import probe

    return probe()


_SCREEN_CLASSES = {
    "dashboard": ("dashboard", "DashboardScreen"),
    "models": ("models", "ModelsScreen"),
    "patches": ("patches", "PatchesScreen"),
    "port": ("port", "PortScreen"),
    "runs": ("runs", "RunsScreen"),
}


def _make_screen(mode: str) -> Screen[Any]:
    """Import a screen's module when the screen is first opened (keeps start-up light)."""
    module, cls = _SCREEN_CLASSES[mode]
    screen_cls = getattr(importlib.import_module(f"{__package__}.screens.{module}"), cls)
    return screen_cls()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class AppDeps:
    """What the app reads from the outside world; tests pass fakes here.

    Attributes:
        read_hardware: Returns a fresh hardware reading (no torch; called from a thread worker on a
            timer and whenever a screen needs the budget).
        refresh_seconds: Interval of the Dashboard's live memory bars, seconds; ``None`` turns the
            timer off (snapshot tests).
        hardware_profile: Plan against this hardware profile (``"rtx-3060-12gb"``) instead of the
            probed machine; ``None`` = this machine.
        headroom_fraction: Fraction of available memory the budget keeps back.
        report_dir: Default folder offered by the Runs screen's "write report"; ``None`` =
            ``<home>/reports/report-<UTC time>``.
    """

    read_hardware: Callable[[], HardwareReport] = _default_read_hardware
    refresh_seconds: float | None = 2.0
    hardware_profile: str | None = None
    headroom_fraction: float = 0.10
    report_dir: str | None = None

    def budget(self, report: HardwareReport | None = None, *, measure_bandwidth: bool = False) -> Budget:
        """The memory budget to plan against (thread-safe; call it from workers).

        Args:
            report: A hardware reading to reuse (default: read one now).
            measure_bandwidth: Time this machine's memory bandwidth for a CPU budget (about 0.3 s;
                the decode-speed estimate needs it). Only with the real probe: an injected reading
                describes another machine, whose bandwidth this one can't measure.

        Raises:
            ConfigError: unknown hardware profile or bad headroom.
        """
        from portllm_edge.workflow.queries import memory_budget

        if self.hardware_profile is not None:
            return memory_budget(self.hardware_profile, self.headroom_fraction)
        return memory_budget(
            None,
            self.headroom_fraction,
            report=report if report is not None else self.read_hardware(),
            measure_bandwidth=measure_bandwidth and self.read_hardware is _default_read_hardware,
        )


class PortllmApp(App[None]):
    """portllm-edge's terminal app: Dashboard, Models, Patches, Port, Runs.

    Args:
        deps: The injected dependencies (see :class:`AppDeps`).
        start_screen: Mode to open first (``"dashboard"``, ``"models"``, ``"patches"``, ``"port"``,
            ``"runs"``).
    """

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))
    TITLE = "portllm-edge"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        mode: functools.partial(_make_screen, mode) for mode, _title, _help in NAV_ITEMS
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('dashboard')", "Dashboard", show=False),
        Binding("2", "switch_mode('models')", "Models", show=False),
        Binding("3", "switch_mode('patches')", "Patches", show=False),
        Binding("4", "switch_mode('port')", "Port", show=False),
        Binding("5", "switch_mode('runs')", "Runs", show=False),
        Binding("f1,question_mark", "toggle_help_panel", "Keys", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, deps: AppDeps | None = None, *, start_screen: str = "dashboard") -> None:
        super().__init__()
        self.deps = deps or AppDeps()
        self.start_screen = start_screen
        self.started_at = time.perf_counter()
        self.first_paint_seconds: float | None = None
        """Seconds from process start to the first painted frame (set on ``Ready``)."""

    def on_mount(self) -> None:
        self.switch_mode(self.start_screen)

    def on_ready(self) -> None:
        self.first_paint_seconds = seconds_since_process_start(self.started_at)
        self.log.info(f"first paint after {self.first_paint_seconds:.3f} s")
        if os.environ.get(ENV_TIMING):
            self.notify(f"first paint {self.first_paint_seconds:.2f} s after start", title="Start-up")

    def help_panel_shown(self) -> bool:
        """Whether the keys panel is on the current screen."""
        return bool(self.screen.query("HelpPanel"))

    def action_toggle_help_panel(self) -> None:
        """``?`` and F1 open the keys panel, and close it when it is open."""
        if self.help_panel_shown():
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Command palette: one entry per screen, the current screen's actions, then Textual's own."""
        for key, (mode, title, help_text) in enumerate(NAV_ITEMS, start=1):
            yield SystemCommand(
                f"{title} screen", f"{help_text} (key {key})", lambda m=mode: self.switch_mode(m)
            )
        for title, help_text, callback in getattr(screen, "palette_commands", lambda: [])():
            yield SystemCommand(title, help_text, callback)
        yield from super().get_system_commands(screen)


def create_app(
    *,
    read_hardware: Callable[[], HardwareReport] | None = None,
    refresh_seconds: float | None = 2.0,
    hardware_profile: str | None = None,
    headroom_fraction: float = 0.10,
    report_dir: str | None = None,
    start_screen: str = "dashboard",
) -> PortllmApp:
    """Build the app; the CLI calls it with no arguments, tests inject fakes.

    Args:
        read_hardware: Hardware reader (default :func:`portllm_edge.hardware.probe`, no torch).
        refresh_seconds: Live-bar refresh interval; ``None`` disables the timer.
        hardware_profile: Plan for a named hardware profile instead of this machine.
        headroom_fraction: Budget headroom kept back, in [0, 1).
        report_dir: Default folder for "write report".
        start_screen: First screen (mode name).

    Returns:
        A ready-to-run :class:`PortllmApp` (call ``.run()`` or ``.run_test()``).
    """
    deps = AppDeps(
        read_hardware=read_hardware or _default_read_hardware,
        refresh_seconds=refresh_seconds,
        hardware_profile=hardware_profile,
        headroom_fraction=headroom_fraction,
        report_dir=report_dir,
    )
    return PortllmApp(deps, start_screen=start_screen)
