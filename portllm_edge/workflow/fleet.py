"""Port a fleet: every stored patch of one base onto its update, loading the update once.

A user with one patch per department or customer ports them all when the base updates.
:func:`port_fleet` finds the stored patches whose base is OLD by the *weight fingerprint*
the store recorded (:mod:`portllm_edge.models.fingerprint`), never by a path or name
string, loads NEW once, and for each patch runs the same steps as
:func:`portllm_edge.workflow.port` -- preflight and rewrite, attach check, quick
evaluation, save, record -- swapping patches on the one loaded base with peft's
``load_adapter``/``set_adapter``/``delete_adapter``
(:class:`portllm_edge.porting.attach.PatchSwapper`).

Resumable: each ported patch is stored atomically (:class:`portllm_edge.patches.PatchStore`)
the moment it is done, with its parent's name and :func:`~portllm_edge.patches.manifest.files_checksum`
in its lineage; a rerun skips every patch that already has a port onto NEW from the same
parent files and continues at the next one. A patch that fails its preflight (or any later
check) is reported and skipped; the fleet goes on.

Records: one ``fleet`` run for the whole job and one ``port`` run per patch ported or tried
(its inputs name the fleet run), all through :func:`portllm_edge.workflow.record.recorded`.
The fleet runs in the caller's process (one load for all patches), so no peak memory is
measured here; ``portllm-edge port`` measures one patch in a worker.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from portllm_edge.errors import ConfigError, PortllmError, StoreError
from portllm_edge.workflow.types import EvalSpec, EvalSummary

if TYPE_CHECKING:
    from portllm_edge.models.refs import ResolvedBase
    from portllm_edge.patches.manifest import PatchManifest
    from portllm_edge.porting.attach import PatchSwapper
    from portllm_edge.porting.load import LoadedBase

FLEET_EVAL_LIMIT = 64
"""Examples in each patch's quick evaluation (a seeded subsample), unless the caller says otherwise."""

FleetResult = Literal["ported", "already ported", "skipped", "failed"]
"""``ported`` now; ``already ported`` by an earlier run (resumed); ``skipped``: refused before
any load (preflight, name taken); ``failed``: after the load (attach check, evaluation, save)."""


@dataclass(frozen=True)
class FleetRequest:
    """What a fleet port was asked to do (the fleet run record's inputs). See :func:`port_fleet`."""

    old: str
    base: str
    precision: str = "nf4"
    force: bool = False
    overwrite: bool = False
    evaluate: bool = True
    eval_limit: int | None = FLEET_EVAL_LIMIT
    device: str | None = None


@dataclass(frozen=True)
class FleetItem:
    """One patch of the fleet: the table's row.

    Attributes:
        patch: the source patch's store name.
        result: see :data:`FleetResult`.
        seconds: wall time of this patch (check, attach, evaluate, save; the base load is
            counted once, in :attr:`FleetOutcome.load_seconds`), seconds.
        ported_name: the stored port (new, or found by a rerun).
        accuracy_before: the patch's accuracy on OLD, on the same task and data, from the run
            history (a port or eval run), or None when none was recorded.
        accuracy_after: the ported patch's accuracy on NEW (this run's quick evaluation), or None.
        eval_task / eval_n: the task evaluated and how many examples were scored.
        reason: why it was skipped or failed, or why it was not evaluated.
        run_id: this patch's ``port`` run record.
    """

    patch: str
    result: FleetResult
    seconds: float = 0.0
    ported_name: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    eval_task: str | None = None
    eval_n: int | None = None
    reason: str | None = None
    run_id: str | None = None


