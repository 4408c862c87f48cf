"""Peak RSS of the streaming merge on a real model, as a fraction of the model's fp32 size.

Usage::

    .venv/bin/python benchmarks/merge_memory.py [--base /tmp/smol/hf] [--dtype fp32] [--verify] [--old OLD]

A random, non-zero LoRA patch (r=8 on q/k/v/o_proj, lora_alpha=16) is written for the
base from its safetensors headers alone. The merge then runs in a fresh subprocess
(``python -c``), which reports its own peak RSS (``ru_maxrss``); the ratio
``peak RSS / fp32 model size`` must stay below 0.5 (issue 3). The whole process is
counted, interpreter and numpy included. With ``--verify`` the merged model's
logits are compared with the unmerged peft port (fp32, relative max error); with
``--old`` the drift table is printed too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 0.5

CHILD = """
import json, resource, sys, time
from pathlib import Path
from portllm_edge.porting.merge import stream_merge
t = time.perf_counter()
res = stream_merge(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), dtype=sys.argv[4])
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "seconds": time.perf_counter() - t, "merged_modules": res.merged_modules,
                  "bytes_written": res.bytes_written}))
"""


def write_patch(base: Path, out: Path, r: int = 8, alpha: int = 16) -> Path:
    """A random LoRA adapter for ``base`` built from header shapes only (numpy, seeded)."""
    import numpy as np
    from safetensors.numpy import save_file

    from portllm_edge.porting.adapter_io import read_base_index

    index = read_base_index(base)
    rng = np.random.default_rng(0)
    tensors = {}
    for name, bt in index.tensors.items():
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")):
            out_f, in_f = bt.info.shape
            mod = name[: -len(".weight")]
            tensors[f"base_model.model.{mod}.lora_A.weight"] = (
                rng.standard_normal((r, in_f)) / math.sqrt(in_f)
            ).astype(np.float32)
            tensors[f"base_model.model.{mod}.lora_B.weight"] = (
                rng.standard_normal((out_f, r)) * 0.01
            ).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "base_model_name_or_path": str(base),
        "inference_mode": True,
    }
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out


def fp32_size(base: Path) -> int:
    from portllm_edge.porting.adapter_io import read_base_index

    return sum(bt.info.numel * 4 for bt in read_base_index(base).tensors.values())


def verify(adapter: Path, base: Path, merged: Path) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.randint(10, 1000, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        lm = m(ids).logits
        del m
        b = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        la = PeftModel.from_pretrained(b, adapter).eval()(ids).logits
    return float((lm - la).abs().max() / la.abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--base", type=Path, default=Path(os.environ.get("PORTLLM_EDGE_SMOLLM2_HF", "/tmp/smol/hf"))
    )
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument(
        "--verify", action="store_true", help="compare merged vs unmerged logits (loads the model twice)"
    )
    ap.add_argument("--old", type=Path, default=None, help="old base: also print the drift table")
    args = ap.parse_args()
    if not (args.base / "config.json").is_file():
        print(f"base model folder not found: {args.base} (set --base)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp:
        adapter = write_patch(args.base, Path(tmp) / "patch")
        merged = Path(tmp) / "merged"
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(adapter), str(args.base), str(merged), args.dtype],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        size = fp32_size(args.base)
        ratio = stats["peak_rss_bytes"] / size
        print(f"base                 {args.base}")
        print(f"model fp32 size      {size / 2**20:8.1f} MiB")
        print(
            f"merge ({args.dtype})         {stats['merged_modules']} modules, {stats['bytes_written'] / 2**20:.1f} MiB "
            f"written in {stats['seconds']:.1f} s (wall incl. start {time.perf_counter() - t:.1f} s)"
        )
        print(f"peak RSS (process)   {stats['peak_rss_bytes'] / 2**20:8.1f} MiB")
        print(f"peak RSS / fp32 size {ratio:8.3f}   (limit {LIMIT})  {'OK' if ratio < LIMIT else 'OVER'}")
        if args.verify:
            print(
                f"merged vs unmerged   {verify(adapter, args.base, merged):.2e} max relative logit error (fp32 tolerance 1e-4)"
            )
        if args.old is not None:
            from portllm_edge.cli.check_cmds import format_drift
            from portllm_edge.porting.drift import compute_drift

            print(format_drift(compute_drift(adapter, args.old, args.base)))
        return 0 if ratio < LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
