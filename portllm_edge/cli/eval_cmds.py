"""CLI command: ``portllm-edge eval`` — accuracy of a base (optionally + patch) on one task.

Thin: parse, call :func:`portllm_edge.workflow.evaluate` (file read and patch preflighted
before any load; the run recorded in the history), print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from portllm_edge.cli._options import (
    DeviceMap,
    MaxMemory,
    OldBaseAlias,
    OldOpt,
    Template,
    Verbalizers,
    dest_option,
    verbalizer_map,
)
from portllm_edge.cli.app import app
from portllm_edge.errors import ConfigError


class _Progress:
    """Progress on stderr (a rich bar on a terminal, a few plain lines otherwise)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last_pct = -1
        self.bar: Any = None
        self.task: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task(self.label, total=total)
            self.bar.update(self.task, completed=done)
            return
        pct = 100 * done // max(1, total)
        if pct >= self.last_pct + 25 or done == total:
            self.last_pct = pct
            print(f"{self.label}: {done}/{total}", file=sys.stderr, flush=True)


@app.command("eval")
def eval_cmd(
    task: Annotated[
        str, typer.Option("--task", help="boolq, sst2, mrpc, rte, wnli, winogrande, gsm8k or jsonl.")
    ],
    data: Annotated[
        Path, typer.Option("--data", help="The task file (dev.tsv, val.jsonl, ...) or its folder.")
    ],
    base: Annotated[
        str, typer.Option("--base", help="Base model: local folder, store name, cached hub id or GGUF.")
    ],
    patch: Annotated[
        Optional[str], typer.Option("--patch", help="Patch to attach: a store name or an adapter folder.")
    ] = None,
    precision: Annotated[str, typer.Option("--precision", help="auto, nf4, int8, bf16 or fp32.")] = "auto",
    device_map: DeviceMap = None,
    max_memory: MaxMemory = None,
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Score a seeded random subsample of N examples.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit subsample.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")] = 8,
    normalize: Annotated[
        str,
        typer.Option(
            "--normalize",
            help="Choice scores: none (summed log-prob, lm-eval acc), chars (acc_norm), bytes or tokens.",
        ),
    ] = "none",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="GSM8K generation budget.")] = 256,
    num_fewshot: Annotated[
        Optional[int],
        typer.Option(
            "--num-fewshot", help="GSM8K: solved examples before each question (default 5, as lm-eval)."
        ),
    ] = None,
    fewshot_data: Annotated[
        Optional[Path],
        typer.Option(
            "--fewshot-data", help="GSM8K: file of the few-shot examples (default train.jsonl beside --data)."
        ),
    ] = None,
    template: Template = None,
    verbalizer: Verbalizers = None,
    predictions: Annotated[
        Optional[Path],
        dest_option("--predictions", help="Also write per-example predictions (JSON) here."),
    ] = None,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Store the run in the history.")
    ] = True,
    old: OldOpt = None,
    old_base: OldBaseAlias = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --patch: attach despite failed preflight checks.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a base model, optionally with a patch attached, on one task.

    The task file is read and the patch preflighted (and rewritten when needed, as ``port`` does)
    before any model loads.
    """
    from portllm_edge.porting.offload import offload_request

    offload = offload_request(device_map, max_memory)  # a bad --max-memory fails before any work
    from portllm_edge.workflow import EvalSpec
    from portllm_edge.workflow import evaluate as run_eval

    if predictions is not None:
        from portllm_edge.fsutil import unwritable_reason

        reason = "is a folder" if predictions.is_dir() else unwritable_reason(predictions)
        if reason is not None:  # the stores and the run history are refused as every destination's
            raise ConfigError(
                f"--predictions {predictions}: {reason}",
                hint="pass a file path for the predictions, e.g. --predictions predictions.json",
            )
    spec = EvalSpec(
        task,
        data,
        limit=limit,
        seed=seed,
        template=template,
        verbalizers=verbalizer_map(verbalizer),
        batch_size=batch_size,
        num_fewshot=num_fewshot,
        fewshot_data=fewshot_data,
    )

    def said(task_data: Any) -> None:
        print(
            f"{task_data.task.title}: {len(task_data)} of {task_data.total} examples from {task_data.path}",
            file=sys.stderr,
        )

    with _Progress(f"scoring {task}") as progress:
        res = run_eval(
            base,
            spec,
            patch=patch,
            old=old or old_base,
            precision=precision,
            normalize=normalize,
            max_new_tokens=max_new_tokens,
            keep_predictions=predictions is not None,
            force=force,
            record=record,
            progress=progress,
            on_data=said,
            offload=offload,
        )
    if predictions is not None:
        from portllm_edge.fsutil import atomic_write_json

        atomic_write_json(predictions, res.result.to_dict()["predictions"])
    if as_json:
        typer.echo(
            json.dumps(
                {"run_id": res.run_id, "inputs": res.inputs(), "results": res.to_dict()},
                indent=2,
                default=str,
            )
        )
        return
    config = res.base_id + (f" + {res.patch}" if res.patch else "") + f" ({res.precision})"
    typer.echo(config)
    typer.echo(res.result.summary())
    speed = f"{res.result.tokens_per_s:,.0f} tokens/s" if res.result.tokens_per_s else "n/a"
    typer.echo(f"scored in {res.result.seconds:.1f} s ({speed}); model loaded in {res.load_seconds:.1f} s")
    if res.run_id is not None:
        typer.echo(f"recorded as run {res.run_id} (portllm-edge runs show {res.run_id})")
