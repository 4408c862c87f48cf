"""The five top-level screens, one per mode (keys 1-5)."""

from __future__ import annotations

from .dashboard import DashboardScreen
from .models import ModelsScreen
from .patches import PatchesScreen
from .port import PortScreen
from .runs import RunsScreen

__all__ = ["DashboardScreen", "ModelsScreen", "PatchesScreen", "PortScreen", "RunsScreen"]
