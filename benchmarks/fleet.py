"""Benchmark: port a fleet of N SmolLM2 patches in one pass vs N separate ``port`` runs; prints the time ratio.

Set-up (not timed): SmolLM2-135M-Instruct (GGUF) is v1; v2 is v1 plus seeded Gaussian noise of
``--drift`` x each weight matrix's standard deviation (the shape of a continued-pretraining
update, as in tests/factories.py); N LoRA patches are trained on v1 for a few steps on SST-2
(``portllm-edge train``, different seeds and ranks), so each patch's record names its task and data.

Timed, each as the user runs it (a fresh ``portllm-edge`` process, wall clock):

* one pass: ``portllm-edge port --all --from v1 --base v2`` (v2 loaded once, patches swapped);
* separate: ``portllm-edge port P --base v2 --eval-task sst2 --eval-data TRAIN --eval-limit K`` for
  each patch (each loads v2 again, in its measurement worker).

Both do the same per-patch work: preflight, attach check, a quick evaluation of K examples, save.
Everything lives in a fresh portllm-edge home (``--home`` to keep and reuse it).

Usage (CPU-heavy: run under the shared lock):
    flock /tmp/portllm-heavy.lock .venv/bin/python benchmarks/fleet.py [--n 8] [--precision nf4] [--eval-limit 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def make_v2(v1: Path, out: Path, drift: float, seed: int = 1) -> Path:
    """v1 + N(0, (drift * std(W))^2) on every floating matrix, saved as a model folder at ``out``."""
    import torch
    from safetensors.torch import load_file, save_file

    if (out / "model.safetensors").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = load_file(str(v1 / "model.safetensors"))
    for key, t in tensors.items():
        if t.dim() >= 2 and t.is_floating_point():
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32) * float(t.float().std()) * drift
            tensors[key] = (t.float() + noise).to(t.dtype)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in v1.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "portllm_model.json":
            shutil.copy2(f, out / f.name)
    return out


def cli(*args: str, env: dict[str, str]) -> float:
    """Run ``portllm-edge ARGS`` in a fresh process; return its wall time in seconds (exit on failure)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "portllm_edge", *args], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): portllm-edge {' '.join(args)}\n{proc.stderr[-2000:]}")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("PORTLLM_EDGE_SHARED", REPO.parent / "shared"))
    )
    ap.add_argument(
        "--home", type=Path, default=None, help="portllm-edge home to use and keep (default: a temp one)"
    )
    ap.add_argument("--n", type=int, default=8, help="patches in the fleet")
    ap.add_argument("--precision", default="nf4", help="load precision of v2, both ways")
    ap.add_argument("--eval-limit", type=int, default=16, help="examples in each patch's quick evaluation")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--drift", type=float, default=0.01, help="v2 noise, relative to each matrix's std")
    args = ap.parse_args()

    train = args.shared / "data" / "sst2" / "train.tsv"
    if not args.gguf.is_file() or not train.is_file():
        print(f"needs {args.gguf} (`make smollm2`) and {train} (pass --shared)", file=sys.stderr)
        return 2
    home = args.home or Path(tempfile.mkdtemp(prefix="portllm-fleet-bench-"))
    env = {**os.environ, "PORTLLM_EDGE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    os.environ["PORTLLM_EDGE_HOME"] = str(home)

    from portllm_edge.models.gguf import import_gguf
    from portllm_edge.patches import PatchStore

    print(f"home {home}", flush=True)
    v1 = import_gguf(args.gguf, reuse=True)
    v2 = make_v2(v1, home / "bases" / f"{v1.name}-noise-v2", args.drift)
    names = [f"sst2-{i}" for i in range(args.n)]
    have = set(PatchStore().names())
    t = time.perf_counter()
    for i, name in enumerate(names):
        if name not in have:
            cli(
                "train", "--base", v1.name, "--task", "sst2", "--data", str(train), "--name", name,
                "--max-steps", str(args.train_steps), "--batch-size", "4", "--max-length", "64",
                "--limit", "64", "--seed", str(i), "--r", str(4 + 4 * (i % 2)), env=env,
            )  # fmt: skip
    for stale in [n for n in PatchStore().names() if "@" in n]:  # a kept home: port again, from scratch
        PatchStore().remove(stale)
    print(f"set-up: {args.n} patches trained on {v1.name} in {time.perf_counter() - t:.0f} s", flush=True)

    fleet_s = cli(
        "port", "--all", "--from", v1.name, "--base", str(v2), "--precision", args.precision,
        "--eval-limit", str(args.eval_limit), "--overwrite", env=env,
    )  # fmt: skip
    from portllm_edge.history import list_runs

    fleet = list_runs("fleet", limit=1)[0].results
    if fleet["counts"]["ported"] != args.n:
        sys.exit(f"the fleet did not port all {args.n} patches: {json.dumps(fleet['counts'])}")
    separate = []
    for name in names:
        argv = ["port", name, "--base", str(v2), "--precision", args.precision, "--name", f"{name}-sep@v2"]
        argv += ["--eval-task", "sst2", "--eval-data", str(train), "--eval-limit", str(args.eval_limit)]
        separate.append(cli(*argv, "--overwrite", env=env))
    total = sum(separate)
    print()
    print(f"{'patch':<10} {'result':<8} {'acc after':>9} {'fleet s':>8} {'separate s':>11}")
    for item, sep in zip(fleet["items"], separate, strict=True):
        acc = "-" if item["accuracy_after"] is None else f"{item['accuracy_after']:.3f}"
        print(f"{item['patch']:<10} {item['result']:<8} {acc:>9} {item['seconds']:>8.1f} {sep:>11.1f}")
    print(
        f"one pass: {fleet_s:.1f} s wall ({v2.name} loaded once at {fleet['precision']} in "
        f"{fleet['load_seconds']:.1f} s); {args.n} separate `port` runs: {total:.1f} s wall"
    )
    print(f"ratio one-pass / separate = {fleet_s / total:.3f}  ({total / fleet_s:.2f}x faster)")
    if args.home is None:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
