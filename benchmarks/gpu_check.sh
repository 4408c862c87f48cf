#!/usr/bin/env bash
# The GPU check: run the gpu-marked tests, then benchmarks/scale.py on CUDA up to 7B shapes, one table.
# Sized to finish within 8 minutes on one H200: tests ~1 min, then import/port/repeat port/merge at
# 0.5B/1.1B/7B and fine-tune/QLoRA at 0.5B/1.1B (writing the synthetic 7B base takes ~2 min, ~15 GB disk).
# Without a CUDA device it exits 3 with a message, before doing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch (torch.cuda.is_available() is False); nothing was run." >&2
    exit 3
fi
OUT="${OUT:-/tmp/portllm-gpu-check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
"$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/gpu-tests.log" | tail -15
"$PY" benchmarks/scale.py --device cuda --sizes 0.5b,1.1b --batch 4 --seq 256 --steps 4 \
    --work "$OUT/work" --out "$OUT/scale-small.json" | tee "$OUT/scale-small.md"
"$PY" benchmarks/scale.py --device cuda --sizes 7b --jobs import,port,repeat_port,merge --batch 4 --seq 256 \
    --work "$OUT/work" --out "$OUT/scale-7b.json" | grep '^|' | tail -n +3 | tee "$OUT/scale-7b.md"
echo "JSON and logs in $OUT"
