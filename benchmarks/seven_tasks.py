"""The PortLLM table on all seven tasks for SmolLM2-135M v1 -> v2, plus bench and a report.

For each task a LoRA patch is trained on v1 (a CPU-sized sample of the task's training file; BoolQ,
which ships only its validation split, is split into disjoint train/eval halves in the cache folder),
then ``compare`` produces the four rows on a seeded ``--limit`` sample of the evaluation file.
Finally ``bench`` measures LoRA fine-tuning vs porting on SST-2 and ``report`` writes Markdown,
JSON and PNG charts from these runs.

v2 is the continued-pretraining update made by benchmarks/port_vs_finetune.py (run that first, or
pass --v2). Slow on CPU: about 20-40 minutes on 2 cores with the default limits.

Usage:
    .venv/bin/python benchmarks/seven_tasks.py [--shared ../shared] [--limit 64] [--out report-dir]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]

# task -> (train file, eval file, train max_length, eval limit factor)
TASKS = {
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv", 96),
    "boolq": ("boolq/val.jsonl", "boolq/val.jsonl", 320),
    "mrpc": ("mrpc/train.tsv", "mrpc/dev.tsv", 160),
    "rte": ("rte/train.tsv", "rte/dev.tsv", 256),
    "wnli": ("wnli/train.tsv", "wnli/dev.tsv", 160),
    "winogrande": ("winogrande/train.jsonl", "winogrande/dev.jsonl", 96),
    "gsm8k": ("gsm8k/train.jsonl", "gsm8k/test.jsonl", 320),
}


def split_boolq(src: Path, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Disjoint halves of BoolQ's validation file (it has no training split here)."""
    rows = src.read_text(encoding="utf-8").splitlines()
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    half = len(rows) // 2
    out.mkdir(parents=True, exist_ok=True)
    train, held = out / "boolq-train-half.jsonl", out / "boolq-eval-half.jsonl"
    train.write_text("\n".join(rows[i] for i in sorted(order[:half])) + "\n", encoding="utf-8")
    held.write_text("\n".join(rows[i] for i in sorted(order[half:])) + "\n", encoding="utf-8")
    return train, held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--v1", default="SmolLM2-135M-Instruct")
    ap.add_argument("--v2", default="SmolLM2-135M-Instruct-gutenberg-v2")
    ap.add_argument("--limit", type=int, default=64, help="evaluation examples per task (GSM8K: a quarter)")
    ap.add_argument("--train-limit", type=int, default=256)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", type=Path, default=Path("seven-tasks-report"))
    args = ap.parse_args()

    from portllm_edge import paths
    from portllm_edge.patches import PatchStore
    from portllm_edge.training.lora import LoraHyperparams
    from portllm_edge.workflow import EvalSpec, TrainSpec, bench, compare, train

    data = args.shared / "data"
    run_ids: list[str] = []
    summary: dict[str, dict[str, float]] = {}
    store = PatchStore()
    for task in args.tasks.split(","):
        train_rel, eval_rel, max_len = TASKS[task]
        train_file, eval_file = data / train_rel, data / eval_rel
        if task == "boolq":
            train_file, eval_file = split_boolq(train_file, paths.cache_dir() / "boolq-split")
        name = f"{task}-smollm2-v1"
        t0 = time.perf_counter()
        if name not in store.names():
            print(f"[{task}] training the v1 patch ({args.steps} steps)", flush=True)
            hp = LoraHyperparams(
                r=8,
                lora_alpha=16,
                max_steps=args.steps,
                learning_rate=5e-4,
                batch_size=8,
                max_length=max_len,
                lora_dropout=0.0,
            )
            train(TrainSpec(args.v1, task, train_file, name, hp=hp, limit=args.train_limit))
        limit = max(8, args.limit // 4) if task == "gsm8k" else args.limit
        print(f"[{task}] compare on {limit} examples", flush=True)
        res = compare(
            name,
            old=args.v1,
            new=args.v2,
            spec=EvalSpec(task, eval_file, limit=limit, batch_size=8),
            precision="nf4",
            on_row=lambda r: print(f"    {r}", flush=True),
        )
        run_ids.append(res.run_id or "")
        summary[task] = {r.config: r.accuracy for r in res.rows}
        print(
            f"[{task}] "
            + ", ".join(f"{k}: {v:.3f}" for k, v in summary[task].items())
            + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    print("[bench] SST-2: LoRA fine-tune (bf16 on CUDA, fp32 on CPU) vs port (nf4)", flush=True)
    measured = bench(
        "sst2-smollm2-v1",
        args.v2,
        task="sst2",
        train_data=data / "sst2" / "train.tsv",
        eval_data=data / "sst2" / "dev.tsv",
        precision="nf4",
        seq_len=96,
        batch_size=8,
        steps=4,
        repeats=2,
    )
    run_ids.append(measured.run_id or "")
    print(f"[bench] ratio {measured.ratio:.2f}x ({measured.ratio_metric})", flush=True)
    from portllm_edge.cli import main as cli_main

    code = cli_main(
        ["report", *[r for r in run_ids if r], "--out", str(args.out), "--budget-model", "SmolLM2-135M"]
    )
    print(json.dumps({"summary": summary, "bench_ratio": measured.ratio, "report": str(args.out)}, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
