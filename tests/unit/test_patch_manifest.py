"""PatchManifest: round trip, newer-version tolerance (unknown keys dropped with a warning), required keys."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portllm_edge.errors import PatchError
from portllm_edge.patches import (
    LineageEntry,
    ManifestWarning,
    PatchManifest,
    manifest_from_dict,
    read_manifest,
)
from portllm_edge.patches.manifest import write_manifest

SHA = "a" * 64


def _minimal() -> dict:
    return {
        "schema_version": 1,
        "name": "p",
        "adapter": {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]},
        "files": {"adapter_model.safetensors": SHA},
    }


def test_round_trip(tmp_path: Path) -> None:
    m = manifest_from_dict(_minimal())
    m = m.model_copy(
        update={"lineage": [LineageEntry(kind="port", base_id="v2", precision="nf4", parent="p")]}
    )
    write_manifest(tmp_path / "manifest.json", m)
    back = read_manifest(tmp_path / "manifest.json")
    assert back == m
    assert back.lineage[0].kind == "port" and back.lineage[0].at.tzinfo is not None
    assert json.loads((tmp_path / "manifest.json").read_text())["schema_version"] == 1


def test_minimal_gets_defaults() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = manifest_from_dict(_minimal())
    assert m.task is None and m.lineage == [] and m.source_base.id is None
    assert m.adapter.use_dora is False and m.adapter.lora_alpha == 8.0
    assert (datetime.now(UTC) - m.created_at).total_seconds() < 60


def test_newer_version_unknown_keys_dropped_with_one_warning() -> None:
    data = _minimal()
    data["schema_version"] = 3
    data["signature"] = "xyz"
    data["adapter"]["lora_bias_v3"] = True
    data["lineage"] = [{"kind": "port", "at": "2030-01-01T00:00:00Z", "gpu": "B300"}]
    data["source_base"] = {"id": "x", "revision": "abc"}
    with pytest.warns(ManifestWarning) as rec:
        m = manifest_from_dict(data)
    text = " ".join(str(w.message) for w in rec)
    for key in (
        "signature",
        "adapter.lora_bias_v3",
        "lineage[].gpu",
        "source_base.revision",
        "schema_version 3",
    ):
        assert key in text
    assert m.schema_version == 3 and m.lineage[0].at.year == 2030 and m.source_base.id == "x"


@pytest.mark.parametrize(
    ("drop", "field"),
    [
        (("name",), "`name`"),
        (("files",), "`files`"),
        (("adapter", "r"), "`adapter.r`"),
        (("adapter", "target_modules"), "`adapter.target_modules`"),
    ],
)
def test_required_keys(drop, field: str) -> None:
    data = _minimal()
    target = data
    for k in drop[:-1]:
        target = target[k]
    del target[drop[-1]]
    with pytest.raises(PatchError, match=field):
        manifest_from_dict(data, source="x/manifest.json")


def test_lineage_entry_requires_kind() -> None:
    data = _minimal()
    data["lineage"] = [{"kind": "import"}, {"note": "no kind"}]
    with pytest.raises(PatchError, match=r"`lineage\[1\]\.kind`"):
        manifest_from_dict(data)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("adapter", "r"), 0, "adapter.r"),
        (("files",), {"a": "not-a-sha"}, "files"),
        (("lineage",), [{"kind": "merge"}], "lineage.0.kind"),
        (("created_at",), "yesterday", "created_at"),
    ],
)
def test_wrong_types_name_the_field(path, value, field: str) -> None:
    data = _minimal()
    target = data
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    with pytest.raises(PatchError) as ei:
        manifest_from_dict(data, source="m.json")
    assert f"`{field}`" in ei.value.message and "m.json" in ei.value.message


def test_not_json_and_missing(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(PatchError, match="not valid JSON"):
        read_manifest(tmp_path / "manifest.json")
    with pytest.raises(PatchError, match="manifest not found"):
        read_manifest(tmp_path / "none.json")
    with pytest.raises(PatchError, match="not a JSON object"):
        manifest_from_dict([1])


def test_manifest_is_frozen() -> None:
    m = manifest_from_dict(_minimal())
    with pytest.raises(Exception):  # noqa: B017 - pydantic ValidationError for frozen instances
        m.name = "other"  # type: ignore[misc]
    assert isinstance(m, PatchManifest)
