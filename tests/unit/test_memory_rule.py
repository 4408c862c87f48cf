"""The one memory rule (portllm_edge.measure.memory): RssAnon + resident pages of mapped weight files."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from portllm_edge.measure.memory import PeakSampler, read_anon, read_mapped_weights, read_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
MiB = 2**20


def test_mapped_weight_pages_count_and_pread_pages_do_not(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(16 * MiB // 2, dtype=torch.bfloat16)}, str(path))  # 16 MiB of weights
    before = read_mapped_weights()
    assert before is not None
    with safe_open(str(path), framework="pt", device="cpu") as fh:  # mmap: the tensor lives in file pages
        t = fh.get_tensor("w")
        assert float(t.float().sum()) == 8 * MiB  # touch every page
        during = read_mapped_weights()
        assert during is not None and during - before >= 15 * MiB
        del t
    with safe_open(str(path), framework="pt", device="cpu", backend="pread") as fh:
        t = fh.get_tensor("w")
        assert float(t.float().sum()) == 8 * MiB
        mapped = read_mapped_weights()
        assert mapped is not None and mapped - before < 2 * MiB  # read into anonymous memory instead


def test_sampler_headline_adds_mapped_weights_to_the_anonymous_peak(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(16 * MiB // 2, dtype=torch.bfloat16)}, str(path))
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        with PeakSampler(mapped_interval_s=0.01) as s:
            t = fh.get_tensor("w")
            t.float().sum()
            ballast = torch.ones(32 * MiB // 4)  # 32 MiB anonymous
            import time

            time.sleep(0.1)
            del ballast
        assert s.mapped_at_peak >= 15 * MiB
        assert s.anon_peak >= 32 * MiB
        assert s.peak >= s.anon_peak + 15 * MiB - 2 * MiB  # both terms at the same moment
        del t
    reading = read_memory()
    assert reading is not None and reading.anon_bytes == pytest.approx(read_anon(), rel=0.05)