@dataclass
class FleetOutcome:
    """What a fleet port did.

    Attributes:
        old_id / old_fingerprint: OLD, the base the patches were matched on.
        base_id / base_fingerprint: NEW.
        precision / compute_dtype / device: how NEW was loaded (None when nothing needed a load).
        load_seconds: wall time of the one load of NEW, seconds (None without a load).
        seconds: wall time of the whole fleet, seconds.
        items: one row per matched patch, in store-name order.
        no_fingerprint: stored patches left out because they record no base fingerprint
            (they can't be matched safely).
        run_id: the fleet run record's id.
    """

    old_id: str
    old_fingerprint: str
    base_id: str
    base_fingerprint: str
    precision: str | None = None
    compute_dtype: str | None = None
    device: str | None = None
    load_seconds: float | None = None
    seconds: float = 0.0
    items: list[FleetItem] = field(default_factory=list)
    no_fingerprint: list[str] = field(default_factory=list)
    run_id: str | None = None

    def counts(self) -> dict[str, int]:
        """How many patches ended in each :data:`FleetResult`."""
        keys: tuple[FleetResult, ...] = ("ported", "already ported", "skipped", "failed")
        return {k: sum(i.result == k for i in self.items) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fleet run's record (and ``port --all --json``)."""
        d = asdict(self)
        d["counts"] = self.counts()
        return d


def patch_base_fingerprint(manifest: PatchManifest) -> str | None:
    """The weight fingerprint of the base a stored patch's adapter belongs to, or None.

    ``source_base.fingerprint`` (the base it was trained on, or last ported onto); else the
    newest lineage entry that records one.
    """
    if manifest.source_base.fingerprint:
        return manifest.source_base.fingerprint
    for entry in reversed(manifest.lineage):
        if entry.base_fingerprint:
            return entry.base_fingerprint
    return None


def fleet_members(
    old_fingerprint: str, manifests: list[PatchManifest]
) -> tuple[list[PatchManifest], list[str]]:
    """The patches whose base is ``old_fingerprint``, and the names of those that record no fingerprint.

    Matching is by fingerprint only: a recorded path may since hold other weights.
    """
    matched, unknown = [], []
    for m in manifests:
        fp = patch_base_fingerprint(m)
        if fp is None:
            unknown.append(m.name)
        elif fp == old_fingerprint:
            matched.append(m)
    return sorted(matched, key=lambda m: m.name), sorted(unknown)


def find_port(parent: PatchManifest, base_fingerprint: str, manifests: list[PatchManifest]) -> str | None:
    """The store name of a port of ``parent``'s current files onto ``base_fingerprint``, or None.

    A port counts when its newest lineage entry is a ``port`` onto that fingerprint from
    ``parent.name`` with the parent's :func:`~portllm_edge.patches.manifest.files_checksum`.
    """
    from portllm_edge.patches.manifest import files_checksum

    checksum = files_checksum(parent.files)
    for m in manifests:
        last = m.lineage[-1] if m.lineage else None
        if (
            last is not None
            and last.kind == "port"
            and last.base_fingerprint == base_fingerprint
            and last.parent == parent.name
            and last.parent_checksum == checksum
        ):
            return m.name
    return None


def _records_of(manifest: PatchManifest) -> list[dict[str, Any]]:
    """Inputs of the runs named in the patch's lineage, newest first (missing runs left out)."""
    from portllm_edge.history import get_run

    out = []
    for entry in reversed(manifest.lineage):
        if entry.run_id:
            try:
                run = get_run(entry.run_id)
            except (StoreError, ConfigError):
                continue
            out.append({**run.inputs, "kind": run.kind})
    return out


def recorded_eval_spec(manifest: PatchManifest, limit: int | None) -> tuple[EvalSpec | None, str | None]:
    """The quick evaluation a patch's records allow: its task and the data its runs used, if still there.

    The task is the manifest's (else the newest run's); the data, template and label words
    come from the newest train, port or eval run in its lineage that names data.

    Returns:
        ``(spec, None)``, or ``(None, reason)`` when there is nothing to evaluate on.
    """
    from portllm_edge.workflow.checks import check_eval_spec

    task = manifest.task
    for rec in _records_of(manifest):
        source = rec.get("evaluate") if rec["kind"] == "port" else rec
        if not isinstance(source, dict) or not source.get("data"):
            continue
        task = task or source.get("task")
        if not task:
            return None, "no task recorded"
        data = Path(str(source["data"]))
        if not data.exists():
            return None, f"no evaluation: its data {data} is gone"
        spec = EvalSpec(
            str(task),
            data,
            limit=limit,
            template=source.get("template"),
            verbalizers=source.get("verbalizers"),
        )
        try:
            check_eval_spec(spec)
        except PortllmError as exc:
            return None, f"no evaluation: {exc.message}"
        return spec, None
    return None, "no task recorded" if not task else "no evaluation data recorded"


def _same_file(a: object, b: Path) -> bool:
    try:
        pa, pb = Path(str(a)).resolve(), b.resolve()
    except (OSError, ValueError):
        return False
    return pa == pb or pa in pb.parents or pb in pa.parents


def recorded_accuracy(patch: str, spec: EvalSpec, old: ResolvedBase, old_fingerprint: str) -> float | None:
    """The newest recorded accuracy of ``patch`` on OLD, on ``spec``'s task and data, or None.

    Looks at ``port`` runs that stored ``patch`` on OLD's fingerprint with an evaluation, and
    ``eval`` runs of ``patch`` on OLD (by its id).
    """
    from portllm_edge.history import list_runs

    for run in list_runs(limit=1000):
        if run.status != "ok":
            continue
        if run.kind == "port":
            r, ev = run.results, run.results.get("evaluation") or {}
            spec_in = run.inputs.get("evaluate") or {}
            if (
                r.get("ported_name") == patch
                and r.get("base_fingerprint") == old_fingerprint
                and ev.get("task") == spec.task
                and _same_file(spec_in.get("data"), spec.data)
            ):
                return float(ev["accuracy"])
        elif run.kind == "eval":
            i = run.inputs
            if (
                i.get("patch") == patch
                and i.get("task") == spec.task
                and i.get("base_id") == old.model_id
                and _same_file(i.get("data"), spec.data)
                and run.results.get("accuracy") is not None
            ):
                return float(run.results["accuracy"])
    return None


def lineage_base(patch: str) -> str:
    """OLD for "all patches of this lineage": a local base with the weight fingerprint ``patch`` records.

    The model store is searched by fingerprint; else the recorded base id, when it is a local
    folder that still holds those weights.

    Returns:
        The base's folder, for :func:`port_fleet`'s ``old``.

    Raises:
        StoreError: an unknown patch, one that records no base fingerprint, or whose base is
            not here (with the import command that fixes it).
    """
    from portllm_edge.errors import BaseModelError
    from portllm_edge.models.refs import find_store_base, resolve_base
    from portllm_edge.patches import PatchStore

    manifest = PatchStore().get(patch).manifest
    fingerprint = patch_base_fingerprint(manifest)
    if fingerprint is None:
        raise StoreError(
            f"patch {patch!r} records no base fingerprint, so its lineage can't be matched.",
            hint=f"re-import it with `portllm-edge patch import DIR --name {patch} --base-id OLD --force`",
        )
    found = find_store_base(None, fingerprint)
    if found is not None:
        return str(found[0].path)
    recorded = manifest.source_base.id
    if recorded and Path(recorded).expanduser().is_dir():
        try:
            local = resolve_base(recorded)
            if local.fingerprint() == fingerprint:
                return str(local.path)
        except BaseModelError:
            pass
    raise StoreError(
        f"the base of patch {patch!r} ({recorded or 'unnamed'}, fingerprint {fingerprint}) is not here.",
        hint="import it with `portllm-edge models import DIR` (or `models import-gguf FILE`)",
    )


ItemFn = Callable[[FleetItem], None]
"""on_item(item): called as each patch's row is final."""
StartFn = Callable[[int, int, str], None]
"""on_patch(index, total, name): called as each patch starts (index from 1)."""


class _OneLoad:
    """NEW, loaded on the first patch that needs it, and the patch swapper on it."""

    def __init__(self, base: ResolvedBase, precision: str, device: str | None) -> None:
        self.base, self.precision, self.device = base, precision, device
        self.loaded: LoadedBase | None = None
        self.swapper: PatchSwapper | None = None
        self.seconds: float | None = None

    def get(self) -> tuple[LoadedBase, PatchSwapper]:
        if self.loaded is None or self.swapper is None:
            from portllm_edge.porting.attach import PatchSwapper
            from portllm_edge.porting.load import load_base_model

            start = time.perf_counter()
            # no CPU repacking of 4-bit weights: patches are swapped on them (see PatchSwapper)
            self.loaded = load_base_model(self.base, self.precision, device=self.device)
            self.swapper = PatchSwapper(self.loaded.model, self.loaded.tokenizer)
            self.seconds = time.perf_counter() - start
        return self.loaded, self.swapper


def _port_member(
    req_fleet: FleetRequest,
    m: PatchManifest,
    new: ResolvedBase,
    old: ResolvedBase,
    old_fingerprint: str,
    base: _OneLoad,
    fleet_run: str,
) -> FleetItem:
    """One patch: check -> attach (swap) -> evaluate -> save -> record, like :func:`~portllm_edge.workflow.port`."""
    from portllm_edge.workflow.jobs import PortJobResult
    from portllm_edge.workflow.port import PortRequest, port_outcome, prepare_port, save_and_merge
    from portllm_edge.workflow.record import recorded
    from portllm_edge.workflow.resolve import resolve_patch_ref
    from portllm_edge.workflow.steps import Phases
    from portllm_edge.workflow.types import Resolved

    start = time.perf_counter()
    spec, no_eval = (
        recorded_eval_spec(m, req_fleet.eval_limit) if req_fleet.evaluate else (None, "evaluation off")
    )
    before = recorded_accuracy(m.name, spec, old, old_fingerprint) if spec else None
    req = PortRequest(
        m.name, req_fleet.base, req_fleet.precision, force=req_fleet.force, overwrite=req_fleet.overwrite,
        old=req_fleet.old, evaluate=spec, device=req_fleet.device,
    )  # fmt: skip
    phases = Phases(None)
    run_id = None
    try:
        with (
            recorded("port", {**asdict(req), "fleet_run": fleet_run}) as run,
            tempfile.TemporaryDirectory(prefix="portllm-fleet-") as tmp,
        ):
            run_id = run.id
            resolved = Resolved(resolve_patch_ref(m.name), new, old, "given")
            with phases("check"):
                prep = prepare_port(req, resolved, Path(tmp))
            run.results = {"preflight": prep.checked.preflight.to_dict(), "ported_name": prep.ported_name}
            loaded, swapper = base.get()
            with phases("attach"):
                ported = swapper.attach(prep.checked.attach_dir)
            evaluation = None
            if spec is not None:
                from portllm_edge.evaluation.scoring import evaluate
                from portllm_edge.workflow.checks import check_eval_spec

                with phases("evaluate"):
                    data = check_eval_spec(spec)
                    res = evaluate(ported.model, loaded.tokenizer, data, batch_size=spec.batch_size)
                evaluation = EvalSummary.of(res)
            measured = PortJobResult(
                loaded.precision,
                loaded.compute_dtype,
                loaded.device,
                dict(loaded.quantization),
                ported.report,
                evaluation,
            )
            save_and_merge(req, prep, measured, phases, run.id)
            outcome = port_outcome(req, prep, measured, phases, run.id)
            run.results = outcome.to_dict()
    except PortllmError as exc:
        return FleetItem(
            m.name,
            "skipped" if "check" not in phases.times else "failed",
            time.perf_counter() - start,
            accuracy_before=before,
            reason=exc.one_line(),
            run_id=run_id,
        )
    return FleetItem(
        m.name,
        "ported",
        time.perf_counter() - start,
        ported_name=outcome.ported_name,
        accuracy_before=before,
        accuracy_after=evaluation.accuracy if evaluation else None,
        eval_task=evaluation.task if evaluation else None,
        eval_n=evaluation.n if evaluation else None,
        reason=no_eval,
        run_id=run_id,
    )


def port_fleet(
    old: str,
    base: str,
    *,
    precision: str = "nf4",
    force: bool = False,
    overwrite: bool = False,
    evaluate: bool = True,
    eval_limit: int | None = FLEET_EVAL_LIMIT,
    device: str | None = None,
    on_patch: StartFn | None = None,
    on_item: ItemFn | None = None,
) -> FleetOutcome:
    """Port every stored patch whose base is ``old`` onto ``base``, loading ``base`` once.

    Args:
        old: OLD: folder, store name, .gguf or cached hub id; its weight fingerprint selects the patches.
        base: NEW, the updated base (same forms).
        precision: auto, nf4, int8, bf16 or fp32, for the one load of NEW.
        force: port a patch despite failed preflight checks.
        overwrite: replace a stored patch that holds a port's default name (``<patch>@<new id>``)
            but is not a port of that patch's current files onto NEW.
        evaluate: run each patch's quick evaluation where its records name a task and data.
        eval_limit: examples per quick evaluation (a seeded subsample), or all with None.
        device: "cpu" or "cuda" (default: CUDA when available).
        on_patch: called as each patch starts; an exception it raises (e.g.
            :class:`portllm_edge.history.RunCancelled`) stops the fleet, recorded as interrupted.
        on_item: called with each patch's final row.

    Returns:
        A :class:`FleetOutcome`, also recorded as a ``fleet`` run.

    Raises:
        BaseModelError: OLD or NEW can't be resolved. ConfigError: OLD and NEW have the same
        weights, or an unknown precision. StoreError: no stored patch has OLD as its base.
        A patch's own errors are not raised: its row says why it was skipped or failed.
    """
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.patches import PatchStore
    from portllm_edge.workflow.checks import check_precision
    from portllm_edge.workflow.record import recorded
    from portllm_edge.workflow.resolve import distinct_weights

    req = FleetRequest(old, base, precision, force, overwrite, evaluate, eval_limit, device)
    start = time.perf_counter()
    with recorded("fleet", req) as run:
        old_b, new_b = resolve_base(old), resolve_base(base)
        old_fp, new_fp = distinct_weights(old_b, new_b, old_flag="--from")
        check_precision(precision, device)
        manifests = PatchStore().list()
        members, unknown = fleet_members(old_fp, manifests)
        if not members:
            raise StoreError(
                f"no stored patch has {old_b.model_id} (fingerprint {old_fp}) as its base.",
                hint="`portllm-edge patch list` shows each patch's base; a patch imported without its base "
                "records no fingerprint: re-import it with `portllm-edge patch import DIR --base-id OLD --force`",
            )
        outcome = FleetOutcome(old_b.model_id, old_fp, new_b.model_id, new_fp, no_fingerprint=unknown)
        outcome.run_id = run.id
        one_load = _OneLoad(new_b, precision, device)
        for index, m in enumerate(members, start=1):
            if on_patch is not None:
                on_patch(index, len(members), m.name)
            done = find_port(m, new_fp, manifests)
            if done is not None:
                item = FleetItem(m.name, "already ported", 0.0, ported_name=done, reason="found in the store")
            else:
                item = _port_member(req, m, new_b, old_b, old_fp, one_load, run.id)
            outcome.items.append(item)
            if one_load.loaded is not None:
                outcome.precision = one_load.loaded.precision
                outcome.compute_dtype = one_load.loaded.compute_dtype
                outcome.device = one_load.loaded.device
                outcome.load_seconds = one_load.seconds
            outcome.seconds = time.perf_counter() - start
            run.results = outcome.to_dict()
            if on_item is not None:
                on_item(item)
    return outcome
