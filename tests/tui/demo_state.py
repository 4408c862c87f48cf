"""A deterministic home folder that looks like the one ``make demo`` leaves: two store models, two patches, runs.

Names are the demo's (``SmolLM2-135M-Instruct`` and ``SmolLM2-135M-Instruct-demo-v2``,
``demo-tags`` and ``demo-tags@SmolLM2-135M-Instruct-demo-v2``), so the snapshots show
whether long names are cut. The models are config.json files only (the planner sizes a
model from its config); the patches are the tiny llama adapter; every time stamp, run id,
version and hardware record is fixed, so SVG snapshots do not change from run to run.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import pytest

FIXED = _dt.datetime(2026, 12, 1, 9, 30, tzinfo=_dt.UTC)
OLD_BASE = "SmolLM2-135M-Instruct"
NEW_BASE = "SmolLM2-135M-Instruct-demo-v2"
PATCH = "demo-tags"
PORTED = f"{PATCH}@{NEW_BASE}"

SMOLLM2_135M_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
"""SmolLM2-135M-Instruct's config.json (the fields the planner reads)."""


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
        return FIXED if tz is not None else FIXED.replace(tzinfo=None)


def _record(run_id: str, kind: str, minute: int, inputs: dict[str, Any], results: dict[str, Any]) -> None:
    from portllm_edge.history import record_run

    start = FIXED.replace(minute=minute)
    record_run(
        kind,
        inputs,
        results,
        versions={"portllm_edge": "0.1.0", "torch": "2.13.0"},
        hardware={"host": "fixture"},
        run_id=run_id,
        started_at=start.isoformat(),
        finished_at=(start + _dt.timedelta(seconds=42)).isoformat(),
    )


def build_demo_state(tiny_adapter: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fill the test's (empty) home with the demo's models, patches and three runs, all time-fixed."""
    from portllm_edge import paths
    from portllm_edge.patches import LineageEntry, PatchStore
    from portllm_edge.patches import manifest as manifest_mod

    for name in (OLD_BASE, NEW_BASE):
        folder = paths.models_dir() / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(SMOLLM2_135M_CONFIG, indent=2), encoding="utf-8")
    monkeypatch.setattr(manifest_mod, "datetime", _FixedDatetime)
    # peft writes target_modules from a set (order varies with the hash seed), the base's
    # temporary path and a README with its version: a normalized copy gives the same
    # checksums every run.
    src = paths.home() / "fixture-adapter"
    src.mkdir()
    cfg = json.loads((tiny_adapter / "adapter_config.json").read_text(encoding="utf-8"))
    cfg = {k: sorted(v) if isinstance(v, list) else v for k, v in cfg.items()}
    cfg["base_model_name_or_path"] = OLD_BASE  # not the session's temporary folder
    (src / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    (src / "adapter_model.safetensors").write_bytes((tiny_adapter / "adapter_model.safetensors").read_bytes())
    (src / "README.md").write_text("A tiny LoRA adapter for the app's snapshot tests.\n", encoding="utf-8")
    tiny_adapter = src
    store = PatchStore()
    # Fixed lineage notes: the default one names the (temporary) source folder, whose length
    # changes the manifest's size from run to run.
    imported = LineageEntry(kind="import", note="trained by the demo")
    store.import_dir(tiny_adapter, name=PATCH, task="jsonl", source_base_id=OLD_BASE, lineage=[imported])
    lineage = [
        imported,
        LineageEntry(
            kind="port", base_id=NEW_BASE, precision="nf4", parent=PATCH, note="8/8 tensors matched"
        ),
    ]
    store.import_dir(tiny_adapter, name=PORTED, task="jsonl", source_base_id=NEW_BASE, lineage=lineage)
    GiB = 1024**3
    _record(
        "eval-20261201T093000-00000001",
        "eval",
        30,
        {"base": OLD_BASE, "patch": PATCH, "task": "jsonl", "label": "old base + patch"},
        {"task": "animal-or-vehicle", "accuracy": 0.97, "n": 100, "ci_low": 0.915, "ci_high": 0.99},
    )
    _record(
        "port-20261201T093100-00000002",
        "port",
        31,
        {"patch": PATCH, "base": NEW_BASE, "precision": "nf4"},
        {
            "precision": "nf4",
            "peak_bytes": int(1.27 * GiB),  # measured in the port's worker process
            "metric": "peak_anon_rss",
            "phases": {"check": 0.4, "load": 6.1, "attach": 0.3, "save": 0.1},
            "ported_name": PORTED,
            "attach": {"matched_tensors": 8, "total_tensors": 8},
        },
    )
    _record(
        "bench-20261201T093200-00000003",
        "bench",
        32,
        {"base": NEW_BASE, "seq_len": 256, "batch_size": 8},
        {
            "configs": [
                {"name": "lora_bf16", "peak_median_bytes": int(2.9 * GiB), "metric": "peak_rss"},
                {"name": "port_nf4", "peak_median_bytes": int(1.1 * GiB), "metric": "peak_rss"},
            ],
            "ratio": 2.64,
            "ratio_metric": "peak_rss",
        },
    )
