"""portllm_edge.models: base-model references, the local model store, GGUF import and weight fingerprints.

A *base reference* is what a user types after ``--base``: a local Hugging Face
folder, a name in the local model store, a model id in the local Hugging Face
cache, a GGUF file, or (only with an explicit online flag) a hub id.
"""

from __future__ import annotations

from portllm_edge.models.fingerprint import fingerprint_weights
from portllm_edge.models.refs import ResolvedBase, resolve_base

__all__ = ["ResolvedBase", "fingerprint_weights", "resolve_base"]
