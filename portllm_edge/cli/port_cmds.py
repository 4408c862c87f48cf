"""CLI commands: ``train``, ``simulate-update`` and ``port`` (the main job)."""

from __future__ import annotations

import json
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
from portllm_edge.cli._ui import console, human_bytes, out, phase_printer, step_progress
from portllm_edge.cli.app import app
from portllm_edge.errors import ConfigError


def _split_modules(value: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in value.split(",") if m.strip())
    if not mods:
        raise ConfigError(
            "`--target-modules` is empty.", hint="e.g. --target-modules q_proj,k_proj,v_proj,o_proj"
        )
    return mods


@app.command("train")
def train_cmd(
    base: Annotated[
        str, typer.Option("--base", help="Base model: folder, store name, .gguf file or cached hub id.")
    ],
    task: Annotated[
        str, typer.Option("--task", help="Task name: sst2, boolq, mrpc, rte, wnli, winogrande, gsm8k, jsonl.")
    ],
    data: Annotated[Path, typer.Option("--data", help="The task's training file (or its folder).")],
    name: Annotated[str, typer.Option("--name", help="Store name of the new patch.")],
    r: Annotated[int, typer.Option("--r", help="LoRA rank r.")] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha; ΔW = (alpha/r)·B·A.")] = 16,
    target_modules: Annotated[
        str, typer.Option("--target-modules", help="Comma-separated module names.")
    ] = "q_proj,k_proj,v_proj,o_proj",
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the data.")] = 1.0,
    max_steps: Annotated[
        Optional[int], typer.Option("--max-steps", help="Stop after this many steps.")
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per step.")] = 8,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per example.")] = 256,
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Train on a seeded subsample of N examples.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    precision: Annotated[str, typer.Option("--precision", help="fp32/bf16 (LoRA) or nf4 (QLoRA).")] = "fp32",
    template: Template = None,
    verbalizers: Verbalizers = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing patch of that name.")] = False,
) -> None:
    """LoRA fine-tune a base on a task's local data and store the result as a patch."""
    from portllm_edge.training.lora import LoraHyperparams
    from portllm_edge.workflow import TrainSpec, train
    from portllm_edge.workflow.train import no_gain_hint

    hp = LoraHyperparams(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=_split_modules(target_modules),
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
    )
    with step_progress(f"training {name}") as update:
        spec = TrainSpec(
            base, task, data, name, hp=hp, limit=limit, precision=precision, template=template,
            verbalizers=verbalizer_map(verbalizers),
        )  # fmt: skip
        res = train(spec, force=force, progress=update)
    out.print(
        f"stored patch {res.name}: {res.steps} steps on {res.examples} examples, final loss {res.final_loss:.4f}, "
        f"{res.seconds:.1f} s (base {res.base_id}, fingerprint {res.base_fingerprint}, run {res.run_id})"
    )
    if res.heldout_before is not None and res.heldout_after is not None:
        b, a = res.heldout_before, res.heldout_after
        out.print(
            f"held-out check ({a.n} training examples not trained on): accuracy {b.accuracy:.3f} -> "
            f"{a.accuracy:.3f} (gain {res.heldout_gain:+.3f})"
        )
    else:
        out.print("held-out check: skipped (fewer than 10 examples)")
    hint = no_gain_hint(res)
    if hint:
        console.print(f"[yellow]warning:[/yellow] {hint}")


@app.command("simulate-update")
def simulate_update_cmd(
    ctx: typer.Context,
    base: Annotated[str, typer.Argument(help="Base model to update (folder, store name, .gguf).")],
    corpus: Annotated[list[Path], typer.Option("--corpus", help="Plain-text file or folder (repeatable).")],
    out_dir: Annotated[Path, dest_option("--out", help="Folder for the updated base.")],
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 50,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per block.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Blocks per step.")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 2e-5,
    seed: Annotated[int, typer.Option("--seed", help="Shuffle seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the drift record as JSON.")] = False,
    chain: Annotated[
        Optional[str],
        typer.Option(
            "--chain",
            help="Successive updates v2..vK as STEPS:LR,STEPS:LR,... (one per new version, each trained "
            "from the previous one) into --out/v2 ... --out/vK; not with --steps/--lr (each item gives both).",
        ),
    ] = None,
) -> None:
    """Make an updated base by full-parameter continued pretraining on plain text; report weight drift."""
    from portllm_edge.workflow.train import UpdateRequest, update

    if chain is not None:
        _refuse_steps_lr_with_chain(ctx, steps, lr)
        _simulate_chain(base, corpus, out_dir, chain, seq_len, batch_size, seed, force, as_json)
        return
    req = UpdateRequest(
        base, [str(c) for c in corpus], str(out_dir), steps, seq_len, batch_size, lr, seed, force
    )
    with step_progress("continued pretraining") as progress:
        res = update(req, progress=progress)
    if as_json:
        out.print_json(json.dumps(res.to_dict()))
        return
    out.print(f"updated base written to {res.out_dir} in {res.seconds:.1f} s")
    out.print(f"held-out perplexity {res.perplexity_before:.2f} -> {res.perplexity_after:.2f}")
    out.print(f"mean relative drift of linear weights ‖W_new−W_old‖/‖W_old‖ = {res.mean_linear_drift:.4%}")
    top = sorted(res.drift.items(), key=lambda kv: kv[1], reverse=True)[:5]
    for k, v in top:
        out.print(f"  {k:<50} {v:.4%}")


