"""Benchmark: the main job at benchmark size on real input; prints the accuracy table and the memory ratio.

SmolLM2-135M-Instruct v1 (GGUF) -> v2 by continued pretraining on ../shared/data/gutenberg,
an SST-2 patch trained on v1, ported onto v2 in NF4, compared with v2 zero-shot and v2's own
LoRA; peak memory of porting vs LoRA fine-tuning, each in its own subprocess. v2, the patches and
results are cached in the portllm-edge data folder (reused by later runs).

Usage:
    .venv/bin/python benchmarks/port_vs_finetune.py [--gguf FILE] [--shared ../shared] [--steps 90] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--steps", type=int, default=90, help="continued-pretraining steps for v2")
    ap.add_argument("--train-limit", type=int, default=512)
    ap.add_argument("--eval-limit", type=int, default=400)
    ap.add_argument("--lora-steps", type=int, default=64)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()

    from portllm_edge.models.gguf import import_gguf
    from portllm_edge.workflow import ExperimentSettings, ExperimentTask, experiment

    data = args.shared / "data"
    if not (data / "sst2" / "train.tsv").is_file():
        print(f"SST-2 not found under {data}; pass --shared", file=sys.stderr)
        return 2
    settings = ExperimentSettings(
        update_steps=args.steps,
        update_seq_len=256,
        update_batch=4,
        update_lr=5e-5,
        lora_steps=args.lora_steps,
        lora_lr=5e-4,
        batch_size=8,
        max_length=96,
        train_limit=args.train_limit,
        eval_limit=args.eval_limit,
        precision="nf4",
        measure_steps=4,
    )
    v1 = import_gguf(args.gguf, reuse=True)
    task = ExperimentTask(
        task="sst2",
        train_data=data / "sst2" / "train.tsv",
        eval_data=data / "sst2" / "dev.tsv",
        title="SST-2 (GLUE dev)",
        patch_name="sst2-smollm2",
    )
    res = experiment(
        v1,
        sorted((data / "gutenberg").glob("*.txt")),
        task,
        settings=settings,
        v2_name="SmolLM2-135M-Instruct-gutenberg-v2",
        say=lambda s: print(s, flush=True),
        fresh=args.fresh,
    )
    from portllm_edge.cli.demo_cmds import print_experiment

    print()
    print_experiment(res)
    print(json.dumps({"ratio": res.bench.ratio, "recovered_gain": res.compare.recovered_gain()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
