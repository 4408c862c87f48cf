"""CLI command: ``demo``, the embedded default (SmolLM2-135M v1 -> v2, train, port, compare, measure)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from portllm_edge.cli._ui import console, human_bytes, out, step_progress
from portllm_edge.cli.app import app


@app.command("demo")
def demo_cmd(
    gguf: Annotated[
        Path, typer.Option("--gguf", help="SmolLM2-135M-Instruct GGUF file (`make smollm2` fetches it).")
    ],
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Recompute cached evaluations and measurements.")
    ] = False,
) -> None:
    """Run the whole PortLLM path on SmolLM2-135M-Instruct and print the table and the memory ratio."""
    from portllm_edge.demo import run_demo

    res = run_demo(gguf, say=lambda line: console.print(line), progress_factory=step_progress, fresh=fresh)
    print_experiment(res)


def print_experiment(res: Any) -> None:
    """The experiment's update, table, measured memory and port, as text."""
    up = res.update
    out.print(
        f"\nv2 = v1 + {up.steps} steps of continued pretraining: held-out perplexity "
        f"{up.perplexity_before:.2f} -> {up.perplexity_after:.2f}, mean linear-weight drift {up.mean_linear_drift:.3%}"
    )
    table = Table(title=f"PortLLM on SmolLM2-135M — {res.title} (all rows at {res.precision})")
    table.add_column("configuration", no_wrap=True)
    for col in ("accuracy", "95% CI", "n"):
        table.add_column(col, justify="right")
    for r in res.compare.rows:
        table.add_row(r.config, f"{r.accuracy:.3f}", f"{r.ci_low:.3f}–{r.ci_high:.3f}", str(r.n))
    out.print(table)
    gain = res.compare.recovered_gain()
    if gain is not None:
        out.print(f"the ported patch recovers {gain:.0%} of the patch's gain over v2 zero-shot")
    from portllm_edge.measure.memory import HEADLINE_LABEL, HEADLINE_METRIC
    from portllm_edge.reports import job_label

    label = f"; {HEADLINE_LABEL}" if res.bench.ratio_metric == HEADLINE_METRIC else ""
    ft, pt = res.bench.config("lora_"), res.bench.config("port_")
    out.print(
        f"peak memory, each job in its own worker process ({res.bench.ratio_metric}{label}):\n"
        f"  {job_label(ft.name)} of v2: {human_bytes(ft.peak_median_bytes)} ({ft.wall_median_seconds:.1f} s)\n"
        f"  {job_label(pt.name, evaluated=True)} (load + attach + score a batch): {human_bytes(pt.peak_median_bytes)} "
        f"({pt.wall_median_seconds:.1f} s)\n"
        f"  fine-tune / port = {res.bench.ratio:.2f}x (run {res.bench.run_id})"
    )
    port = res.port
    out.print(
        f"ported patch stored as {port.ported_name} ({port.attach.matched_tensors}/{port.attach.total_tensors} "
        f"tensors matched, run {port.run_id})"
    )
    if port.memory is not None and port.saving is not None:
        sv = port.saving
        out.print(
            f"  this port's peak, measured in its worker: {human_bytes(port.memory.peak_bytes)}; "
            f"{sv.ratio:.2f}x less than the fine-tune ({sv.baseline_source}: {sv.baseline_label})"
        )
