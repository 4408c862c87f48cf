"""Which loads read the checkpoint with ``pread`` (their source pages are not the process's)."""

from __future__ import annotations

import pytest
import transformers.modeling_utils as modeling

from portllm_edge.models.refs import resolve_base
from portllm_edge.porting.load import load_base_model, stored_dtype


@pytest.fixture()
def backends(monkeypatch) -> list[str]:
    """The ``backend`` transformers passes to ``safe_open`` on each shard (``mmap`` when none)."""
    seen: list[str] = []
    original = modeling.safe_open

    def recording(*args, **kwargs):
        seen.append(kwargs.get("backend", "mmap"))
        return original(*args, **kwargs)

    monkeypatch.setattr(modeling, "safe_open", recording)
    return seen


def test_a_load_that_casts_reads_with_pread(tiny_pairs, backends):
    """fp32 checkpoint at bf16: each cast tensor's file pages must not stay mapped (counted as the job's)."""
    base = str(tiny_pairs["llama"].new)
    assert stored_dtype(resolve_base(base)) == "fp32"
    load_base_model(base, "bf16", device="cpu")
    assert backends and set(backends) == {"pread"}


def test_a_load_at_the_stored_dtype_keeps_the_map(tiny_pairs, backends):
    """fp32 checkpoint at fp32: the tensors are the file's pages, so the map stays."""
    load_base_model(str(tiny_pairs["llama"].new), "fp32", device="cpu")
    assert backends and set(backends) == {"mmap"}
