"""Our scorer next to lm-evaluation-harness on the same files: accuracy, acc_norm, mismatches.

Usage (heavy: run under the shared lock)::

    flock /tmp/portllm-heavy.lock .venv/bin/python benchmarks/harness_parity.py \\
        [--model FOLDER | --gguf .cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] \\
        [--tasks sst2,rte,mrpc,winogrande,boolq,wnli] [--limit N] [--shared ../shared]

For each task, the harness's ``HFLM`` runs its own built-in task definition pointed at
our local file (tests/harness_tasks.py) and our ``evaluate`` runs our built-in task on
the same first N rows, both fp32 on CPU. Printed per task: rows, acc and acc_norm of
each side, the number of rows whose acc prediction or acc_norm verdict differs, and the
largest log-likelihood difference in nats.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="an HF model folder")
    ap.add_argument("--gguf", type=Path, default=REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tasks", default="sst2,rte,mrpc,winogrande,boolq,wnli")
    ap.add_argument("--limit", type=int, default=None, help="first N rows (default: all)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tmp = tempfile.mkdtemp(prefix="harness-parity-")
    os.environ.setdefault("HF_DATASETS_CACHE", str(Path(tmp) / "datasets"))
    import harness_tasks

    model_dir = args.model
    if model_dir is None:
        from portllm_edge import paths
        from portllm_edge.models.gguf import import_gguf

        paths.set_home(Path(tmp) / "home")
        model_dir = import_gguf(args.gguf, reuse=True)
    data = args.shared / "data"
    print(f"model {model_dir}")
    print(
        "| task | rows | acc ours | acc harness | acc_norm ours | acc_norm harness | pred diffs | norm diffs | max |Δll| |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        limit = args.limit or 10**9
        ours = harness_tasks.run_ours(model_dir, task, data, limit=limit)
        theirs = harness_tasks.run_harness(model_dir, task, data, limit=limit)
        pred = sum(a != b for a, b in zip(ours.pred, theirs.pred, strict=True))
        norm = sum(a != b for a, b in zip(ours.correct_norm, theirs.correct_norm, strict=True))
        dll = max(
            abs(x - y) for a, b in zip(ours.lls, theirs.lls, strict=True) for x, y in zip(a, b, strict=True)
        )
        print(
            f"| {task} | {len(ours.lls)} | {ours.acc:.4f} | {theirs.acc:.4f} | {ours.acc_norm:.4f} | "
            f"{theirs.acc_norm:.4f} | {pred} | {norm} | {dll:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
