"""Planner calibration: estimated / measured peak memory, side by side, one isolated process per case.

On CPU: peak RSS (``ru_maxrss``) of a fresh interpreter running one job, minus the
peak RSS of an interpreter that only imported torch (the estimate's ``runtime``
term). Cases: tiny random models (built with tests/factories.py) and SmolLM2-135M
(a Hugging Face folder: ``--smollm2 DIR``, default ``/tmp/smol/hf``), for
inference (generation) and LoRA fine-tuning (two AdamW steps, with and without
gradient checkpointing).

Usage::

    python benchmarks/planner_accuracy.py [--smollm2 DIR] [--quick]

Prints one row per case: estimate (model part), measured, ratio estimated/measured.
SmolLM2 bf16 cases load a bf16 copy (made once in a temp folder): loading the fp32
checkpoint at bf16 on CPU would measure the mmapped fp32 file pages, not the job.
Library imports (transformers/peft) are often hidden under the baseline's own
transient import peak, so a ratio without that term is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1024**2


def _child(spec: dict) -> None:
    import resource

    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    if spec["kind"] == "baseline":
        pass
    elif spec["kind"] == "convert":
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(spec["path"], dtype=torch.bfloat16).save_pretrained(spec["out"])
    else:
        from transformers import AutoModelForCausalLM

        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[spec["precision"]]
        model = AutoModelForCausalLM.from_pretrained(spec["path"], dtype=dtype)
        vocab = model.config.vocab_size
        ids = torch.randint(10, vocab - 1, (spec["batch"], spec["seq"]))
        if spec["kind"] == "inference":
            model.eval()
            with torch.no_grad():
                model.generate(ids[:, : spec["seq"] - 8], max_new_tokens=8, min_new_tokens=8, do_sample=False)
        else:
            from peft import LoraConfig, get_peft_model

            if spec["gc"]:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()
            model = get_peft_model(
                model,
                LoraConfig(
                    r=spec["r"], lora_alpha=2 * spec["r"], target_modules=spec["targets"], lora_dropout=0.0
                ),
            )
            model.train()
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            for _ in range(2):
                out = model(input_ids=ids, labels=ids, use_cache=False)
                out.loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                del out
    print(json.dumps({"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _run(spec: dict) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{out.stderr[-3000:]}")
    return int(json.loads(out.stdout.strip().splitlines()[-1])["maxrss"])


def _estimate(spec: dict) -> int:
    from portllm_edge.planning import estimate_inference_peak, estimate_lora_finetune_peak

    cfg = json.loads((Path(spec["path"]) / "config.json").read_text())
    if spec["kind"] == "inference":
        b = estimate_inference_peak(cfg, spec["precision"], spec["seq"], spec["batch"], device="cpu")
    else:
        b = estimate_lora_finetune_peak(
            cfg,
            spec["precision"],
            spec["r"],
            spec["targets"],
            spec["seq"],
            spec["batch"],
            spec["gc"],
            device="cpu",
        )
    return b.without("runtime"), b.term("libraries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--smollm2", default="/tmp/smol/hf", help="SmolLM2-135M Hugging Face folder (safetensors)."
    )
    ap.add_argument("--quick", action="store_true", help="Fewer cases.")
    args = ap.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    sys.path.insert(0, str(REPO / "tests"))
    import factories

    cases: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = factories.build_pair("llama", Path(tmp))
        qv = ["q_proj", "v_proj"]
        cases += [
            {
                "name": "tiny-llama inference fp32 s=256",
                "path": str(tiny.old),
                "kind": "inference",
                "precision": "fp32",
                "seq": 256,
                "batch": 1,
            },
            {
                "name": "tiny-llama LoRA fp32 s=256",
                "path": str(tiny.old),
                "kind": "lora",
                "precision": "fp32",
                "seq": 256,
                "batch": 1,
                "r": 4,
                "targets": qv,
                "gc": False,
            },
        ]
        smol = Path(args.smollm2)
        if (smol / "config.json").is_file():
            smol16 = Path(tmp) / "smollm2-bf16"
            _run({"kind": "convert", "path": str(smol), "out": str(smol16)})
            cases += [
                {
                    "name": "SmolLM2-135M inference fp32 s=512",
                    "path": str(smol),
                    "kind": "inference",
                    "precision": "fp32",
                    "seq": 512,
                    "batch": 1,
                },
                {
                    "name": "SmolLM2-135M inference bf16 s=512",
                    "path": str(smol16),
                    "kind": "inference",
                    "precision": "bf16",
                    "seq": 512,
                    "batch": 1,
                },
                {
                    "name": "SmolLM2-135M LoRA bf16 s=256",
                    "path": str(smol16),
                    "kind": "lora",
                    "precision": "bf16",
                    "seq": 256,
                    "batch": 1,
                    "r": 16,
                    "targets": qv,
                    "gc": False,
                },
                {
                    "name": "SmolLM2-135M LoRA bf16 s=256 GC",
                    "path": str(smol16),
                    "kind": "lora",
                    "precision": "bf16",
                    "seq": 256,
                    "batch": 1,
                    "r": 16,
                    "targets": qv,
                    "gc": True,
                },
            ]
            if not args.quick:
                cases += [
                    {
                        "name": "SmolLM2-135M LoRA fp32 s=256",
                        "path": str(smol),
                        "kind": "lora",
                        "precision": "fp32",
                        "seq": 256,
                        "batch": 1,
                        "r": 16,
                        "targets": qv,
                        "gc": False,
                    },
                ]
        else:
            print(f"SmolLM2 folder not found at {smol}; only tiny cases", file=sys.stderr)
        baseline = _run({"kind": "baseline"})
        print(f"baseline (python + torch) peak RSS: {baseline / MiB:.1f} MiB")
        print("est = estimate without the runtime term; est-lib = also without the library-import term")
        print(
            f"{'case':40s} {'est MiB':>9s} {'est-lib':>9s} {'meas MiB':>9s} {'est/meas':>8s} {'(-lib)':>7s}"
        )
        for spec in cases:
            measured = _run(spec) - baseline
            est, libs = _estimate(spec)
            print(
                f"{spec['name']:40s} {est / MiB:9.1f} {(est - libs) / MiB:9.1f} {measured / MiB:9.1f} "
                f"{est / measured:8.2f} {(est - libs) / measured:7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
