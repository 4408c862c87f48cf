"""The product's memory and time as the model grows: synthetic bases with real shapes, one process per job.

Usage (run it under the shared CPU lock; see PROTOCOL.md):

    flock /tmp/portllm-heavy.lock .venv/bin/python benchmarks/scale.py --sizes 0.5b,1.1b
    .venv/bin/python benchmarks/scale.py --sizes 7b --jobs import,port,repeat_port,merge --work /tmp/scale7b

For each size (:data:`synthetic.SHAPES`): a bf16 safetensors base written layer by layer
and a Q8_0 GGUF of it; ``135m`` is the real SmolLM2-135M-Instruct, imported from its Q4_1
GGUF (:func:`real_inputs`). Then each job in its own Python process:

* ``baseline``: import torch, transformers, peft, bitsandbytes; nothing else (the runtime floor);
* ``import``: :func:`portllm_edge.models.gguf.import_gguf` of the GGUF (streaming);
* ``port``: ``load_base_model(nf4)`` (quantizing; the quantized copy is saved to the store) +
  attach a random r=16 q/v LoRA patch with peft + one evaluation batch (``--batch`` × ``--seq``);
* ``repeat_port``: the same, loading the quantized copy from the store;
* ``merge``: :func:`portllm_edge.porting.merge.stream_merge` of that patch into the base, bf16;
* ``finetune``: LoRA r=16 on q/v of the base at bf16 where the device computes in it, AdamW,
  ``--steps`` steps of ``--batch`` × ``--seq`` tokens; ``qlora``: the same on the NF4 base after
  peft's ``prepare_model_for_kbit_training``.

Memory: the parent samples the child (and its children) with the product's one rule,
:class:`portllm_edge.measure.memory.PeakSampler`: headline = peak of RssAnon + resident
pages of mapped weight files. A bf16 load computes from its mmapped safetensors pages,
so those count; a quantizing load reads its bf16 source with ``pread`` and frees it, so
that page cache is not the job's. The anonymous part's own peak and the mapped weights
at the peak are printed beside it. On ``--device cuda`` the child reports
``torch.cuda.max_memory_reserved()``. VmHWM is shown only in the JSON, labelled ``vmhwm_bytes``.

Floor of a job = runtime baseline (measured) + the bytes its weights must occupy at that
precision, each weight counted once wherever it lives (anonymous or mapped file pages) + trainable state + KV/activations for the stated batch (the planner's activation
term). For import and merge the column holds the issue's bound instead: baseline + 4 × the
largest tensor in fp32. "est ÷ meas" is the planner's estimate ÷ measured, both job-only
(runtime/baseline subtracted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import synthetic  # noqa: E402

from portllm_edge.measure.memory import HEADLINE_METRIC  # noqa: E402

R = 16
PORT_JOBS = ("port", "repeat_port", "port_nocache")
REAL = {"135m": "SmolLM2-135M (real)"}
"""Sizes measured on a real model (:func:`real_inputs`) rather than a synthetic base."""
TARGETS = ("q_proj", "v_proj")
MiB = 1024**2


# ----------------------------------------------------------------------------- child side


def _adapter(shape: synthetic.Shape, out: Path) -> Path:
    """A random LoRA patch (r=16 on q_proj/v_proj, B non-zero) written directly as peft's files."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    hd = shape.hidden // shape.heads
    outs = {"q_proj": shape.heads * hd, "v_proj": shape.kv_heads * hd}
    tensors = {}
    for i in range(shape.layers):
        for t in TARGETS:
            key = f"base_model.model.model.layers.{i}.self_attn.{t}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(R, shape.hidden, generator=gen) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(outs[t], R, generator=gen) * 0.01
    save_file(tensors, str(out / "adapter_model.safetensors"))
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": R,
        "lora_alpha": 2 * R,
        "lora_dropout": 0.0,
        "target_modules": list(TARGETS),
        "bias": "none",
        "base_model_name_or_path": "synthetic",
        "fan_in_fan_out": False,
    }
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def _tokens(batch: int, seq: int) -> Any:
    import torch

    return torch.randint(4, 260, (batch, seq), generator=torch.Generator().manual_seed(0))


