"""CLI command: ``portllm-edge eval`` — accuracy of a base (optionally + patch) on one task.

Thin: read the task file (fails fast, before any model loads), load the base at the
chosen precision, attach the patch, score, print, and record the run in the history.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from portllm_edge.cli.app import app
from portllm_edge.errors import ConfigError


def _resolve_patch_dir(patch: str) -> tuple[Path, str]:
    """A patch given as a store name or as an adapter folder -> (adapter folder, display name)."""
    candidate = Path(patch).expanduser()
    if candidate.is_dir() and (candidate / "adapter_config.json").is_file():
        return candidate.resolve(), candidate.name
    from portllm_edge.patches import PatchStore

    stored = PatchStore().get(patch)
    return stored.adapter_dir, stored.name


def hardware_record() -> dict[str, Any]:
    """The hardware probe as a dict for run records; host facts only if the probe fails."""
    try:
        from portllm_edge.hardware.probe import probe

        return probe().to_dict()
    except Exception:  # a record must never fail the run it describes
        from portllm_edge.history import collect_host

        return collect_host()


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
    device_map: Annotated[
        Optional[str],
        typer.Option(
            "--device-map", help="auto: layers that do not fit --max-memory go to CPU RAM, then disk."
        ),
    ] = None,
    max_memory: Annotated[
        Optional[str],
        typer.Option(
            "--max-memory",
            help="Budget for --device-map auto (e.g. 2GiB, or 0=20GiB,cpu=64GiB); needs --precision bf16/fp16/fp32.",
        ),
    ] = None,
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
    template: Annotated[
        Optional[str],
        typer.Option("--template", help="jsonl task: prompt template, e.g. '{text}\\nAnswer:'."),
    ] = None,
    verbalizer: Annotated[
        Optional[list[str]],
        typer.Option("--verbalizer", help="jsonl task: LABEL=WORD, once per class, in class order."),
    ] = None,
    predictions: Annotated[
        Optional[Path], typer.Option("--predictions", help="Also write per-example predictions (JSON) here.")
    ] = None,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Store the run in the history.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a base model, optionally with a patch attached, on one task."""
    from portllm_edge.porting.offload import offload_request

    offload = offload_request(device_map, max_memory)  # a bad --max-memory fails before any work
    from portllm_edge.evaluation.tasks import LoadOptions, load_task, parse_verbalizers
    from portllm_edge.history import record_run
    from portllm_edge.history.store import utc_now

    started_at = utc_now()

    from portllm_edge.evaluation.scoring import NORMALIZATIONS

    if normalize not in NORMALIZATIONS:
        raise ConfigError(
            f"`--normalize` must be one of {', '.join(NORMALIZATIONS)}, got `{normalize}`",
            hint="Use --normalize none (the harness's acc, default) or chars (its acc_norm).",
        )
    if predictions is not None and (predictions.is_dir() or predictions.parent.is_file()):
        raise ConfigError(
            f"--predictions {predictions}: is a folder"
            if predictions.is_dir()
            else f"--predictions {predictions}: its parent {predictions.parent} is a file, not a folder",
            hint="pass a file path for the predictions, e.g. --predictions predictions.json",
        )
    options = LoadOptions(
        template=template, verbalizers=parse_verbalizers(verbalizer) if verbalizer else None
    )
    task_data = load_task(
        task,
        data,
        limit=limit,
        seed=seed,
        options=options,
        num_fewshot=num_fewshot,
        fewshot_data=fewshot_data,
    )
    print(
        f"{task_data.task.title}: {len(task_data)} of {task_data.total} examples from {task_data.path}",
        file=sys.stderr,
    )

    from portllm_edge.evaluation.scoring import evaluate

    loaded = _load_model(base, precision, offload)
    model, patch_name, attach = loaded.model, None, None
    if patch is not None:
        from portllm_edge.porting.attach import attach_patch

        adapter_dir, patch_name = _resolve_patch_dir(patch)
        ported = attach_patch(loaded.model, loaded.tokenizer, adapter_dir)
        model, attach = ported.model, ported.report
    with _Progress(f"scoring {task_data.task.name}") as progress:
        result = evaluate(
            model,
            loaded.tokenizer,
            task_data,
            batch_size=batch_size,
            normalization=normalize,  # type: ignore[arg-type]
            max_new_tokens=max_new_tokens,
            keep_predictions=predictions is not None,
            progress=progress,
        )
    summary = result.to_dict()
    summary.pop("predictions", None)
    inputs = {
        "task": task_data.task.name,
        "data": str(task_data.path),
        "limit": limit,
        "seed": seed,
        "total_examples": task_data.total,
        "base": base,
        "base_id": getattr(getattr(loaded, "base", None), "model_id", base),
        "patch": patch_name,
        "precision": loaded.precision,
        "device": loaded.device,
        "template": template,
        "verbalizers": options.verbalizers,
        "num_fewshot": task_data.num_fewshot,
    }
    results = {**summary, "load_seconds": loaded.load_seconds}
    if attach is not None:
        results["attach"] = {
            "matched_tensors": attach.matched_tensors,
            "total_tensors": attach.total_tensors,
            "relative_logit_change": attach.relative_logit_change,
        }
    run_id = (
        record_run("eval", inputs, results, hardware=hardware_record(), started_at=started_at)
        if record
        else None
    )
    if predictions is not None:
        from portllm_edge.fsutil import atomic_write_json

        atomic_write_json(predictions, result.to_dict()["predictions"])
    if as_json:
        typer.echo(
            json.dumps({"run_id": run_id, "inputs": inputs, "results": results}, indent=2, default=str)
        )
        return
    config = f"{inputs['base_id']}" + (f" + {patch_name}" if patch_name else "") + f" ({loaded.precision})"
    typer.echo(f"{config}")
    typer.echo(result.summary())
    speed = f"{result.tokens_per_s:,.0f} tokens/s" if result.tokens_per_s else "n/a"
    typer.echo(f"scored in {result.seconds:.1f} s ({speed}); model loaded in {loaded.load_seconds:.1f} s")
    if run_id is not None:
        typer.echo(f"recorded as run {run_id} (portllm-edge runs show {run_id})")


def _load_model(base: str, precision: str, offload: Any = None) -> Any:
    """Load the base through :func:`portllm_edge.porting.load.load_base_model` (offloaded when asked)."""
    from portllm_edge.porting.load import load_base_model

    if offload is not None:
        return load_base_model(base, precision, offload=offload)
    return load_base_model(base, precision)
