"""CLI commands: check (compatibility preflight) (placeholder; filled by the owner of this area)."""

from __future__ import annotations

from portllm_edge.cli.app import app  # noqa: F401
