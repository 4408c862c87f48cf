"""The porting steps that need no model in memory: check a patch, name and store the port.

The whole job (resolve -> preflight -> load -> attach -> evaluate -> save -> record) is
:func:`portllm_edge.workflow.port`, which calls these. The ported patch is the *same* ΔW (PortLLM, Khan et al., ICLR 2025, §3:
W_new + ΔW with ΔW learned on W_old); only its ``adapter_config.json``
``base_model_name_or_path`` changes (and, for a vocabulary change, the carried
embedding rows; see :mod:`portllm_edge.porting.vocab`). It is stored as a new
patch whose lineage is the parent's plus a ``port`` entry.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.patches.store import StoredPatch


def checked_adapter(
    adapter_dir: Path,
    base_dir: Path,
    work_dir: Path,
    *,
    old_base_dir: Path | None = None,
    force: bool = False,
) -> tuple[Path, Any]:
    """Run the preflight of ``adapter_dir`` against ``base_dir`` and return the folder to attach, and the report.

    The folder is the patch itself, or a rewritten copy under ``work_dir`` (keys normalized, vocabulary
    rows carried over; see :func:`portllm_edge.porting.preflight.prepare_adapter`).

    Raises:
        CompatibilityError: a check failed and ``force`` is false.
    """
    from portllm_edge.porting.preflight import prepare_adapter, run_preflight

    report = run_preflight(adapter_dir, base_dir, old_base_dir=old_base_dir)
    if not force:
        report.raise_on_failure()
    attach_dir = prepare_adapter(adapter_dir, base_dir, work_dir, report=report, old_base_dir=old_base_dir)
    return attach_dir, report


def ported_patch_name(parent: str, base_id: str) -> str:
    """Default store name of a ported patch: ``<parent>@<base id>`` with unsafe characters replaced."""
    base = re.sub(r"[^A-Za-z0-9._+-]", "-", base_id)[:60]
    parent_name = Path(parent).name if "/" in parent else parent
    stem = parent_name.split("@", 1)[0]
    return re.sub(r"[^A-Za-z0-9._@+-]", "-", f"{stem}@{base}")[:128]


def store_ported_patch(
    attach_dir: Path,
    *,
    name: str,
    parent: StoredPatch | None,
    source_dir: Path,
    base: ResolvedBase,
    base_fingerprint: str,
    precision: str,
    run_id: str | None,
    note: str,
    overwrite: bool = False,
) -> None:
    """Store the attached adapter as patch ``name``, pointed at ``base``, with the parent's lineage plus a port.

    The adapter tensors are copied unchanged; only ``adapter_config.json``'s
    ``base_model_name_or_path`` becomes ``base.model_id``.

    Raises:
        StoreError: ``name`` exists and ``overwrite`` is false, or the store can't be written.
    """
    from portllm_edge.patches import LineageEntry, PatchStore
    from portllm_edge.patches.manifest import files_checksum

    with tempfile.TemporaryDirectory(prefix="portllm-save-") as tmp:
        out = Path(tmp) / "save"
        out.mkdir()
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(attach_dir / f, out / f)
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = base.model_id
        (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        lineage = (
            list(parent.manifest.lineage)
            if parent
            else [LineageEntry(kind="import", note=f"ported from folder {source_dir}")]
        )
        lineage.append(
            LineageEntry(
                kind="port",
                base_id=base.model_id,
                base_fingerprint=base_fingerprint,
                precision=precision,
                parent=parent.name if parent else None,
                parent_checksum=files_checksum(parent.manifest.files) if parent else None,
                run_id=run_id,
                note=note,
            )
        )
        PatchStore().import_dir(
            out,
            name=name,
            task=parent.manifest.task if parent else None,
            source_base_id=base.model_id,
            source_base_fingerprint=base_fingerprint,
            model_type=str(base.config().get("model_type")),
            lineage=lineage,
            force=overwrite,
        )
