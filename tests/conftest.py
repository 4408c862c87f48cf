"""Session fixtures: tiny random old/new base pairs of four families, real data paths, SmolLM2.

HF_HUB_OFFLINE is set before transformers can be imported, so no test can reach a hub.
Every test gets its own empty portllm-edge home (patch store, models, runs).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

import factories  # noqa: E402

SHARED = Path(os.environ.get("PORTLLM_EDGE_SHARED", REPO.parent / "shared")).resolve()
SHARED_DATA = SHARED / "data"


def _default_smollm2() -> Path:
    env = os.environ.get("PORTLLM_EDGE_SMOLLM2_GGUF")
    if env:
        return Path(env)
    return REPO / ".cache" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def portllm_home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh, empty portllm-edge home for every test (never the user's real store)."""
    from portllm_edge import paths

    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv(paths.ENV_HOME, str(home))
    paths.set_home(None)
    yield home
    paths.set_home(None)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_pairs(tiny_root) -> dict[str, factories.TinyPair]:
    """All four families' old/new pairs, built once per session (a few seconds)."""
    return {family: factories.build_pair(family, tiny_root) for family in factories.FAMILIES}


@pytest.fixture(scope="session", params=factories.FAMILIES)
def tiny_pair(request, tiny_pairs) -> factories.TinyPair:
    """Parametrized over the four families."""
    return tiny_pairs[request.param]


@pytest.fixture(scope="session")
def tiny_adapters(tiny_pairs, tiny_root) -> dict[str, Path]:
    """A random non-zero LoRA adapter (r=4, q_proj/v_proj) trained-shape on each family's old base."""
    return {
        family: factories.build_lora_adapter(pair.old, tiny_root / f"{family}-lora")
        for family, pair in tiny_pairs.items()
    }


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips where it is absent (a user's own clone). CI always has it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real task data not found at {SHARED_DATA} (set PORTLLM_EDGE_SHARED to the shared/ folder)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF (``make smollm2`` fetches it)."""
    path = _default_smollm2()
    if not path.is_file():
        pytest.skip(f"SmolLM2 GGUF not found at {path}; run `make smollm2` or set PORTLLM_EDGE_SMOLLM2_GGUF")
    return path


@pytest.fixture(scope="session")
def smollm2_model(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2 imported from its GGUF once per session (:func:`~portllm_edge.models.gguf.import_gguf`,
    default name and dtype), in a store of its own: the import is ~20-30 s on 2 cores.

    Tests only read it: the GGUF import test asserts on it; a test that needs it in its own
    model store hard-links it there (:func:`factories.link_model`) and ``import_gguf(..., reuse=True)``
    then returns that copy.
    """
    from portllm_edge import paths
    from portllm_edge.models.gguf import import_gguf

    paths.set_home(tmp_path_factory.mktemp("smollm2-home"))
    try:
        return import_gguf(smollm2_gguf)
    finally:
        paths.set_home(None)
