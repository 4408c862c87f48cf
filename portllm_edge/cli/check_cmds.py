"""CLI commands: ``check`` (compatibility preflight + drift), ``drift`` and ``merge`` (exact streaming merge).

Thin: call :func:`portllm_edge.workflow.check` (resolve the patch, the new base and the
old base -- given with ``--old`` or found in the model store -- then preflight and drift),
:func:`portllm_edge.porting.drift.compute_drift` or
:func:`portllm_edge.porting.merge.stream_merge`, and print. A failed preflight
prints the full report, then exits 2 with the first failure and its fix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from portllm_edge.cli._options import OldBaseAlias, OldOpt, dest_option
from portllm_edge.cli.app import app
from portllm_edge.errors import CompatibilityError

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def _pct(x: float) -> str:
    return "inf" if math.isinf(x) else f"{100 * x:.2f}%"


def format_report(report: Any) -> str:
    """The preflight report as aligned text lines."""
    lines = [f"check: {report.adapter_dir}  →  {report.base_dir}"]
    if report.old_base_dir is not None:
        lines[0] += f"  (old base: {report.old_base_dir})"
    width = max(len(c.name) for c in report.checks)
    for c in report.checks:
        lines.append(f"  {_MARK[c.status]}  {c.name:<{width}}  {c.reason}")
        if c.status != "pass" and c.hint:
            lines.append(f"        {'':<{width}}  fix: {c.hint}")
    counts = {s: sum(c.status == s for c in report.checks) for s in ("pass", "warn", "fail")}
    verdict = "compatible" if report.ok else "NOT compatible"
    lines.append(f"result: {verdict} ({counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail)")
    return "\n".join(lines)


def _ratio(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def format_drift(drift: Any) -> str:
    """The drift report as an aligned text table with a median row."""
    header = ("module", "shape", "base drift", "patch size", "drift/patch", "projected/patch")
    rows = [
        (
            m.module,
            "x".join(str(s) for s in m.shape),
            _pct(m.base_drift),
            _pct(m.patch_size),
            _ratio(m.ratio),
            _ratio(m.projected_ratio),
        )
        for m in drift.modules
    ]
    rows.append(
        (
            "median",
            "",
            _pct(drift.median_base_drift),
            _pct(drift.median_patch_size),
            _ratio(drift.median_ratio),
            _ratio(drift.median_projected_ratio),
        )
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(f"{v:<{widths[i]}}" for i, v in enumerate(header)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(f"{v:<{widths[i]}}" for i, v in enumerate(r)).rstrip() for r in rows)
    out.extend(f"skipped {s}" for s in drift.skipped)
    out.append(
        "projected = the drift inside the patch's own row and column spaces, ‖U_Bᵀ(W_new−W_old)V_A‖; "
        "ratios are to the patch's ‖ΔW‖"
    )
    return "\n".join(out)


def _fail_report(report: Any) -> CompatibilityError:
    first = report.failures[0]
    more = f" (+{len(report.failures) - 1} more failed checks)" if len(report.failures) > 1 else ""
    return CompatibilityError(
        f"preflight failed: `{first.name}`: {first.reason}{more}",
        hint=first.hint or "see the report above",
    )


PatchArg = Annotated[
    str, typer.Argument(help="Patch: a store name or an adapter folder.", show_default=False)
]
BaseOpt = Annotated[
    str, typer.Option("--base", help="The new base: a model folder, store name or cached hub id.")
]


def _old_line(resolved: Any) -> str | None:
    """Where the old base came from, for the report's first lines (None when unknown)."""
    if resolved.old_base is None:
        return None
    how = {"given": "given with --old"}.get(
        resolved.old_base_source, f"found in the {resolved.old_base_source}"
    )
    return f"old base: {resolved.old_base.model_id} ({how})"


def format_forecast(res: Any) -> str:
    """The forecast line of ``check`` (where it came from), or why there is none and how to get it."""
    line = str(res.forecast_line())
    if res.forecast is None and res.can_compute_forecast:
        line += (
            "; add --forecast to compute and record it (forward passes over generic text, as "
            "`portllm-edge forecast` does)"
        )
    return line


