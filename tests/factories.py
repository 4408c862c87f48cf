"""Builders for tiny random models of real families, saved on disk as old/new version pairs.

Used by session fixtures (tests/conftest.py) and by benchmarks. Each pair keeps the
real family's structure at toy size: grouped-query attention, tied embeddings where
the family ties them, Gemma2's logit soft-capping, Qwen2's attention biases, and a
version change shaped like the real one:

* ``llama``: a rope-scaling change, like Llama 3 -> 3.1 (same shapes).
* ``mistral``: vocabulary growth, like Mistral 7B v0.2 -> v0.3 (32000 -> 32768 rows).
* ``gemma2``: same shapes, tied embeddings, soft-capping.
* ``qwen2``: same shapes, like Qwen2 -> Qwen2.5.

The "new" version's weights are the old ones plus small seeded noise (about 1 %
relative Frobenius), which is what a continued-pretraining update looks like.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("llama", "mistral", "gemma2", "qwen2")

HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
EXTRA_TOKENS_V2 = [
    "[INST2]",
    "[/INST2]",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[CONTROL_8]",
]


@dataclass(frozen=True)
class TinyPair:
    """Paths of a tiny old/new base pair of one family."""

    family: str
    old: Path
    new: Path


def build_tokenizer(out: Path, extra_tokens: list[str] | None = None):
    """Save a byte-level BPE tokenizer with no merges (one token per byte) to ``out``.

    Vocabulary: ``<unk>``, ``<s>``, ``</s>``, ``<pad>``, the 256 byte symbols, then
    ``extra_tokens`` (appended, so shared tokens keep their ids, as in Mistral v0.3).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials + byte_symbols + list(extra_tokens or []))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


def _config(family: str, vocab_size: int, version: str):
    from transformers import AutoConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    if family == "llama":
        cfg = AutoConfig.for_model("llama", tie_word_embeddings=False, **common)
        if version == "new":  # Llama 3 -> 3.1: llama3 rope scaling
            cfg.rope_parameters = {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 128,
            }
        else:
            cfg.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
        return cfg
    if family == "mistral":
        return AutoConfig.for_model("mistral", tie_word_embeddings=False, sliding_window=None, **common)
    if family == "gemma2":
        return AutoConfig.for_model(
            "gemma2",
            tie_word_embeddings=True,
            head_dim=HIDDEN // HEADS,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
            sliding_window=64,
            query_pre_attn_scalar=HIDDEN // HEADS,
            **common,
        )
    if family == "qwen2":
        return AutoConfig.for_model("qwen2", tie_word_embeddings=False, **common)
    if family == "gpt2":  # Conv1D layers (fan_in_fan_out); not in FAMILIES, used by the peft oracle tests
        return AutoConfig.for_model(
            "gpt2",
            vocab_size=vocab_size,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=256,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        )
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


def build_model(family: str, out: Path, *, version: str = "old", seed: int = 0, base_state=None):
    """Build and save a tiny random model of ``family`` (with its tokenizer) to ``out``.

    Args:
        family: one of :data:`FAMILIES`.
        out: destination folder (``config.json``, ``model.safetensors``, tokenizer files).
        version: ``"old"`` or ``"new"``; "new" applies the family's version change.
        seed: RNG seed for initialization.
        base_state: the old model's state dict; when given, "new" weights are
            ``old + 0.01 * noise * std(old)`` (rows added by vocabulary growth are random).

    Returns:
        The model (fp32, eval mode).
    """
    import torch
    from transformers import AutoModelForCausalLM

    extra = EXTRA_TOKENS_V2 if (family == "mistral" and version == "new") else []
    tok = build_tokenizer(out, extra)
    cfg = _config(family, len(tok), version)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if base_state is not None:
        gen = torch.Generator().manual_seed(seed + 1000)
        with torch.no_grad():
            for name, p in model.named_parameters():
                old = base_state[name]
                rows = min(old.shape[0], p.shape[0])
                noise = torch.randn(old.shape, generator=gen) * (old.float().std() + 1e-8) * 0.01
                p[:rows].copy_((old + noise)[:rows])
    model.eval()
    model.save_pretrained(out)
    return model


def build_pair(family: str, root: Path) -> TinyPair:
    """Build the old/new pair of ``family`` under ``root/family-{old,new}``."""
    old_dir, new_dir = root / f"{family}-old", root / f"{family}-new"
    old = build_model(family, old_dir, version="old", seed=0)
    build_model(family, new_dir, version="new", seed=1, base_state=old.state_dict())
    return TinyPair(family, old_dir, new_dir)


def build_lora_adapter(
    base_dir: Path,
    out: Path,
    *,
    r: int = 4,
    lora_alpha: int = 8,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    seed: int = 0,
    modules_to_save: list[str] | None = None,
) -> Path:
    """Save a peft LoRA adapter for ``base_dir`` with random, non-zero A and B.

    peft initializes B to zero (a no-op patch); here both factors are random
    (``init_lora_weights=False``) so that attaching the patch changes the output,
    as a trained patch does. Returns ``out``.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        modules_to_save=modules_to_save,
    )
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out)
    cfg_path = out / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(data, indent=2))
    return out


def link_model(folder: Path, models_dir: Path) -> Path:
    """Put a model store folder into another model store by hard links (no bytes copied); returns the new folder.

    Store writes replace files (temp then rename), so the linked copies never change the source.
    """
    dest = models_dir / folder.name
    if not dest.exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, dest, copy_function=os.link)
    return dest