def _refuse_steps_lr_with_chain(ctx: typer.Context, steps: int, lr: float) -> None:
    """``--steps``/``--lr`` given with ``--chain`` would be unused (each chain item has its own)."""
    # By name: typer vendors its own click, whose ParameterSource is not click.core's.
    given = [
        name
        for name, param in (("--steps", "steps"), ("--lr", "lr"))
        if getattr(ctx.get_parameter_source(param), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
    ]
    if given:
        shown = " and ".join(f"`{g}`" for g in given)
        raise ConfigError(
            f"{shown} can't be combined with `--chain`: each chain item sets its own steps and learning "
            "rate as STEPS:LR.",
            hint=f"drop {' and '.join(given)}; give each chain item its steps and learning rate, e.g. --chain {steps}:{lr:g}",
        )


def parse_chain(spec: str) -> list[tuple[int, float]]:
    """``"10:2e-5,20:5e-5"`` -> ``[(10, 2e-5), (20, 5e-5)]``.

    Raises:
        ConfigError: an item is empty (``"2:1e-4,,"``) or not ``STEPS:LR`` with an integer and a number.
    """
    stages = []
    for i, item in enumerate((x.strip() for x in spec.split(",")), start=1):
        if not item:
            raise ConfigError(
                f"`--chain` {spec!r}: item {i} is empty.",
                hint="give one STEPS:LR per new version, comma-separated, e.g. --chain 10:2e-5,20:5e-5,40:1e-4",
            )
        steps, _, lr = item.partition(":")
        try:
            stages.append((int(steps), float(lr)))
        except ValueError:
            raise ConfigError(
                f"`--chain` item {item!r} is not STEPS:LR.", hint="e.g. --chain 10:2e-5,20:5e-5,40:1e-4"
            ) from None
    return stages


def _simulate_chain(
    base: str, corpus: list[Path], out_dir: Path, chain: str, seq_len: int, batch_size: int, seed: int,
    force: bool, as_json: bool,
) -> None:  # fmt: skip
    from dataclasses import asdict

    from portllm_edge.workflow.train import UpdateChainRequest, update_chain

    req = UpdateChainRequest(
        base, [str(c) for c in corpus], str(out_dir), parse_chain(chain), seq_len, batch_size, seed, force
    )
    with step_progress("continued pretraining") as progress:
        lineage = update_chain(req, progress=progress)
    if as_json:
        out.print_json(json.dumps([asdict(v) for v in lineage]))
        return
    out.print(f"lineage of {len(lineage)} versions under {out_dir} (v1 = {lineage[0].path})")
    for v in lineage[1:]:
        out.print(
            f"  {v.version}: {v.steps} steps at lr {v.learning_rate:g}, mean relative drift of linear "
            f"weights from the previous version {v.mean_linear_drift or 0.0:.4%}  ({v.path})"
        )


@app.command("port")
def port_cmd(
    patch: Annotated[
        Optional[str], typer.Argument(help="A stored patch name or a LoRA adapter folder (not with --all).")
    ] = None,
    base: Annotated[
        str, typer.Option("--base", help="The updated base: folder, store name, .gguf or cached hub id.")
    ] = "",
    all_patches: Annotated[
        bool,
        typer.Option(
            "--all", help="Port every stored patch whose base is --from (matched by weight fingerprint)."
        ),
    ] = False,
    from_base: Annotated[
        Optional[str], typer.Option("--from", help="With --all: the base the patches belong to.")
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            "--precision", help="auto (the planner's choice, as `plan` shows), nf4, int8, bf16, fp16 or fp32."
        ),
    ] = "auto",
    name: Annotated[Optional[str], typer.Option("--name", help="Store name of the ported patch.")] = None,
    old: OldOpt = None,
    old_base: OldBaseAlias = None,
    merge_to: Annotated[
        Optional[Path],
        dest_option(
            "--merge-to",
            help="Also write W_new + ΔW here (streamed): a folder, or a .gguf file for llama.cpp/Ollama "
            "(base imported from GGUF).",
        ),
    ] = None,
    merge_dtype: Annotated[
        str,
        typer.Option(
            "--merge-dtype",
            help="auto (the base's dtype), bf16, fp16 or fp32; for a .gguf: auto (f16), f16, bf16 or q8_0.",
        ),
    ] = "auto",
    device_map: DeviceMap = None,
    max_memory: MaxMemory = None,
    eval_task: Annotated[Optional[str], typer.Option("--eval-task", help="Quick evaluation task.")] = None,
    eval_data: Annotated[Optional[Path], typer.Option("--eval-data", help="Evaluation file.")] = None,
    eval_limit: Annotated[
        Optional[int], typer.Option("--eval-limit", help="Evaluate a seeded subsample.")
    ] = None,
    template: Template = None,
    verbalizers: Verbalizers = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Don't store the ported patch.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Port despite failed preflight checks.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an existing ported patch of that name (and --merge-to)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record as JSON.")] = False,
) -> None:
    """Port a patch onto an updated base: check everything, then load, attach, verify, evaluate, save.

    Load, attach and evaluation run in a worker process of their own, whose peak memory is reported.
    With --all --from OLD: port every stored patch of OLD, loading the new base once; a rerun
    continues where a killed one stopped.
    """
    from portllm_edge.workflow import EvalSpec, port
    from portllm_edge.workflow.checks import check_eval_pair

    if not base:
        raise ConfigError("`--base` is required.", hint="pass the updated base: --base NEW")
    if eval_limit is not None and eval_limit < 1:
        _check_eval_options(eval_task, eval_limit, template, verbalizers)
    if all_patches or from_base is not None:
        given = {
            "PATCH": patch is not None,
            "--name": name is not None,
            "--old": old is not None,
            "--merge-to": merge_to is not None,
            "--eval-task": eval_task is not None,
            "--eval-data": eval_data is not None,
            "--template": template is not None,
            "--verbalizer": bool(verbalizers),
            "--no-save": no_save,
            "--device-map": device_map is not None,
            "--max-memory": max_memory is not None,
        }
        _port_all(
            all_patches, from_base, base, [k for k, v in given.items() if v],
            precision=precision, force=force, overwrite=overwrite, eval_limit=eval_limit, as_json=as_json,
        )  # fmt: skip
        return
    if patch is None:
        raise ConfigError(
            "no patch given.", hint="pass a patch name, or --all --from OLD for every patch of OLD"
        )
    check_eval_pair(eval_task, eval_data)
    _check_eval_options(eval_task, eval_limit, template, verbalizers)
    old = old or old_base
    spec = None
    if eval_task is not None and eval_data is not None:
        spec = EvalSpec(
            eval_task, eval_data, limit=eval_limit, template=template, verbalizers=verbalizer_map(verbalizers)
        )
    from portllm_edge.porting.offload import offload_request

    res = port(
        patch,
        base,
        offload=offload_request(device_map, max_memory),
        precision=precision,
        name=name,
        save=not no_save,
        force=force,
        overwrite=overwrite,
        old=old,
        merge_to=merge_to,
        merge_dtype=merge_dtype,
        evaluate=spec,
        on_phase=None if as_json else phase_printer(),
    )
    if as_json:
        out.print_json(json.dumps(res.to_dict(), default=str))
        return
    print_port(res)


