"""Fixtures of the TUI tests (helpers live in ``tui_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def stored_llama_patch(tiny_adapters: dict[str, Path]) -> str:
    """The tiny llama LoRA imported into this test's fresh store as ``llama-patch``."""
    from portllm_edge.patches import PatchStore

    PatchStore().import_dir(tiny_adapters["llama"], name="llama-patch", task="sst2")
    return "llama-patch"
