"""benchmarks/gpu_check.sh without a GPU: it says so and exits 3 before doing any work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
def test_gpu_check_exits_with_a_clear_message_without_cuda(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3
    assert "no CUDA device visible to torch" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing was run
