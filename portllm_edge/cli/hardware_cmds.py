"""CLI commands: ``probe``, ``plan``, ``pick`` and ``profiles list``.

Thin: each command calls :mod:`portllm_edge.hardware` / :mod:`portllm_edge.planning`
and formats the typed result (plain text or ``--json``). Nothing here imports
torch unless ``probe --torch`` asks for it, so these commands start in about a second.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from portllm_edge.cli.app import app
from portllm_edge.hardware.sizes import format_size

profiles_app = typer.Typer(help="Model lineages and hardware profiles.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command("probe")
def probe_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (bytes as integers).")] = False,
    with_torch: Annotated[
        bool, typer.Option("--torch", help="Also ask torch about CUDA/ROCm/MPS (slower).")
    ] = False,
) -> None:
    """Show GPUs (NVML, MIG), host RAM within the cgroup limit and free disk at the model store."""
    from portllm_edge.hardware import probe

    rep = probe(with_torch=with_torch)
    if as_json:
        _json(rep.to_dict())
        return
    nvml = rep.nvml_status if rep.nvml_status.startswith("NVML") else f"NVML: {rep.nvml_status}"
    typer.echo(
        f"{nvml}; driver {rep.driver_version or 'n/a'}; CUDA (driver) {rep.cuda_driver_version or 'n/a'}"
    )
    typer.echo(
        f"CUDA_VISIBLE_DEVICES: {rep.cuda_visible_devices if rep.cuda_visible_devices is not None else '(unset)'}"
    )
    if rep.gpus:
        rows = [
            [
                g.label,
                "n/a" if g.torch_index is None else f"cuda:{g.torch_index}",
                g.total_human(),
                g.free_human(),
                g.used_human(),
                f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "n/a",
                "unified" if g.unified_memory else ("MIG" if g.is_mig else "dedicated"),
                g.uuid or "n/a",
            ]
            for g in rep.gpus
        ]
        typer.echo(_table(["device", "torch", "total", "free", "used", "cc", "memory", "uuid"], rows))
    else:
        typer.echo("GPUs: none found")
    h = rep.host
    typer.echo(
        f"Host RAM: {h.total_human()} usable total, {h.available_human()} available "
        f"(physical {format_size(h.physical_total_bytes)}, cgroup limit {h.limit_human()})"
    )
    d = rep.disk
    typer.echo(f"Disk at {d.path}: {d.free_human()} free of {d.total_human()}")
    from portllm_edge.hardware.compute import gpu_bandwidth_bytes_per_s, measure_cpu_bandwidth

    typer.echo(f"Host memory bandwidth (measured copy): {measure_cpu_bandwidth() / 1e9:.1f} GB/s")
    for g in rep.gpus:
        bw = gpu_bandwidth_bytes_per_s(g.nvml_index)
        typer.echo(f"{g.label} memory bandwidth (NVML): {'n/a' if bw is None else f'{bw / 1e9:.0f} GB/s'}")
    if rep.torch is not None:
        t = rep.torch
        typer.echo(
            f"torch {t.torch_version}: CUDA {'yes' if t.cuda_available else 'no'} ({t.cuda_version or 'n/a'}), "
            f"ROCm {t.rocm_version or 'n/a'}, MPS {'yes' if t.mps_available else 'no'}"
        )
        for name, total, free in t.devices:
            typer.echo(f"  {name}: {format_size(total)} total, {format_size(free)} free")
    for note in rep.notes:
        typer.echo(f"note: {note}")


def _breakdown_rows(options: Any) -> list[list[str]]:
    rows = []
    for o in options:
        b = o.breakdown
        rows.append(
            [
                o.label,
                format_size(b.term("weights")),
                format_size(b.term("quant_constants")),
                format_size(b.term("unquantized")),
                format_size(b.term("kv_cache")),
                format_size(b.term("lora_params") + b.term("lora_grads") + b.term("optimizer")),
                format_size(b.term("activations") + b.term("allocator")),
                format_size(b.term("runtime") + b.term("libraries")),
                b.total_human(),
                "fits" if o.fits else "does not fit",
                format_size(o.spare_bytes),
            ]
        )
    return rows


_HEADERS = [
    "precision",
    "weights",
    "q-consts",
    "unquant.",
    "KV cache",
    "LoRA+Adam",
    "activ.",
    "runtime",
    "total",
    "verdict",
    "spare",
]


@app.command("plan")
def plan_cmd(
    model: Annotated[
        str,
        typer.Argument(help="Profile name (Mistral-7B-v0.3), a folder with config.json, or a store name."),
    ],
    hardware: Annotated[
        Optional[str], typer.Option("--hardware", help="Plan for a hardware profile instead of this machine.")
    ] = None,
    context: Annotated[
        int, typer.Option("--context", min=1, help="Tokens per sequence (prompt + output).")
    ] = 2048,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Sequences per batch.")] = 1,
    headroom: Annotated[float, typer.Option("--headroom", help="Fraction of memory kept free.")] = 0.10,
    lora_r: Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank for the fine-tuning rows.")] = 16,
    seq_len: Annotated[int, typer.Option("--seq-len", min=1, help="Fine-tuning sequence length.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Estimate peak memory at every precision (and for LoRA/QLoRA) and say what fits."""
    from portllm_edge.planning import plan_model

    plan = plan_model(
        model,
        hardware_profile=hardware,
        headroom_fraction=headroom,
        context=context,
        batch=batch,
        lora_r=lora_r,
        train_seq_len=seq_len,
    )
    if as_json:
        _json(
            {
                "model": {
                    "name": plan.model.name,
                    "kind": plan.model.kind,
                    "family": plan.model.family,
                    "params": plan.model.params,
                },
                "budget": {**plan.budget.__dict__, "usable_bytes": plan.budget.usable_bytes},
                "inference": [
                    {**o.breakdown.to_dict(), "fits": o.fits, "spare_bytes": o.spare_bytes, "label": o.label}
                    for o in plan.inference
                ],
                "finetune": [
                    {**o.breakdown.to_dict(), "fits": o.fits, "spare_bytes": o.spare_bytes, "label": o.label}
                    for o in plan.finetune
                ],
                "best": plan.best.value if plan.best else None,
                "best_reason": plan.reason,
            }
        )
        return
    a = plan.model.arch
    typer.echo(
        f"Model: {plan.model.name} ({plan.model.kind}, {plan.model.params:,} params; L={a.num_layers} H={a.hidden_size} "
        f"heads={a.num_heads}/{a.num_kv_heads} kv hd={a.head_dim} I={a.intermediate_size} V={a.vocab_size}"
        f"{' tied' if a.tie_word_embeddings else ''})"
    )
    typer.echo(f"Budget: {plan.budget.describe()}")
    typer.echo(f"\nInference, {context} tokens × batch {batch}:")
    typer.echo(_table(_HEADERS, _breakdown_rows(plan.inference)))
    ft = plan.finetune[0].breakdown
    typer.echo(f"\nFine-tuning, LoRA r={lora_r} on q_proj,v_proj, {ft.context} tokens × batch {ft.batch}:")
    typer.echo(_table(["mode", *_HEADERS[1:]], _breakdown_rows(plan.finetune)))
    if plan.best is not None:
        best = plan.option(plan.best)
        typer.echo(
            f"\nPrecision for a port: {plan.best.value} ({best.breakdown.total_human()} inference, "
            f"{format_size(best.spare_bytes)} spare). Why: {plan.reason}"
        )
    else:
        cheapest = min(plan.inference, key=lambda o: o.breakdown.total_bytes)
    for note in dict.fromkeys(n for o in (*plan.inference, *plan.finetune) for n in o.breakdown.notes):
        typer.echo(f"note: {note}")
    if plan.best is None:
        from portllm_edge.errors import PlanningError

        raise PlanningError(
            f"{plan.model.name} does not fit at any precision: the smallest, {cheapest.label}, needs "
            f"{cheapest.breakdown.total_human()} of {plan.budget.usable_human()} usable.",
            hint="try a shorter --context, a smaller model, or `portllm-edge pick`",
        )


