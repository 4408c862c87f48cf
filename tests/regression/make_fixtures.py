"""Regenerate the stored regression fixtures (run by hand, then commit; never by the test suite).

    .venv/bin/python tests/regression/make_fixtures.py

Builds the session's tiny Llama pair from its fixed seeds (tests/factories.py), a
small LoRA patch (r=2, rsLoRA, ``rank_pattern``, ``alpha_pattern``, a LoRA on
``embed_tokens``) on the old base, and stores the patch plus the logits peft gives
on the new base (attach in fp32, ``merge_and_unload``) for a fixed input. The
replay test (test_regression_fixtures.py) checks that our port and our streaming
merge still produce those logits.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

FIXTURE = HERE / "llama_r2_patch"
INPUT_IDS = [[17, 88, 101, 4, 259, 140]]
LORA = {
    "r": 2,
    "lora_alpha": 4,
    "use_rslora": True,
    "target_modules": ["embed_tokens", "q_proj", "v_proj", "o_proj"],
    "rank_pattern": {"o_proj": 1},
    "alpha_pattern": {r"model\.layers\.1\.self_attn\.q_proj": 6},
}


def main() -> None:
    import factories
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        pair = factories.build_pair("llama", Path(tmp))
        torch.manual_seed(1234)
        old = AutoModelForCausalLM.from_pretrained(pair.old, dtype=torch.float32)
        pm = get_peft_model(old, LoraConfig(lora_dropout=0.0, init_lora_weights=False, **LORA))
        shutil.rmtree(FIXTURE, ignore_errors=True)
        pm.save_pretrained(FIXTURE)
        cfg = json.loads((FIXTURE / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = "tiny-llama-old"  # the session builds it; the folder is temporary
        (FIXTURE / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (FIXTURE / "README.md").unlink(missing_ok=True)
        # peft also saves the *old* base's embedding next to a LoRA on it (save_embedding_layers);
        # the port is W_new + ΔW and drops it, so the stored patch holds only the LoRA factors.
        weights = FIXTURE / "adapter_model.safetensors"
        kept = {k: v for k, v in load_file(weights).items() if ".base_layer." not in k}
        save_file(kept, str(weights), metadata={"format": "pt"})
        new = AutoModelForCausalLM.from_pretrained(pair.new, dtype=torch.float32).eval()
        merged = PeftModel.from_pretrained(new, str(FIXTURE)).merge_and_unload().eval()
        with torch.no_grad():
            logits = merged(torch.tensor(INPUT_IDS)).logits.float().contiguous()
        save_file(
            {"logits": logits, "input_ids": torch.tensor(INPUT_IDS)},
            str(HERE / "llama_r2_expected.safetensors"),
        )
    print(f"wrote {FIXTURE} and {HERE / 'llama_r2_expected.safetensors'}")


if __name__ == "__main__":
    main()