def _cuda_peak(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return int(torch.cuda.max_memory_reserved())


def run_job(job: str, p: dict[str, Any]) -> dict[str, Any]:
    """Run one job in this process; returns its details (the parent measures memory)."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    if job == "baseline":
        return {}
    device = p["device"]
    out: dict[str, Any] = {}
    if job == "import":
        from portllm_edge.models.gguf import import_gguf

        folder = import_gguf(p["gguf"], name=f"imp-{p['size']}", force=True)
        out["shards"] = len(list(folder.glob("*.safetensors")))
    elif job in ("port", "repeat_port", "port_nocache"):
        from peft import PeftModel

        from portllm_edge.porting.load import load_base_model

        loaded = load_base_model(p["base"], "nf4", device=device, quantized_cache=job != "port_nocache")
        out["load_seconds"] = loaded.load_seconds
        out["cache_hit"] = loaded.quantization.get("cache", {}).get("hit")
        out["unquantized_dtype"] = loaded.unquantized_dtype
        model = PeftModel.from_pretrained(loaded.model, p["adapter"])
        # one evaluation batch, logits for every position (with logits_to_keep=1 a bf16 CPU head
        # copied its whole tied weight: +260 MiB at 0.5B, +758 MiB at 3B, even with a contiguous input)
        with torch.no_grad():
            model(_tokens(p["batch"], p["seq"]).to(model.device))
    elif job == "merge":
        from portllm_edge.porting.merge import stream_merge

        stream_merge(Path(p["adapter"]), Path(p["base"]), Path(p["merged"]), dtype="bf16", overwrite=True)
    elif job in ("finetune", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        from portllm_edge.measure.bench import default_finetune_dtype
        from portllm_edge.porting.load import load_base_model

        precision = "nf4" if job == "qlora" else default_finetune_dtype(device)
        out["precision"] = precision
        loaded = load_base_model(p["base"], precision, device=device, quantized_cache=False)
        model = loaded.model
        if job == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, LoraConfig(r=R, lora_alpha=2 * R, target_modules=list(TARGETS)))
        model.train()
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        ids = _tokens(p["batch"], p["seq"]).to(model.device)
        for _ in range(p["steps"]):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    cuda = _cuda_peak(device)
    if cuda is not None:
        out["cuda_max_reserved_bytes"] = cuda
    return out


def child_main(job: str, params: str) -> None:
    p = json.loads(params)
    start = time.perf_counter()
    details = run_job(job, p)
    details["seconds"] = time.perf_counter() - start
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                details["vmhwm_bytes"] = int(line.split()[1]) * 1024
    print("SCALE_RESULT " + json.dumps(details), flush=True)


# ----------------------------------------------------------------------------- parent side


def measure(job: str, params: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``job`` in a child process; sample its memory with the product's one rule.

    :class:`portllm_edge.measure.memory.PeakSampler` on the child and its descendants:
    headline = RssAnon + resident pages of mapped weight files (every 5 ms / 200 ms).
    """
    from portllm_edge.measure.memory import PeakSampler

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", job, json.dumps(params)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter()
    with PeakSampler(proc.pid, interval_s=0.02) as sampled:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
    wall = time.perf_counter() - wall
    memory = {
        "peak_bytes_rule": sampled.peak,
        "anon_peak_bytes": sampled.anon_peak,
        "mapped_weight_bytes_at_peak": sampled.mapped_at_peak,
        "wall_seconds": wall,
    }
    for line in stdout.splitlines():
        if line.startswith("SCALE_RESULT "):
            return {**json.loads(line[len("SCALE_RESULT ") :]), **memory}
    return {"error": (stderr or stdout).strip().splitlines()[-3:], **memory}


def floors_and_estimates(
    shape: synthetic.Shape,
    config: dict[str, Any],
    args: argparse.Namespace,
    baseline: int,
    *,
    quantized_copy: bool = False,
) -> dict[str, Any]:
    """Per job: (floor bytes, planner estimate bytes or None, the estimate's runtime terms).

    ``quantized_copy``: the store holds the base's NF4 copy, so the port jobs' estimate has no
    quantizing transient (the load will read that copy).
    """
    from portllm_edge.planning import ModelArch, estimate_inference_peak, estimate_lora_finetune_peak
    from portllm_edge.planning.estimate import Precision, inference_activation_bytes, lora_param_count
    from portllm_edge.planning.pick import port_peak_bytes
    from portllm_edge.planning.plan import ModelSpec

    arch = ModelArch.from_config(config, shape.label)
    kind = "cpu" if args.device == "cpu" else "cuda"
    nf4 = estimate_inference_peak(
        arch,
        "nf4",
        args.seq,
        args.batch,
        device=kind,  # type: ignore[arg-type]
        quantized_copy=quantized_copy,
        logits_positions=args.seq,  # the port's forward keeps every position's logits
    )
    unq_stored = arch.unquantized_params * 2  # bf16 checkpoint, kept at its stored dtype
    weights_nf4 = nf4.term("weights") + nf4.term("quant_constants") + unq_stored
    acts = inference_activation_bytes(arch, Precision.NF4, args.seq, args.batch, kind) + nf4.term("kv_cache")  # type: ignore[arg-type]
    n_lora = lora_param_count(arch, R, TARGETS)
    largest_fp32 = max(arch.vocab_size * arch.hidden_size, arch.max_linear().numel) * 4
    ft = estimate_lora_finetune_peak(arch, "bf16", R, TARGETS, args.seq, args.batch, device=kind)  # type: ignore[arg-type]
    ql = estimate_lora_finetune_peak(arch, "nf4", R, TARGETS, args.seq, args.batch, device=kind)  # type: ignore[arg-type]
    spec = ModelSpec(shape.label, "config", arch.model_type, arch)
    port_est = port_peak_bytes(spec, nf4, r=R, target_modules=TARGETS)  # the measured job's patch
    runtime = nf4.term("runtime") + nf4.term("libraries")
    rt_train = ft.term("runtime") + ft.term("libraries")
    return {
        "import": (baseline + 4 * largest_fp32, None, 0),
        "port": (baseline + weights_nf4 + n_lora * 4 + acts, port_est, runtime),
        "repeat_port": (baseline + weights_nf4 + n_lora * 4 + acts, port_est, runtime),
        "port_nocache": (baseline + weights_nf4 + n_lora * 4 + acts, port_est, runtime),
        "merge": (baseline + 4 * largest_fp32, None, 0),
        "finetune": (
            baseline + arch.total_params * 2 + n_lora * 16 + ft.term("activations"),
            ft.total_bytes,
            rt_train,
        ),
        "qlora": (
            baseline
            + ql.term("weights")
            + ql.term("quant_constants")
            + arch.unquantized_params * 4
            + n_lora * 16
            + ql.term("activations"),
            ql.total_bytes,
            rt_train,
        ),
    }


def run_size(size: str, args: argparse.Namespace, env: dict[str, str], baseline: int) -> list[dict[str, Any]]:
    work = Path(args.work) / size
    t0 = time.perf_counter()
    jobs = jobs_for(size, args)
    if size in REAL:
        shape, base, gguf = real_inputs(size)
    else:
        shape = synthetic.SHAPES[size]
        base = work / "base"
        if not (base / "config.json").is_file():
            synthetic.write_base(shape, base)
        gguf = work / f"{size}.Q8_0.gguf"
        if "import" in jobs and not gguf.is_file():
            synthetic.write_gguf(shape, base, gguf)
    config = json.loads((base / "config.json").read_text())
    adapter = synthetic_adapter(shape, work)
    print(f"[{size}] inputs ready in {time.perf_counter() - t0:.0f} s", flush=True)
    if not args.keep_cache:  # the first port quantizes; repeat_port then loads the quantized copy
        shutil.rmtree(Path(env["PORTLLM_EDGE_HOME"]) / "models" / ".quantized", ignore_errors=True)
    from portllm_edge.models.refs import resolve_base
    from portllm_edge.porting.load import has_quantized_copy

    resolved = resolve_base(str(base))
    common = {
        "size": size,
        "device": args.device,
        "base": str(base),
        "adapter": str(adapter),
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
    }
    rows = []
    for job in jobs:
        params = {**common, "gguf": str(gguf), "merged": str(work / "merged")}
        # the planner asks the load's own question: is there a quantized copy for this base?
        cached = job != "port_nocache" and has_quantized_copy(resolved, "nf4", args.device)
        floor, est, runtime = floors_and_estimates(shape, config, args, baseline, quantized_copy=cached)[job]
        res = measure(job, params, env, args.timeout)
        peak = res.get("cuda_max_reserved_bytes") or res["peak_bytes_rule"]
        row = {
            "size": size,
            "label": shape.label,
            "params": shape.params(),
            "job": job,
            "metric": "cuda_max_reserved" if "cuda_max_reserved_bytes" in res else HEADLINE_METRIC,
            "peak_bytes": peak,
            "floor_bytes": floor,
            "estimate_bytes": est,
            "est_over_meas_job": None if est is None else (est - runtime) / max(peak - baseline, 1),
            "estimate_assumes_quantized_copy": cached if job in PORT_JOBS else None,
            "seconds": res.get("seconds"),
            **{k: v for k, v in res.items() if k not in ("seconds",)},
        }
        rows.append(row)
        print(_row_text(row), flush=True)
        shutil.rmtree(work / "merged", ignore_errors=True)  # disk: a 7B output is 14.5 GB
        shutil.rmtree(Path(env["PORTLLM_EDGE_HOME"]) / "models" / f"imp-{size}", ignore_errors=True)
    return rows


def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF: ``$PORTLLM_EDGE_SMOLLM2_GGUF`` or ``make smollm2``'s copy."""
    env = os.environ.get("PORTLLM_EDGE_SMOLLM2_GGUF")
    return Path(env) if env else REPO / ".cache" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def real_inputs(size: str) -> tuple[synthetic.Shape, Path, Path]:
    """A real model's size row: its shape (from its config), its base folder and its GGUF.

    ``135m``: SmolLM2-135M-Instruct, imported from its Q4_1 GGUF (bf16 shards) into the
    benchmark's model store once; the ``import`` job imports that GGUF again.
    """
    from portllm_edge.models.gguf import import_gguf

    gguf = smollm2_gguf()
    if not gguf.is_file():
        raise SystemExit(f"{gguf}: no SmolLM2 GGUF; run `make smollm2` or set PORTLLM_EDGE_SMOLLM2_GGUF")
    base = import_gguf(gguf, name=f"scale-base-{size}", reuse=True)
    cfg = json.loads((base / "config.json").read_text())
    shape = synthetic.Shape(
        size,
        REAL[size],
        str(cfg["model_type"]),
        int(cfg["hidden_size"]),
        int(cfg["num_hidden_layers"]),
        int(cfg["num_attention_heads"]),
        int(cfg["num_key_value_heads"]),
        int(cfg["intermediate_size"]),
        int(cfg["vocab_size"]),
        bool(cfg.get("tie_word_embeddings")),
    )
    return shape, base, gguf


def reestimate(path: Path, args: argparse.Namespace) -> None:
    """Recompute a saved run's planner estimates with the planner as it is now; measured peaks and floors stay.

    Each row keeps what the run printed as ``estimate_bytes_at_run`` / ``est_over_meas_job_at_run``.
    Synthetic sizes take their config from :data:`synthetic.SHAPES`; ``135m`` imports its GGUF
    into ``--work``'s store (:func:`real_inputs`).
    """
    data = json.loads(path.read_text())
    run = argparse.Namespace(**{**vars(args), **{k: data["args"][k] for k in ("seq", "batch", "device")}})
    for row in data["rows"]:
        if "error" in row or row.get("estimate_bytes") is None:
            continue
        size = row["size"]
        if size in REAL:
            shape, base, _ = real_inputs(size)
            config = json.loads((base / "config.json").read_text())
        else:
            shape = synthetic.SHAPES[size]
            config = shape.config()
        cached = bool(row.get("estimate_assumes_quantized_copy"))
        _, est, runtime = floors_and_estimates(
            shape, config, run, data["baseline_bytes"], quantized_copy=cached
        )[row["job"]]
        row.setdefault("estimate_bytes_at_run", row["estimate_bytes"])
        row.setdefault("est_over_meas_job_at_run", row["est_over_meas_job"])
        row["estimate_bytes"] = est
        row["est_over_meas_job"] = (est - runtime) / max(row["peak_bytes"] - data["baseline_bytes"], 1)
        print(_row_text(row))
    data["reestimated_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    path.write_text(json.dumps(data, indent=1))


def jobs_for(size: str, args: argparse.Namespace) -> list[str]:
    """The jobs run at ``size``: ``--jobs``, or the list ``--jobs-for SIZE=JOBS`` gives that size."""
    for entry in args.jobs_for or ():
        key, _, jobs = entry.partition("=")
        if key == size:
            return jobs.split(",")
    return str(args.jobs).split(",")


def synthetic_adapter(shape: synthetic.Shape, work: Path) -> Path:
    adapter = work / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        _adapter(shape, adapter)
    return adapter


def _row_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['label']} | {r['job']} | error: {' '.join(r['error'])[:200]} |"
    est = "n/a" if r["est_over_meas_job"] is None else f"{r['est_over_meas_job']:.2f}"
    sec = "n/a" if r.get("seconds") is None else f"{r['seconds']:.0f}"
    return (
        f"| {r['label']} ({r['params'] / 1e9:.2f}B) | {r['job']} | {r['peak_bytes'] / MiB:.0f} MiB | "
        f"{r.get('anon_peak_bytes', 0) / MiB:.0f} MiB | {r.get('mapped_weight_bytes_at_peak', 0) / MiB:.0f} MiB | "
        f"{r['floor_bytes'] / MiB:.0f} MiB | {r['peak_bytes'] / r['floor_bytes']:.2f} | {est} | {sec} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("JOB", "PARAMS"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--sizes", default="0.5b,1.1b", help="comma list of " + ",".join([*REAL, *synthetic.SHAPES])
    )
    ap.add_argument("--jobs", default="import,port,repeat_port,merge,finetune,qlora")
    ap.add_argument(
        "--jobs-for",
        action="append",
        metavar="SIZE=JOBS",
        help="other jobs for one size, e.g. 7b=import,port,repeat_port,merge (repeatable)",
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--work", default="/tmp/portllm-scale")
    ap.add_argument("--out", default=None, help="JSON output (default WORK/scale.json)")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--keep", action="store_true", help="keep the synthetic bases")
    ap.add_argument(
        "--keep-cache",
        action="store_true",
        help="keep quantized copies from an earlier run (repeat_port only)",
    )
    ap.add_argument(
        "--reestimate",
        metavar="JSON",
        help="recompute the planner's estimates of a saved run (peaks and floors unchanged) and rewrite it",
    )
    args = ap.parse_args(argv)
    if args.reestimate:
        os.environ.setdefault("PORTLLM_EDGE_HOME", str(Path(args.work) / "home"))
        reestimate(Path(args.reestimate), args)
        return 0
    if args.child:
        child_main(*args.child)
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PORTLLM_EDGE_HOME": str(work / "home"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    os.environ["PORTLLM_EDGE_HOME"] = env["PORTLLM_EDGE_HOME"]  # the parent asks the children's store
    base_run = measure("baseline", {}, env, 300)
    baseline = base_run["peak_bytes_rule"]
    print(
        f"runtime baseline (torch+transformers+peft+bitsandbytes imported): {baseline / MiB:.0f} MiB"
        f" (rule: {HEADLINE_METRIC})"
    )
    print(
        f"device {args.device}; eval/train batch {args.batch} × {args.seq} tokens; {args.steps} AdamW steps; LoRA r={R} on q,v"
    )
    print(
        "| shape | job | peak (anon + mapped weights) | anon part's own peak | mapped weights at peak "
        "| floor (import/merge: bound) | peak ÷ floor | est ÷ meas (job) | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rows: list[dict[str, Any]] = []
    for size in args.sizes.split(","):
        rows += run_size(size, args, env, baseline)
        if not args.keep:
            shutil.rmtree(work / size, ignore_errors=True)
            shutil.rmtree(work / "home" / "models" / f"scale-base-{size}", ignore_errors=True)
    by = {(r["size"], r["job"]): r for r in rows if "error" not in r}
    for size in args.sizes.split(","):
        ft, port, rep = by.get((size, "finetune")), by.get((size, "port")), by.get((size, "repeat_port"))
        if ft and port:
            print(f"[{size}] fine-tune ÷ port (peak, one rule): {ft['peak_bytes'] / port['peak_bytes']:.2f}")
        if port and rep:
            print(
                f"[{size}] port {port['seconds']:.0f} s first, {rep['seconds']:.0f} s repeat (quantized copy)"
            )
    out = Path(args.out) if args.out else work / "scale.json"
    out.write_text(json.dumps({"baseline_bytes": baseline, "args": vars(args), "rows": rows}, indent=1))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