@app.command("pick")
def pick_cmd(
    family: Annotated[
        Optional[str],
        typer.Option("--family", help="Only this family (mistral, llama, qwen2, gemma2, smollm2)."),
    ] = None,
    hardware: Annotated[
        Optional[str], typer.Option("--hardware", help="Rank for a hardware profile instead of this machine.")
    ] = None,
    context: Annotated[int, typer.Option("--context", min=1, help="Tokens per sequence.")] = 2048,
    headroom: Annotated[float, typer.Option("--headroom", help="Fraction of memory kept free.")] = 0.10,
    all_precisions: Annotated[
        bool, typer.Option("--all", help="Show every fitting precision, not only each model's best.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rank (base model, precision) pairs that fit, best first, with the reason and the port cost."""
    from portllm_edge.workflow.queries import memory_budget, pick_models, rank_models

    budget = memory_budget(hardware, headroom, measure_bandwidth=True)
    if all_precisions:
        choices = pick_models(family=family, budget=budget, context=context, all_precisions=True)
    else:  # the one ranking, as the app's Models screen shows it
        ranked = rank_models(budget, context=context, family=family, include_unfit=False)
        choices = [m.choice for m in ranked]
    if as_json:
        _json(
            {
                "budget": {**budget.__dict__, "usable_bytes": budget.usable_bytes},
                "choices": [
                    {
                        "rank": c.rank,
                        "model": c.name,
                        "source": c.model.kind,
                        "family": c.model.family,
                        "params": c.model.params,
                        "precision": c.precision.value,
                        "inference_bytes": c.inference.total_bytes,
                        "port_peak_bytes": c.port_peak_bytes,
                        "spare_bytes": c.spare_bytes,
                        "fits": c.fits,
                        "decode_tokens_per_s_max": c.tokens_per_s,
                        "reason": c.reason,
                    }
                    for c in choices
                ],
            }
        )
        return
    bandwidth = budget.bandwidth_bytes_per_s
    typer.echo(
        f"Budget: {budget.describe()}; context {context}; memory bandwidth "
        + (f"{bandwidth / 1e9:.1f} GB/s" if bandwidth else "n/a")
    )
    if not choices:
        from portllm_edge.errors import PlanningError

        raise PlanningError(
            f"nothing fits this budget ({budget.describe()}; context {context}).",
            hint="try a shorter --context, less --headroom, or another --hardware profile",
        )
    rows = [
        [
            str(c.rank),
            c.name,
            c.model.kind,
            c.precision.value,
            c.inference.total_human(),
            c.port_human(),
            format_size(c.spare_bytes),
            "n/a" if c.tokens_per_s is None else f"{c.tokens_per_s:.1f}",
        ]
        for c in choices
    ]
    headers = ["#", "model", "source", "precision", "inference", "port", "spare", "≤ tok/s"]
    typer.echo(_table(headers, rows))
    typer.echo(
        "Rank: fits first; then ≥ 5 tokens/s (bandwidth ÷ bytes read per token, an upper bound); "
        "then larger models; then higher-quality precision."
    )
    typer.echo("")
    for c in choices:
        typer.echo(f"{c.rank}. {c.name} @ {c.precision.value}: {c.reason}")


@profiles_app.command("list")
def profiles_list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List model versions and hardware profiles (built-in and your own)."""
    from portllm_edge import paths
    from portllm_edge.catalog import load_catalog

    cat = load_catalog()
    if as_json:
        _json(
            {
                "models": [
                    {"family": f.family, "name": v.name, "hf_id": v.hf_id, "parameters": v.parameters}
                    for f, v in cat.versions()
                ],
                "hardware": [
                    {
                        "name": h.name,
                        "kind": h.kind,
                        "memory_bytes": h.memory_bytes,
                        "reserved_bytes": h.reserved_bytes,
                    }
                    for h in cat.hardware.values()
                ],
            }
        )
        return
    typer.echo(
        _table(
            ["family", "model", "params", "hub id"],
            [[f.family, v.name, f"{v.parameters:,}", v.hf_id or ""] for f, v in cat.versions()],
        )
    )
    typer.echo("")
    typer.echo(
        _table(
            ["hardware", "kind", "memory", "reserved", "name"],
            [
                [h.name, h.kind, h.memory_human(), format_size(h.reserved_bytes), h.display_name]
                for h in sorted(cat.hardware.values(), key=lambda h: h.name)
            ],
        )
    )
    typer.echo(
        f"\nYour own profiles: {paths.user_profiles_dir()}/models/*.toml and {paths.user_profiles_dir()}/hardware/*.toml"
    )
