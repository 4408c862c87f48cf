"""Facts read from a Hugging Face ``config.json`` dict without importing transformers.

Why this module exists: the planner (sizes), the preflight, the vocabulary port
and the merge all need to know whether a base ties ``lm_head`` to the input
embedding, and the preflight and the drift table which model types two configs name. When ``config.json`` omits ``tie_word_embeddings``, transformers uses
the default of the model's config class, which differs by family (False for
Llama, Mistral, Qwen2; True for Gemma, GPT-2). This is the one place that rule
lives. It must not import transformers or torch (``check`` must start fast); a
test checks :data:`TIED_BY_DEFAULT` against transformers' config classes.
"""

from __future__ import annotations

from typing import Any

TIED_BY_DEFAULT: dict[str, bool] = {
    "llama": False,
    "mistral": False,
    "mixtral": False,
    "qwen2": False,
    "qwen3": False,
    "phi": False,
    "phi3": False,
    "olmo2": False,
    "granite": False,
    "gemma": True,
    "gemma2": True,
    "gemma3_text": True,
    "gpt2": True,
    "smollm3": True,
    "starcoder2": True,
    "cohere": True,
}
"""``model_type`` -> the ``tie_word_embeddings`` default of its transformers config class."""

UNKNOWN_TYPE_DEFAULT = True
"""Default for a model type missing from :data:`TIED_BY_DEFAULT`: the historical
``PretrainedConfig`` default (transformers 4.x), which most custom configs inherit."""


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config: ``text_config`` of a multimodal config, else ``config`` itself."""
    tc = config.get("text_config")
    return tc if isinstance(tc, dict) else config


def model_types(config: dict[str, Any]) -> set[str]:
    """The ``model_type`` values a ``config.json`` names: its own and its ``text_config``'s (empty: none)."""
    out = {str(config.get("model_type") or "")}
    text = text_config(config)
    if text is not config and text.get("model_type"):
        out.add(str(text["model_type"]))
    out.discard("")
    return out


def same_model_family(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two ``config.json`` dicts share a model type (:func:`model_types`): two versions of one model."""
    return bool(model_types(old) & model_types(new))


def ties_word_embeddings(config: dict[str, Any]) -> bool:
    """Whether transformers ties ``lm_head`` to the input embedding for this ``config.json``.

    Order: ``tie_word_embeddings`` at the top level, then in ``text_config``, then the
    default of the (text) model type's config class (:data:`TIED_BY_DEFAULT`).

    Args:
        config: ``config.json`` as a dict.
    """
    if "tie_word_embeddings" in config and config["tie_word_embeddings"] is not None:
        return bool(config["tie_word_embeddings"])
    text = text_config(config)
    if text is not config and text.get("tie_word_embeddings") is not None:
        return bool(text["tie_word_embeddings"])
    for cfg in (text, config):
        model_type = cfg.get("model_type")
        if isinstance(model_type, str) and model_type in TIED_BY_DEFAULT:
            return TIED_BY_DEFAULT[model_type]
    return UNKNOWN_TYPE_DEFAULT


__all__ = ["TIED_BY_DEFAULT", "model_types", "same_model_family", "text_config", "ties_word_embeddings"]
