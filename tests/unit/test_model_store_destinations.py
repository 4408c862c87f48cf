"""Destinations inside the model store: refused for a user's --out, allowed for the demo's v2 (the store's own entry)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from portllm_edge import paths
from portllm_edge.errors import ConfigError
from portllm_edge.fsutil import unwritable_reason
from portllm_edge.workflow.train import UpdateRequest, update


def test_the_rule_refuses_the_model_store_unless_writing_one_of_its_entries(portllm_home: Path) -> None:
    models = (portllm_home / "models").resolve()
    assert unwritable_reason(models / "v2") == (
        f"it is inside the model store {models} (written only by `models import`, "
        "`models import-gguf` and the demo)"
    )
    assert unwritable_reason(models / "v2", model_store_entry=True) is None
    assert unwritable_reason(models / ".quantized" / "x", model_store_entry=True) == (
        f"it is not an entry of the model store {models} (expected {models}/NAME)"
    )
    assert unwritable_reason(portllm_home / "elsewhere" / "v2", model_store_entry=True) == (
        f"it is not an entry of the model store {models} (expected {models}/NAME)"
    )
    assert unwritable_reason(portllm_home / "elsewhere") is None


def test_the_demos_v2_is_written_into_the_model_store(tiny_pairs, tmp_path: Path, portllm_home: Path) -> None:
    """experiment._ensure_v2 (what `make demo` runs) still writes models/NAME; a user's update there is refused."""
    from portllm_edge.models import resolve_base
    from portllm_edge.workflow.experiment import ExperimentSettings, _Ctx, _ensure_v2

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 300)
    v1 = resolve_base(str(tiny_pairs["llama"].old))
    dest = paths.models_dir() / "tiny-v2"
    user = UpdateRequest(str(v1.path), [str(corpus)], str(dest), steps=1, seq_len=8, batch_size=1)
    with pytest.raises(ConfigError, match=r"`--out` can't be written: it is inside the model store"):
        update(user)
    assert not dest.exists()

    said: list[str] = []
    ctx = _Ctx(
        task=None,  # type: ignore[arg-type]  # _ensure_v2 reads only the settings
        s=ExperimentSettings(update_steps=1, update_seq_len=8, update_batch=1),
        say=said.append,
        bar=lambda label: contextlib.nullcontext(lambda *a: None),
        fresh=False,
    )
    summary = _ensure_v2(ctx, v1, [corpus], "tiny-v2")
    assert summary.steps == 1
    assert (dest / "config.json").is_file()
    assert "experiment_key" in json.loads((dest / "portllm_update.json").read_text())
    assert resolve_base("tiny-v2").path.resolve() == dest.resolve()
    _ensure_v2(ctx, v1, [corpus], "tiny-v2")
    assert said == ["    (cached)"]