@app.command("check")
def check_cmd(
    patch: PatchArg,
    base: BaseOpt,
    old: OldOpt = None,
    old_base: OldBaseAlias = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    drift: Annotated[
        bool,
        typer.Option(
            "--drift/--no-drift",
            help="With an old base: also measure weight drift (reads weights, streaming).",
        ),
    ] = True,
    compute_forecast: Annotated[
        bool,
        typer.Option(
            "--forecast",
            help="Compute the forecast of the recovered gain now (forward passes over generic text) and "
            "record it; without it, check shows the recorded one.",
        ),
    ] = False,
) -> None:
    """Preflight: does PATCH fit the base? Reads configs, tokenizers and safetensors headers only."""
    from portllm_edge.workflow import check

    res = check(patch, base, old=old or old_base, drift=drift, compute_forecast=compute_forecast)
    report, drift_report = res.preflight, res.drift
    if as_json:
        data = report.to_dict()
        data["drift"] = None if drift_report is None else drift_report.to_dict()
        data["forecast"] = None if res.forecast is None else res.forecast.to_dict()
        data["forecast_source"] = res.forecast_source
        data["forecast_run"] = res.forecast_run
        data["forecast_note"] = res.forecast_note
        data["old_base_source"] = res.resolved.old_base_source
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        line = _old_line(res.resolved)
        if line:
            typer.echo(line)
        typer.echo(format_report(report))
        if drift_report is not None:
            typer.echo("")
            typer.echo(format_drift(drift_report))
        typer.echo(format_forecast(res))
    if not report.ok:
        raise _fail_report(report)


@app.command("drift")
def drift_cmd(
    patch: PatchArg,
    base: BaseOpt,
    old: OldOpt = None,
    old_base: OldBaseAlias = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Per target module: how far the base moved (‖W_new−W_old‖/‖W_old‖) against the patch's size (‖ΔW‖/‖W_old‖)."""
    from portllm_edge.porting.drift import compute_drift
    from portllm_edge.workflow.resolve import resolve, unknown_old_base

    r = resolve(patch, base, old=old or old_base)  # validated: drift has no preflight to report a bad patch
    if r.old_base is None:
        raise unknown_old_base(r)
    report = compute_drift(r.patch.adapter_dir, r.old_base.path, r.base.path)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_drift(report))


@app.command("forecast")
def forecast_cmd(
    patch: PatchArg,
    base: BaseOpt,
    old: OldOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the forecast and its features as JSON.")
    ] = False,
) -> None:
    """Predict, without task data, the share of PATCH's gain that survives porting it onto --base."""
    from portllm_edge.workflow import forecast

    res = forecast(patch, base, old=old)
    if as_json:
        data = {
            "forecast": res.forecast.to_dict(),
            "features": res.features.to_dict(),
            "old_base": str(res.resolved.old_base.path) if res.resolved.old_base else None,
            "seconds": res.seconds,
            "run_id": res.run_id,
            "key": None if res.key is None else res.key.to_dict(),
        }
        typer.echo(json.dumps(data, indent=2))
        return
    line = _old_line(res.resolved)
    if line:
        typer.echo(line)
    typer.echo(res.forecast.summary())
    f = res.features
    typer.echo(
        f"features: median base drift {_pct(f.base_drift)}, patch size {_pct(f.patch_size)}, "
        f"drift/patch {f.drift_ratio:.3g}, projected drift/patch {f.projected_ratio:.3g}"
        + (f", effect cosine on generic text {f.effect_cosine:.3f}" if f.effect_cosine is not None else "")
        + f" ({res.seconds:.1f} s)"
    )
    typer.echo(
        f"recorded as run {res.run_id}: `check` shows it for this patch and these bases; "
        "what it rests on: docs/forecast.md"
    )


@app.command("merge")
def merge_cmd(
    patch: PatchArg,
    base: BaseOpt,
    out: Annotated[Path, dest_option("--out", help="Folder for the merged model (must not exist).")],
    dtype: Annotated[
        str, typer.Option("--dtype", help="auto (the base's own dtype), bf16, fp16 or fp32 (never 4-bit).")
    ] = "auto",
    old: OldOpt = None,
    old_base: OldBaseAlias = None,
    force: Annotated[
        bool, typer.Option("--force", help="Merge despite preflight failures that a merge can express.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write W_new + ΔW to --out, streaming one row block at a time (exact; the base's dtype by default)."""
    from portllm_edge.porting.merge import human_bytes, stream_merge
    from portllm_edge.porting.preflight import run_preflight
    from portllm_edge.workflow.resolve import resolve

    r = resolve(patch, base, old=old or old_base, validate=False)
    adapter_dir, base_dir = r.patch.adapter_dir, r.base.path
    old_dir = r.old_base.path if r.old_base is not None else None
    report = run_preflight(adapter_dir, base_dir, old_base_dir=old_dir)
    if not report.ok and not force:
        typer.echo(format_report(report), err=True)
        raise _fail_report(report)
    result = stream_merge(adapter_dir, base_dir, out, dtype=dtype, overwrite=overwrite, old_vocab_dir=old_dir)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(
        f"merged {result.merged_modules} LoRA modules into {result.out_dir} ({result.dtype}, "
        f"{result.tensors_written} tensors, {human_bytes(result.bytes_written)})"
    )
    if result.replaced_tensors:
        typer.echo(f"replaced by the patch's saved tensors: {', '.join(result.replaced_tensors)}")
    if result.rows_carried:
        typer.echo(f"vocabulary rows carried over from the patch: {result.rows_carried}")
    for note in result.notes:
        typer.echo(f"note: {note}")
