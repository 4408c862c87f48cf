"""CLI commands: ``compare`` (the PortLLM table for one task) and ``bench`` (memory: fine-tune vs port)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from portllm_edge.cli._options import Template, Verbalizers, verbalizer_map
from portllm_edge.cli._ui import console, human_bytes, out
from portllm_edge.cli.app import app


@app.command("compare")
def compare_cmd(
    patch: Annotated[str, typer.Argument(help="The patch trained on the old base (store name or folder).")],
    old: Annotated[str, typer.Option("--old", help="The old base.")],
    new: Annotated[
        str,
        typer.Option(
            "--new", "--base", help="The updated base (--base, as check, port and forecast spell it)."
        ),
    ],
    task: Annotated[str, typer.Option("--task", help="Task name.")],
    data: Annotated[Path, typer.Option("--data", help="Evaluation file (or folder).")],
    limit: Annotated[Optional[int], typer.Option("--limit", help="Seeded subsample of N examples.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Subsample seed.")] = 0,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="Load precision of every row: auto (the planner's choice for the new base, as for port), "
            "nf4, int8, bf16 or fp32.",
        ),
    ] = "auto",
    baseline: Annotated[
        Optional[str],
        typer.Option("--baseline", help="A patch LoRA-trained on the new base (the fourth row)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Scoring batch size.")] = 8,
    template: Template = None,
    verbalizers: Verbalizers = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The PortLLM table for one task: new zero-shot, old + patch, new + ported patch, new + own LoRA."""
    from portllm_edge.workflow import EvalSpec, compare

    spec = EvalSpec(task, data, limit, seed, template, verbalizer_map(verbalizers), batch_size)
    res = compare(
        patch,
        old=old,
        new=new,
        spec=spec,
        precision=precision,
        baseline=baseline,
        on_row=None if as_json else (lambda r: console.print(f"[cyan]›[/cyan] {r}")),
    )
    if as_json:
        out.print_json(json.dumps(res.to_dict()))
        return
    used = res.rows[0].precision if res.rows else precision
    asked = f" (--precision {precision})" if used != precision else ""
    t = Table(title=f"PortLLM comparison — {res.task} ({res.data}), all rows at {used}{asked}")
    for col in ("configuration", "base", "patch", "accuracy", "95% CI", "F1", "n"):
        t.add_column(col, justify="right" if col in ("accuracy", "95% CI", "F1", "n") else "left")
    for r in res.rows:
        t.add_row(
            r.config,
            r.base_id,
            r.patch or "-",
            f"{r.accuracy:.3f}",
            f"{r.ci_low:.3f}–{r.ci_high:.3f}",
            "-" if r.f1 is None else f"{r.f1:.3f}",
            str(r.n),
        )
    out.print(t)
    gain = res.recovered_gain()
    if gain is not None:
        out.print(f"recovered gain of the patch on the new base: {gain:.1%}")
    stats = res.paired()
    for line in stats.lines() if stats is not None else ():
        out.print(f"paired: {line}")
    out.print(f"run {res.run_id}")


@app.command("bench")
def bench_cmd(
    patch: Annotated[str, typer.Argument(help="The patch to port (store name or folder).")],
    base: Annotated[str, typer.Option("--base", help="The base to fine-tune and to port onto.")],
    task: Annotated[str, typer.Option("--task", help="Task name.")],
    train_data: Annotated[Path, typer.Option("--train-data", help="Training file for the fine-tune.")],
    eval_data: Annotated[Path, typer.Option("--eval-data", help="Evaluation file for the port.")],
    precision: Annotated[str, typer.Option("--precision", help="Port precision.")] = "nf4",
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per example.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per step/batch.")] = 8,
    steps: Annotated[int, typer.Option("--steps", help="Fine-tune optimizer steps.")] = 4,
    repeats: Annotated[int, typer.Option("--repeats", help="Measurements per configuration.")] = 1,
    qlora: Annotated[bool, typer.Option("--qlora", help="Also measure QLoRA (NF4 + LoRA).")] = False,
    template: Template = None,
    verbalizers: Verbalizers = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Peak memory and time of LoRA fine-tuning vs porting, each in its own worker process; prints the ratio.

    The fine-tune has the patch's own LoRA shape (r, lora_alpha, target modules); the patch is
    preflighted (and rewritten when needed) as for ``port``.
    """
    from portllm_edge.workflow import bench

    res = bench(
        patch,
        base,
        task=task,
        train_data=train_data,
        eval_data=eval_data,
        precision=precision,
        seq_len=seq_len,
        batch_size=batch_size,
        steps=steps,
        repeats=repeats,
        qlora=qlora,
        template=template,
        verbalizers=verbalizer_map(verbalizers),
        on_config=None if as_json else (lambda n, i: console.print(f"[cyan]›[/cyan] {n} (run {i + 1})")),
    )
    if as_json:
        out.print_json(json.dumps(res.to_dict()))
        return
    t = Table(title=f"bench — {res.base}, {task}, seq {seq_len}, batch {batch_size}")
    for col in ("configuration", "peak (median)", "spread", "wall (s)", "tokens/s"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    from portllm_edge.reports import job_label

    for c in res.configs:
        t.add_row(
            job_label(c.name, evaluated=c.name.startswith("port_")),
            human_bytes(c.peak_median_bytes),
            human_bytes(c.peak_spread_bytes),
            f"{c.wall_median_seconds:.1f}",
            "-" if c.tokens_per_s is None else f"{c.tokens_per_s:.0f}",
        )
    out.print(t)
    out.print(f"LoRA fine-tune / port = {res.ratio:.2f}x ({res.ratio_metric}); run {res.run_id}")
