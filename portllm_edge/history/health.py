"""Patch health: the successive ports of one patch along one lineage of base updates, from the run history.

Why this module exists: PortLLM's follow-ups disagree on whether a patch keeps its gain over
many successive updates of its base. A ``compare`` run against a version of an update chain
(``simulate-update --chain``) records the chain's root and the version
(``results.extras.lineage``); this module groups those runs by (patch, lineage root, task)
and keeps the newest run per version, so ``report`` can draw the recovered gain per
version with its paired bootstrap interval, and a user can see the trend for their own
lineage.

It reads run records only: it must not import torch or load a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class HealthPoint:
    """One port of the patch onto one version.

    Attributes:
        version: ``v2``, ``v3``, ...
        recovered_gain: (ported − zero-shot) / (old + patch − zero-shot), a fraction.
        low, high: its 95 % paired bootstrap interval, or ``None`` when not recorded.
        run_id: the ``compare`` run.
        n: examples scored.
        gain: the patch's gain, old + patch − new base zero-shot accuracy (a fraction), the
            denominator of the recovered gain: near 0 or negative, the ratio means little.
    """

    version: str
    recovered_gain: float
    low: float | None
    high: float | None
    run_id: str
    n: int | None = None
    gain: float | None = None


@dataclass(frozen=True)
class PatchHealth:
    """The successive ports of one patch along one lineage, on one task, oldest version first.

    Attributes:
        patch: the patch as the runs named it.
        lineage: the lineage's root (v1) folder.
        task: the task's name.
        points: one :class:`HealthPoint` per version (the newest run of each).
    """

    patch: str
    lineage: str
    task: str
    points: tuple[HealthPoint, ...]

    @property
    def label(self) -> str:
        """``patch on task (lineage root folder name)`` for charts and tables."""
        return f"{self.patch} on {self.task} ({Path(self.lineage).name})"


def _version_number(version: str) -> int:
    m = re.fullmatch(r"v(\d+)", version)
    return int(m.group(1)) if m else 0


def _get(run: Any, key: str) -> Any:
    return getattr(run, key) if hasattr(run, key) else run.get(key)


def _point(run: Any, results: Mapping[str, Any], version: str) -> HealthPoint | None:
    gain = results.get("recovered_gain")
    if not isinstance(gain, (int, float)):
        return None
    from portllm_edge.porting.compare import ROW_OLD_PATCH, ROW_ZERO_SHOT

    interval = ((results.get("paired") or {}).get("recovered_gain")) or {}
    rows = results.get("rows") or [{}]
    acc = {r.get("config"): r.get("accuracy") for r in rows}
    zero, old = acc.get(ROW_ZERO_SHOT), acc.get(ROW_OLD_PATCH)
    patch_gain = (
        float(old) - float(zero) if isinstance(zero, (int, float)) and isinstance(old, (int, float)) else None
    )
    return HealthPoint(
        version,
        float(gain),
        interval.get("low"),
        interval.get("high"),
        str(_get(run, "id")),
        rows[0].get("n"),
        patch_gain,
    )


def patch_health(runs: Iterable[Any]) -> list[PatchHealth]:
    """Group ``compare`` runs against versions of update chains into per-(patch, lineage, task) series.

    Args:
        runs: ``RunRecord`` objects (or dicts of their fields), any order; runs of other kinds,
            failed runs and comparisons against a base outside any chain are skipped.

    Returns:
        The series, each with its versions in order (``v2`` before ``v10``); for a version
        compared several times, the run that started last.
    """
    newest: dict[tuple[str, str, str], dict[str, tuple[str, HealthPoint]]] = {}
    for run in runs:
        if _get(run, "kind") != "compare" or _get(run, "status") != "ok":
            continue
        results = _get(run, "results") or {}
        lineage = (results.get("extras") or {}).get("lineage")
        if not isinstance(lineage, Mapping) or "version" not in lineage:
            continue
        point = _point(run, results, str(lineage["version"]))
        if point is None:
            continue
        key = (
            str((_get(run, "inputs") or {}).get("patch")),
            str(lineage.get("root")),
            str(results.get("task")),
        )
        started = str(_get(run, "started_at") or "")
        series = newest.setdefault(key, {})
        if point.version not in series or series[point.version][0] <= started:
            series[point.version] = (started, point)
    return [
        PatchHealth(
            patch,
            root,
            task,
            tuple(p for _, p in sorted(s.values(), key=lambda sp: _version_number(sp[1].version))),
        )
        for (patch, root, task), s in newest.items()
    ]


def lineage_health(
    patch: str | None = None, *, db: Path | None = None, limit: int = 10_000
) -> list[PatchHealth]:
    """:func:`patch_health` of the ``compare`` runs in the run history, optionally of one patch.

    Raises:
        StoreError: the history cannot be read.
    """
    from portllm_edge.history.store import list_runs

    series = patch_health(list_runs("compare", limit=limit, db=db))
    return [s for s in series if patch is None or s.patch == patch]
