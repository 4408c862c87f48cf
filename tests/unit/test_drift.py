"""Drift diagnostics: exact Frobenius ratios, projected drift, streaming, CLI table."""

from __future__ import annotations

import pytest

from portllm_edge.porting.drift import compute_drift, lora_delta_norm


def test_lora_delta_norm_equals_the_explicit_product():
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 64)).astype(np.float32), rng.normal(size=(32, 4)).astype(np.float32)
    explicit = float(np.linalg.norm(2.0 * (b.astype(np.float64) @ a.astype(np.float64))))
    assert lora_delta_norm(a, b, 2.0) == pytest.approx(explicit, rel=1e-10)


def test_compute_drift_matches_torch_on_the_llama_pair(tiny_pairs, tiny_adapters):
    import torch
    from safetensors.torch import load_file

    pair = tiny_pairs["llama"]
    rep = compute_drift(tiny_adapters["llama"], pair.old, pair.new)
    assert [m.module for m in rep.modules] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    old, new = load_file(pair.old / "model.safetensors"), load_file(pair.new / "model.safetensors")
    lora = load_file(tiny_adapters["llama"] / "adapter_model.safetensors")
    m = rep.modules[1]
    w_old, w_new = old[m.module + ".weight"].double(), new[m.module + ".weight"].double()
    delta = (
        2.0
        * lora[f"base_model.model.{m.module}.lora_B.weight"].double()
        @ lora[f"base_model.model.{m.module}.lora_A.weight"].double()
    )
    assert m.base_drift == pytest.approx(float((w_new - w_old).norm() / w_old.norm()), rel=1e-6)
    assert m.patch_size == pytest.approx(float(delta.norm() / w_old.norm()), rel=1e-5)
    assert m.shape == (32, 64)
    assert 0.008 < rep.median_base_drift < 0.012  # the factory's ~1 % continued-pretraining noise
    assert torch.isfinite(torch.tensor(rep.median_ratio))


def test_compute_drift_is_large_for_a_retrained_base(tmp_path, tiny_pairs, tiny_adapters):
    import factories

    retrained = tmp_path / "retrained"
    factories.build_model("llama", retrained, version="new", seed=123)  # fresh random weights, same shapes
    rep = compute_drift(tiny_adapters["llama"], tiny_pairs["llama"].old, retrained)
    assert rep.median_base_drift > 1.0  # independent random matrices: ≈ √2 apart
    assert all(1.3 < m.base_drift < 1.5 for m in rep.modules)


def test_compute_drift_streams_row_blocks(tiny_pairs, tiny_adapters, monkeypatch):
    from portllm_edge.porting import merge

    monkeypatch.setattr(merge, "CHUNK_BYTES", 64 * 4 * 3)  # 3 rows of 64 fp32 per block
    calls = []
    real = merge.RowReader.rows_f32

    def spy(self, name, start, stop):
        calls.append((name, stop - start))
        return real(self, name, start, stop)

    monkeypatch.setattr(merge.RowReader, "rows_f32", spy)
    pair = tiny_pairs["llama"]
    streamed = compute_drift(tiny_adapters["llama"], pair.old, pair.new)
    base_blocks = [n for name, n in calls if not name.startswith("base_model.")]
    assert base_blocks and max(base_blocks) == 3  # never a whole 64-row weight at once
    monkeypatch.setattr(merge, "CHUNK_BYTES", 8 * 1024 * 1024)
    monkeypatch.setattr(merge.RowReader, "rows_f32", real)
    whole = compute_drift(tiny_adapters["llama"], pair.old, pair.new)
    assert [m.base_drift for m in streamed.modules] == pytest.approx(
        [m.base_drift for m in whole.modules], rel=1e-9
    )


def test_cli_check_with_old_prints_the_drift_table(tiny_pairs, tiny_adapters, capsys):
    from portllm_edge.cli import main

    pair = tiny_pairs["qwen2"]
    code = main(["check", str(tiny_adapters["qwen2"]), "--base", str(pair.new), "--old", str(pair.old)])
    out = capsys.readouterr().out
    assert code == 0
    assert "PASS  architecture" in out and "result: compatible" in out
    assert "model.layers.1.self_attn.v_proj  32x64" in out
    assert "projected/patch" in out and "median" in out and "portability" not in out


def test_cli_drift_json(tiny_pairs, tiny_adapters, capsys):
    import json

    from portllm_edge.cli import main

    pair = tiny_pairs["gemma2"]
    code = main(
        ["drift", str(tiny_adapters["gemma2"]), "--base", str(pair.new), "--old", str(pair.old), "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and len(data["modules"]) == 4 and "indicator" not in data and "thresholds" not in data
    assert data["median_projected_ratio"] == pytest.approx(
        sorted(m["projected_ratio"] for m in data["modules"])[1:3][0] / 2
        + sorted(m["projected_ratio"] for m in data["modules"])[1:3][1] / 2
    )


def test_drift_refuses_an_old_base_of_another_architecture(tiny_pairs, tiny_adapters):
    from portllm_edge.errors import CompatibilityError
    from portllm_edge.porting.drift import compute_drift

    with pytest.raises(CompatibilityError) as err:
        compute_drift(tiny_adapters["llama"], tiny_pairs["qwen2"].old, tiny_pairs["llama"].new)
    assert "model_type 'qwen2'" in err.value.message and "--old" in (err.value.hint or "")


def test_projected_drift_is_the_drift_inside_the_patch_row_and_column_spaces(tiny_pairs, tiny_adapters):
    import torch
    from safetensors.torch import load_file

    pair = tiny_pairs["llama"]
    rep = compute_drift(tiny_adapters["llama"], pair.old, pair.new)
    old, new = load_file(pair.old / "model.safetensors"), load_file(pair.new / "model.safetensors")
    lora = load_file(tiny_adapters["llama"] / "adapter_model.safetensors")
    for m in rep.modules:
        a = lora[f"base_model.model.{m.module}.lora_A.weight"].double()  # [r, in]
        b = lora[f"base_model.model.{m.module}.lora_B.weight"].double()  # [out, r]
        w_old, w_new = old[m.module + ".weight"].double(), new[m.module + ".weight"].double()
        u_b, _, _ = torch.linalg.svd(b, full_matrices=False)  # orthonormal basis of B's columns
        _, _, v_a = torch.linalg.svd(a, full_matrices=False)  # orthonormal basis of A's rows
        expected = float((u_b.T @ (w_new - w_old) @ v_a.T).norm() / w_old.norm())
        assert m.projected_drift == pytest.approx(expected, rel=1e-6)
        # an r-dimensional corner of the update: smaller than the whole drift, and not zero
        assert 0 < m.projected_drift < m.base_drift
    assert rep.median_projected_ratio == pytest.approx(
        sorted(m.projected_drift / m.patch_size for m in rep.modules)[1:3][0] / 2
        + sorted(m.projected_drift / m.patch_size for m in rep.modules)[1:3][1] / 2
    )