def _check_eval_options(
    task: Optional[str], limit: Optional[int], template: Optional[str], verbalizers: Optional[list[str]]
) -> None:
    """Refuse evaluation options that would be ignored or mean nothing, before any work.

    Raises:
        ConfigError: ``--eval-limit`` below 1, or ``--eval-limit``/``--template``/``--verbalizer``
            without ``--eval-task``.
    """
    if limit is not None and limit < 1:
        raise ConfigError(
            f"`--eval-limit {limit}` evaluates no example.",
            hint="pass --eval-limit 1 or more, or leave it out to evaluate every example",
        )
    given = [
        flag
        for flag, value in (("--eval-limit", limit), ("--template", template), ("--verbalizer", verbalizers))
        if value
    ]
    if task is None and given:
        raise ConfigError(
            " and ".join(f"`{g}`" for g in given)
            + (" sets" if len(given) == 1 else " set")
            + " up an evaluation, but no `--eval-task` was given.",
            hint="add --eval-task TASK --eval-data FILE, or drop " + " and ".join(given),
        )


def print_port(res: Any) -> None:
    """The port's outcome as text lines."""
    counts = {s: sum(c.status == s for c in res.preflight.checks) for s in ("pass", "warn", "fail")}
    out.print(f"preflight: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
    if res.old_base_id:
        out.print(f"  old base: {res.old_base_id}")
    for c in res.preflight.checks:
        if c.status != "pass":
            out.print(f"  {c.status:<4} {c.name}: {c.reason}")
    a = res.attach
    out.print(
        f"attached {a.matched_tensors}/{a.total_tensors} patch tensors at {res.precision}; "
        f"max |Δlogit| vs bare base {a.max_abs_logit_change:.4g}; finite: {a.finite}"
    )
    if res.evaluation:
        e = res.evaluation
        out.print(f"{e.task}: accuracy {e.accuracy:.3f} (95% CI {e.ci_low:.3f}-{e.ci_high:.3f}, n={e.n})")
    out.print("phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in res.phases.items()))
    if res.memory is not None:
        from portllm_edge.workflow.queries import job_label

        m = res.memory
        what = job_label("port", res.precision, evaluated=res.evaluation is not None)
        out.print(f"peak memory of {what}, in a worker process: {human_bytes(m.peak_bytes)} ({m.metric})")
    if res.saving is not None:
        s = res.saving
        ratio = f"{s.ratio:.2f}x" if s.ratio else "n/a"
        out.print(
            f"LoRA fine-tune baseline {human_bytes(s.baseline_bytes)} ({s.baseline_source}: {s.baseline_label}); "
            f"port needs {ratio} less"
        )
    if res.ported_name:
        out.print(f"stored ported patch {res.ported_name} (run {res.run_id})")
    if res.merged_to:
        out.print(f"merged model written to {res.merged_to}")


def _port_all(
    all_patches: bool,
    from_base: Optional[str],
    base: str,
    refused: list[str],
    *,
    precision: str,
    force: bool,
    overwrite: bool,
    eval_limit: Optional[int],
    as_json: bool,
) -> None:
    """``port --all --from OLD --base NEW``: the fleet port, then its table."""
    from portllm_edge.workflow.fleet import FLEET_EVAL_LIMIT, port_fleet

    if not all_patches or from_base is None:
        raise ConfigError(
            "`--all` and `--from` go together.",
            hint="port every patch of a base with --all --from OLD --base NEW",
        )
    if refused:
        raise ConfigError(
            f"`--all` ports every patch of --from; it does not take {', '.join(refused)}.",
            hint="each patch is evaluated on the task and data its records name; "
            "port one patch with `portllm-edge port PATCH --base NEW` for these options",
        )

    def started(index: int, total: int, name: str) -> None:
        if not as_json:
            console.print(f"[{index}/{total}] {name}")

    res = port_fleet(
        from_base,
        base,
        precision=precision,
        force=force,
        overwrite=overwrite,
        eval_limit=FLEET_EVAL_LIMIT if eval_limit is None else eval_limit,
        on_patch=started,
    )
    if as_json:
        out.print_json(json.dumps(res.to_dict(), default=str))
        return
    print_fleet(res)


def print_fleet(res: Any) -> None:
    """The fleet's one table (patch, result, accuracy before/after, seconds), then the notes."""

    def acc(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [
        [i.patch, i.result, acc(i.accuracy_before), acc(i.accuracy_after), f"{i.seconds:.1f}"]
        for i in res.items
    ]
    headers = ["patch", "result", "acc before", "acc after", "seconds"]
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(headers)]
    for cells in [headers, *rows]:
        out.print(
            "  ".join(
                c.ljust(w) if k < 2 else c.rjust(w)
                for k, (c, w) in enumerate(zip(cells, widths, strict=True))
            ),
            markup=False,
            highlight=False,
        )
    counts = ", ".join(f"{v} {k}" for k, v in res.counts().items() if v)
    load = (
        f"; {res.base_id} loaded once at {res.precision} in {res.load_seconds:.1f} s"
        if res.load_seconds
        else ""
    )
    out.print(f"{counts}: {res.old_id} -> {res.base_id} in {res.seconds:.1f} s{load} (run {res.run_id})")
    for i in res.items:
        if i.reason and i.result in ("skipped", "failed"):
            out.print(f"  {i.patch}: {i.reason}", markup=False, highlight=False)
        elif i.result == "ported" and i.accuracy_after is not None:
            out.print(f"  {i.patch} -> {i.ported_name}: {i.eval_task}, n={i.eval_n}", markup=False)
        elif i.ported_name:
            out.print(
                f"  {i.patch} -> {i.ported_name}" + (f" ({i.reason})" if i.reason else ""), markup=False
            )
    if res.no_fingerprint:
        out.print(
            f"  not matched (no base fingerprint recorded): {', '.join(res.no_fingerprint)}", markup=False
        )
