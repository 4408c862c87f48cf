"""CLI command: ``demo``, the embedded default (SmolLM2-135M v1 -> v2, train, port, compare, measure)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

    summary = run_demo(
        gguf, say=lambda line: console.print(line), progress_factory=step_progress, fresh=fresh
    )
    up = summary["update"]
    out.print(
        f"\nv2 = v1 + {up['steps']} steps of continued pretraining: held-out perplexity "
        f"{up['perplexity_before']:.2f} -> {up['perplexity_after']:.2f}, "
        f"mean linear-weight drift {up['mean_linear_drift']:.3%}"
    )
    table = Table(title=f"PortLLM on SmolLM2-135M — {summary['task']} (all rows at {summary['precision']})")
    table.add_column("configuration", no_wrap=True)
    table.add_column("accuracy", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("n", justify="right")
    for r in summary["rows"]:
        table.add_row(
            r["config"],
            f"{r['accuracy']:.3f}",
            f"{r['ci_low']:.3f}–{r['ci_high']:.3f}",
            str(r["n"]),
        )
    out.print(table)
    if summary.get("recovered_gain") is not None:
        out.print(
            f"the ported patch recovers {summary['recovered_gain']:.0%} of the patch's gain over v2 zero-shot"
        )
    mem = summary["memory"]
    p, f = mem["port"], mem["lora_finetune"]
    p_anon, f_anon = p["details"].get("peak_anon_rss_bytes"), f["details"].get("peak_anon_rss_bytes")
    out.print(
        f"peak memory ({summary['metric']}: whole process incl. Python, torch and mmap'd weight pages; "
        f"each job in its own subprocess):\n"
        f"  port ({p['details'].get('precision')} load + attach + evaluate a batch): {human_bytes(p['peak_bytes'])} "
        f"(anonymous {human_bytes(p_anon)}, steady {human_bytes(p['steady_bytes'])}, {p['wall_seconds']:.1f} s)\n"
        f"  LoRA fine-tune of v2 ({f['details'].get('dtype')}, {f['details'].get('steps')} steps): "
        f"{human_bytes(f['peak_bytes'])} (anonymous {human_bytes(f_anon)}, steady {human_bytes(f['steady_bytes'])}, "
        f"{f['wall_seconds']:.1f} s)\n"
        f"  fine-tune / port = {summary['ratio']:.2f}x peak RSS"
        + (f", {f_anon / p_anon:.2f}x anonymous" if p_anon and f_anon else "")
    )
    port = summary["port"]
    out.print(
        f"ported patch stored as {port['ported_name']} ({port['matched']} tensors matched, run {port['run_id']})"
    )
