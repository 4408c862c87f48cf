"""CLI commands: ``portllm-edge runs list|show`` (run history) and ``portllm-edge report``.

Thin: read the history (:mod:`portllm_edge.history`), build a report
(:mod:`portllm_edge.reports`), print or write it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from portllm_edge.cli._options import dest_option
from portllm_edge.cli._ui import list_console, list_table
from portllm_edge.cli.app import app
from portllm_edge.errors import PortllmError

runs_app = typer.Typer(
    name="runs",
    help="List and show recorded runs (train, port, eval, compare, bench).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(runs_app, name="runs")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


@runs_app.command("list")
def list_cmd(
    kind: Annotated[
        Optional[str],
        typer.Option(
            "--kind",
            help="Only runs of this kind: train, port, eval, compare, bench, update, fleet, forecast.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list of run records).")] = False,
) -> None:
    """List recorded runs, newest first."""
    from portllm_edge import paths
    from portllm_edge.history import list_runs
    from portllm_edge.reports import describe_run

    runs = list_runs(kind=kind, limit=limit)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    if not runs:
        typer.echo(f"no runs recorded in {paths.runs_db()}" + (f" of kind {kind}" if kind else ""))
        return
    from rich.table import Table

    # One line per run: the id whole (it names the kind and start; `runs show` takes it), the
    # summary cut to the width left (whole in `runs show`).
    rows = [
        (r.id, r.status, r.started_at[5:16].replace("T", " "), _duration(r.seconds), describe_run(r.kind, r.inputs, r.results))
        for r in runs
    ]  # fmt: skip
    console = list_console()

    def table(summary_width: int | None) -> Table:
        t = list_table(f"Runs in {paths.runs_db()}")
        for head in ("id", "status", "started UTC", "took"):
            t.add_column(head, no_wrap=True, justify="right" if head == "took" else "left")
        t.add_column("summary", no_wrap=True, overflow="ellipsis", width=summary_width)
        for row in rows:
            t.add_row(*row[:4], row[4] if summary_width else "")
        return t

    # The summary gets what the other columns leave of the width (at least its heading).
    rest = console.measure(table(None)).maximum - len("summary")
    console.print(table(max(console.width - rest, len("summary"))))
    console.print("full records: portllm-edge runs show ID (or its last 8 characters)")


@runs_app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id, a unique prefix of it, or its 8-hex suffix.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """Show one run: inputs, results, versions and hardware."""
    from portllm_edge.history import get_run
    from portllm_edge.reports import describe_run

    run = get_run(run_id)
    if as_json:
        typer.echo(json.dumps(run.to_dict(), indent=2))
        return
    typer.echo(f"run {run.id}  ({run.kind}, {run.status})")
    typer.echo(f"started  {run.started_at}")
    typer.echo(f"finished {run.finished_at or '-'}  ({_duration(run.seconds)})")
    summary = describe_run(run.kind, run.inputs, run.results)
    if summary:
        typer.echo(f"summary  {summary}")
    for title, data in (("inputs", run.inputs), ("results", run.results), ("versions", run.versions)):
        typer.echo(f"\n{title}:")
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    hw = run.hardware
    gpus = hw.get("gpus") if isinstance(hw, dict) else None
    typer.echo("\nhardware:")
    if isinstance(gpus, list):
        names = ", ".join(str(g.get("name")) for g in gpus if isinstance(g, dict)) or "no GPU"
        host = hw.get("host") or {}
        ram = host.get("total_bytes") if isinstance(host, dict) else None
        from portllm_edge.hardware.sizes import format_size

        typer.echo(f"  GPUs: {names}; host RAM: {format_size(ram)}  (full record: --json)")
    else:
        typer.echo(json.dumps(hw, indent=2, sort_keys=True))


@app.command("report")
def report_cmd(
    run_ids: Annotated[
        Optional[list[str]],
        typer.Argument(help="Runs to include (default: the latest compare/eval/bench/port/train runs)."),
    ] = None,
    out: Annotated[
        Path,
        dest_option("--out", help="Folder for report.md, report.json and the PNG charts."),
    ] = Path("report"),
    last: Annotated[int, typer.Option("--last", help="Without RUN_IDs: include this many recent runs.")] = 20,
    budget_model: Annotated[
        Optional[str],
        typer.Option("--budget-model", help="Model for the memory-budget section (default: the runs' base)."),
    ] = None,
    hardware: Annotated[
        Optional[list[str]],
        typer.Option("--hardware", help="Hardware profiles for the budget (default: all)."),
    ] = None,
    budget: Annotated[
        bool, typer.Option("--budget/--no-budget", help="Include the memory-budget section.")
    ] = True,
    context: Annotated[
        int, typer.Option("--context", help="Tokens per sequence for budget estimates.")
    ] = 2048,
    title: Annotated[str, typer.Option("--title", help="Report heading.")] = "portllm-edge report",
) -> None:
    """Write a report (Markdown, JSON, PNG charts) from recorded runs."""
    from portllm_edge import paths
    from portllm_edge.errors import ConfigError
    from portllm_edge.history import get_run, list_runs
    from portllm_edge.reports import REPORT_KINDS, report_runs, select_report_runs

    for flag, value in (("--last", last), ("--context", context)):
        if value < 1:
            raise ConfigError(f"`{flag}` must be at least 1, got {value}.", hint=f"pass {flag} 1 or more")
    if hardware:
        from portllm_edge.catalog import load_catalog

        catalog = load_catalog()
        for name in hardware:
            catalog.hardware_profile(name)  # unknown name: ConfigError with a did-you-mean hint
    left_out: list[str] = []
    if run_ids:
        runs = [get_run(r) for r in run_ids]
    else:
        runs, left_out = select_report_runs(list_runs(limit=last))
        if not runs:
            raise ConfigError(
                f"no {'/'.join(REPORT_KINDS)} runs in the run history {paths.runs_db()}; nothing to report",
                hint="run `portllm-edge eval`, `port`, `compare`, `bench` or `train` first (or pass RUN_IDs)",
            )
    machine = None
    if budget and not hardware:
        try:
            from portllm_edge.planning import memory_budget

            machine = memory_budget(None)  # this machine's row in the budget section (probe, no torch)
        except PortllmError as exc:
            print(f"warning: no row for this machine in the budget ({exc.message})", file=sys.stderr)
    written = report_runs(
        runs,
        out,
        budget=budget,
        budget_model=budget_model,
        hardware=hardware,
        machine=machine,
        context=context,
        title=title,
        left_out=left_out,
    )
    for line in left_out:
        typer.echo(f"note: {line}")
    for warning in written.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    paths_written = written.paths
    typer.echo(f"report of {len(runs)} runs written to {out}:")
    for p in paths_written:
        typer.echo(f"  {p.name}")
